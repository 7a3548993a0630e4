/**
 * `nlft generate`: text from the model (with an optional PEFT adapter) for a prompt — raw, or as a
 * chat user turn — greedy by default or sampled at --temperature with --seed; it ends at the
 * end-of-sequence token, --max-new tokens or the context length. Ctrl-C ends it early.
 */
import { writeFile } from 'node:fs/promises';
import { promptInput } from '../../data/prompt.ts';
import { adapterName } from '../../engine/gpu.ts';
import { generate } from '../../engine/generate.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { UsageError } from '../../errors.ts';
import { createTunedEngine } from '../engine.ts';
import { isPositiveInt, numberOption, parse, quantOption, required } from './args.ts';
import { adapterOption, loadModelWithTokenizer } from './inputs.ts';

export async function generateCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    model: { type: 'string' }, adapter: { type: 'string' }, quant: { type: 'string' }, chat: { type: 'boolean' }, system: { type: 'string' }, prompt: { type: 'string' },
    'max-new': { type: 'string' }, temperature: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' },
  });
  const spec = required(values, 'model');
  const prompt = required(values, 'prompt');
  const quant = quantOption(values.quant);
  const maxNew = numberOption(values, 'max-new', 256, isPositiveInt, 'a positive integer');
  const temperature = numberOption(values, 'temperature', 0, (v) => v >= 0, 'a number >= 0 (0 = greedy)');
  const seed = numberOption(values, 'seed', 0, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
  const { model, tok } = await loadModelWithTokenizer(spec, 'generation', out);
  const peft = await adapterOption(values, model.config);
  const { promptText, promptIds } = promptInput(tok, prompt, { chat: values.chat === true, system: typeof values.system === 'string' ? values.system : undefined });
  if (promptIds.length === 0) throw new UsageError('--prompt is empty: generation needs at least one prompt token');
  const { engine } = await createTunedEngine(model.config, quant);
  const ctl = new AbortController();
  const onSigint = () => ctl.abort();
  process.once('SIGINT', onSigint);
  try {
    const llama = GpuLlama.create(engine.ops, model.weights, quant, peft?.lora);
    const t0 = performance.now();
    const r = await generate(llama, promptIds, { maxNewTokens: maxNew, temperature, seed, stopIds: tok.eosTokenIds, signal: ctl.signal });
    const seconds = (performance.now() - t0) / 1000;
    const body = r.reason === 'stop' ? r.ids.slice(0, -1) : r.ids;
    const text = tok.decode(body);
    const why = { stop: 'the end-of-sequence token', length: `--max-new ${maxNew}`, context: "the model's context length", cancelled: 'Ctrl-C' }[r.reason];
    const summary = `${r.ids.length} tokens in ${seconds.toFixed(2)} s (${(r.ids.length / seconds).toFixed(1)} tokens/s, prefill included), ended by ${why} (${quant}${peft ? ', LoRA adapter' : ''}, ${temperature === 0 ? 'greedy' : `temperature ${temperature}, seed ${seed}`}, ${adapterName(engine.ctx.adapter)})`;
    if (typeof values.out === 'string') {
      await writeFile(values.out, `${JSON.stringify({ prompt_text: promptText, prompt_ids: promptIds, ids: r.ids, text, reason: r.reason, seconds }, null, 2)}\n`);
      out(`wrote ${values.out}: ${summary}`);
    } else {
      out(text);
      out(`-- ${summary}`);
    }
  } finally {
    process.off('SIGINT', onSigint);
    engine.destroy();
  }
}
