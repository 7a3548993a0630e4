/**
 * `nlft prepare`: turn `{question, answer}` records into NLFT records (nlft.md §6): the model's
 * own answers (sampled at --temperature, 0.6 by default), graded by final number, a judgment for
 * each wrong one — from a judge model at an OpenAI-compatible endpoint (--judge-url, --judge-model,
 * key in $JUDGE_API_KEY) or, without one, a template judgment from the grade. Ctrl-C stops and
 * writes the records done so far.
 */
import { writeFile } from 'node:fs/promises';
import { extractFinalNumber } from '../../data/dataset.ts';
import { chatJudge, TEMPLATE_JUDGE } from '../../data/judge.ts';
import { DEFAULT_PREPARE, prepareRecords } from '../../data/prepare.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { UsageError } from '../../errors.ts';
import { createTunedEngine } from '../engine.ts';
import { isPositiveInt, numberOption, parse, quantOption, required } from './args.ts';
import { adapterOption, loadModelWithTokenizer, readDatasetFile } from './inputs.ts';

export async function prepareCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    model: { type: 'string' }, adapter: { type: 'string' }, data: { type: 'string' }, out: { type: 'string' }, quant: { type: 'string' }, limit: { type: 'string' },
    'max-new': { type: 'string' }, temperature: { type: 'string' }, seed: { type: 'string' }, 'judge-url': { type: 'string' }, 'judge-model': { type: 'string' },
  });
  const spec = required(values, 'model');
  const dataFile = required(values, 'data');
  const outFile = required(values, 'out');
  const quant = quantOption(values.quant);
  const limit = values.limit === undefined ? Infinity : numberOption(values, 'limit', 1, isPositiveInt, 'a positive integer');
  const maxNew = numberOption(values, 'max-new', DEFAULT_PREPARE.maxNewTokens, isPositiveInt, 'a positive integer');
  const temperature = numberOption(values, 'temperature', DEFAULT_PREPARE.temperature, (v) => v >= 0, 'a number >= 0 (0 = greedy)');
  const seed = numberOption(values, 'seed', DEFAULT_PREPARE.seed, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer');
  const url = values['judge-url'];
  const judgeModel = values['judge-model'];
  if ((typeof url === 'string') !== (typeof judgeModel === 'string')) throw new UsageError('--judge-url and --judge-model go together (an OpenAI-compatible endpoint and its model name)');
  const judge = typeof url === 'string' && typeof judgeModel === 'string' ? chatJudge({ url, model: judgeModel, apiKey: process.env.JUDGE_API_KEY || undefined }) : TEMPLATE_JUDGE;
  const { model, tok } = await loadModelWithTokenizer(spec, 'preparation', out);
  const peft = await adapterOption(values, model.config);
  const records = (await readDatasetFile(dataFile, false)).slice(0, limit);
  const { engine } = await createTunedEngine(model.config, quant);
  const ctl = new AbortController();
  const onSigint = () => ctl.abort();
  process.once('SIGINT', onSigint);
  try {
    const llama = GpuLlama.create(engine.ops, model.weights, quant, peft?.lora);
    let right = 0;
    const prepared = await prepareRecords(llama, tok, records, { temperature, maxNewTokens: maxNew, seed, judge, signal: ctl.signal }, (r, ok, done) => {
      if (ok) right++;
      out(`record ${String(done).padStart(4)}/${records.length}  ${ok ? 'right' : 'wrong'}  expected ${extractFinalNumber(r.answer) ?? '-'}, got ${extractFinalNumber(r.output) ?? '-'}${ok ? '' : '  (judged)'}`);
    });
    await writeFile(outFile, `${JSON.stringify(prepared, null, 1)}\n`);
    const stopped = prepared.length < records.length ? ` (stopped after ${prepared.length} of ${records.length})` : '';
    out(`prepared ${prepared.length} records${stopped}: ${right} right, ${prepared.length - right} wrong with judgments from ${judge.name}; wrote ${outFile} (temperature ${temperature}, seed ${seed}, ${quant})`);
  } finally {
    process.off('SIGINT', onSigint);
    engine.destroy();
  }
}
