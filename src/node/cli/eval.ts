/**
 * `nlft eval`: accuracy of the model (with an optional PEFT adapter) on `{question, answer}` or
 * NLFT records — each question answered from the base prompt, its final number compared with the
 * standard answer's (docs/method.md §7) — printed with the counts; per-item results with --out.
 */
import { writeFile } from 'node:fs/promises';
import { adapterName } from '../../engine/gpu.ts';
import { evaluate, summarize } from '../../eval/accuracy.ts';
import { parse, required } from './args.ts';
import { describeGeneration, GENERATION_FLAGS, generationOptions, withGenerationModel } from './generation.ts';
import { limitOption, readDatasetFile } from './inputs.ts';

export async function evalCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, { ...GENERATION_FLAGS, data: { type: 'string' }, limit: { type: 'string' }, out: { type: 'string' } });
  const spec = required(values, 'model');
  const dataFile = required(values, 'data');
  const limit = limitOption(values);
  const g = generationOptions(values, { maxNew: 512, temperature: 0 });
  const records = (await readDatasetFile(dataFile, false)).slice(0, limit);
  await withGenerationModel(spec, 'evaluation', values, g.quant, out, async ({ llama, tok, peft, engine, signal }) => {
    const items = await evaluate(
      llama,
      tok,
      records,
      { maxNewTokens: g.maxNew, temperature: g.temperature, seed: g.seed, signal },
      (it, done) => {
        out(
          `item ${String(done).padStart(4)}/${records.length}  ${it.correct ? 'right' : 'wrong'}  ` +
            `expected ${it.expected ?? '-'}, got ${it.got ?? '-'}  (${it.tokens} tokens, ${it.ended})`,
        );
      },
    );
    const s = summarize(items);
    const setting = `${describeGeneration(g, peft !== null)}, max-new ${g.maxNew}, ${adapterName(engine.ctx.adapter)}`;
    const stopped = items.length < records.length ? ` (stopped after ${items.length} of ${records.length})` : '';
    const noNumber = s.withoutExpected ? `; ${s.withoutExpected} answers have no final number` : '';
    const line = `accuracy ${s.correct}/${s.total} = ${(100 * s.accuracy).toFixed(2)}%${stopped}${noNumber} (${setting})`;
    if (typeof values.out === 'string') {
      await writeFile(
        values.out,
        `${JSON.stringify(
          {
            model: spec,
            adapter: values.adapter ?? null,
            data: dataFile,
            quant: g.quant,
            temperature: g.temperature,
            seed: g.seed,
            maxNewTokens: g.maxNew,
            summary: s,
            items,
          },
          null,
          1,
        )}\n`,
      );
      out(`wrote ${values.out}`);
    }
    out(line);
  });
}
