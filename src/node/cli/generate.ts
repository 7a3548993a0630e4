/**
 * `nlft generate`: text from the model (with an optional PEFT adapter) for a prompt — raw, or as a
 * chat user turn — greedy by default or sampled at --temperature with --seed; it ends at the
 * end-of-sequence token, --max-new tokens or the context length. Ctrl-C ends it early.
 */
import { writeFile } from 'node:fs/promises';
import { promptInput } from '../../data/prompt.ts';
import { adapterName } from '../../engine/gpu.ts';
import { generate } from '../../engine/generate.ts';
import { UsageError } from '../../errors.ts';
import { parse, required } from './args.ts';
import { describeGeneration, GENERATION_FLAGS, generationOptions, withGenerationModel } from './generation.ts';

export async function generateCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    ...GENERATION_FLAGS,
    chat: { type: 'boolean' },
    system: { type: 'string' },
    prompt: { type: 'string' },
    out: { type: 'string' },
  });
  const spec = required(values, 'model');
  const prompt = required(values, 'prompt');
  const g = generationOptions(values, { maxNew: 256, temperature: 0 });
  let input = { promptText: '', promptIds: [] as number[] };
  await withGenerationModel(
    spec,
    'generation',
    values,
    g.quant,
    out,
    async ({ llama, tok, peft, engine, signal }) => {
      const t0 = performance.now();
      const r = await generate(llama, input.promptIds, {
        maxNewTokens: g.maxNew,
        temperature: g.temperature,
        seed: g.seed,
        stopIds: tok.eosTokenIds,
        signal,
      });
      const seconds = (performance.now() - t0) / 1000;
      const text = tok.decode(r.reason === 'stop' ? r.ids.slice(0, -1) : r.ids);
      const why = {
        stop: 'the end-of-sequence token',
        length: `--max-new ${g.maxNew}`,
        context: "the model's context length",
        cancelled: 'Ctrl-C',
      }[r.reason];
      const summary =
        `${r.ids.length} tokens in ${seconds.toFixed(2)} s (${(r.ids.length / seconds).toFixed(1)} tokens/s, prefill ` +
        `included), ended by ${why} (${describeGeneration(g, peft !== null)}, ${adapterName(engine.ctx.adapter)})`;
      if (typeof values.out === 'string') {
        await writeFile(
          values.out,
          `${JSON.stringify({ prompt_text: input.promptText, prompt_ids: input.promptIds, ids: r.ids, text, reason: r.reason, seconds }, null, 2)}\n`,
        );
        out(`wrote ${values.out}: ${summary}`);
      } else {
        out(text);
        out(`-- ${summary}`);
      }
    },
    (tok) => {
      input = promptInput(tok, prompt, {
        chat: values.chat === true,
        system: typeof values.system === 'string' ? values.system : undefined,
      });
      if (input.promptIds.length === 0) throw new UsageError('--prompt is empty: generation needs at least one prompt token');
    },
  );
}
