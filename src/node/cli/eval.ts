/**
 * `nlft eval`: accuracy of the model (with an optional PEFT adapter) on `{question, answer}` or
 * NLFT records — each question answered from the base prompt, its final number compared with the
 * standard answer's (nlft.md §7) — printed with the counts; per-item results with --out.
 */
import { writeFile } from 'node:fs/promises';
import { adapterName } from '../../engine/gpu.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { evaluate, summarize } from '../../eval/accuracy.ts';
import { createTunedEngine } from '../engine.ts';
import { isPositiveInt, numberOption, parse, quantOption, required } from './args.ts';
import { adapterOption, loadModelWithTokenizer, readDatasetFile } from './inputs.ts';

export async function evalCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    model: { type: 'string' }, adapter: { type: 'string' }, data: { type: 'string' }, quant: { type: 'string' }, limit: { type: 'string' },
    'max-new': { type: 'string' }, temperature: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' },
  });
  const spec = required(values, 'model');
  const dataFile = required(values, 'data');
  const quant = quantOption(values.quant);
  const limit = values.limit === undefined ? Infinity : numberOption(values, 'limit', 1, isPositiveInt, 'a positive integer');
  const maxNew = numberOption(values, 'max-new', 512, isPositiveInt, 'a positive integer');
  const temperature = numberOption(values, 'temperature', 0, (v) => v >= 0, 'a number >= 0 (0 = greedy)');
  const seed = numberOption(values, 'seed', 0, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
  const { model, tok } = await loadModelWithTokenizer(spec, 'evaluation', out);
  const peft = await adapterOption(values, model.config);
  const records = (await readDatasetFile(dataFile, false)).slice(0, limit);
  const { engine } = await createTunedEngine(model.config, quant);
  const ctl = new AbortController();
  const onSigint = () => ctl.abort();
  process.once('SIGINT', onSigint);
  try {
    const llama = GpuLlama.create(engine.ops, model.weights, quant, peft?.lora);
    const items = await evaluate(llama, tok, records, { maxNewTokens: maxNew, temperature, seed, signal: ctl.signal }, (it, done) => {
      out(`item ${String(done).padStart(4)}/${records.length}  ${it.correct ? 'right' : 'wrong'}  expected ${it.expected ?? '-'}, got ${it.got ?? '-'}  (${it.tokens} tokens, ${it.ended})`);
    });
    const s = summarize(items);
    const setting = `${quant}${peft ? `, adapter ${String(values.adapter)}` : ''}, ${temperature === 0 ? 'greedy' : `temperature ${temperature}, seed ${seed}`}, max-new ${maxNew}, ${adapterName(engine.ctx.adapter)}`;
    const line = `accuracy ${s.correct}/${s.total} = ${(100 * s.accuracy).toFixed(2)}%${items.length < records.length ? ` (stopped after ${items.length} of ${records.length})` : ''}${s.withoutExpected ? `; ${s.withoutExpected} answers have no final number` : ''} (${setting})`;
    if (typeof values.out === 'string') {
      await writeFile(values.out, `${JSON.stringify({ model: spec, adapter: values.adapter ?? null, data: dataFile, quant, temperature, seed, maxNewTokens: maxNew, summary: s, items }, null, 1)}\n`);
      out(`wrote ${values.out}`);
    }
    out(line);
  } finally {
    process.off('SIGINT', onSigint);
    engine.destroy();
  }
}
