/**
 * `nlft prepare`: turn `{question, answer}` records into NLFT records (docs/method.md §6): the model's
 * own answers (sampled at --temperature, 0.6 by default), graded by final number, a judgment for
 * each wrong one — from a judge model at an OpenAI-compatible endpoint (--judge-url, --judge-model,
 * key in $JUDGE_API_KEY) or, without one, a template judgment from the grade. Ctrl-C stops and
 * writes the records done so far; so does a judge that fails, which then exits with its message.
 * Questions without an instruction are asked under --system (or the baseSystem of --templates, or
 * the text the --adapter's run trained with); a text other than the default is written into the
 * prepared records as their instruction. The job itself is the session's (src/session/prepare.ts).
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describeSystem } from '../../eval/accuracy.ts';
import { DEFAULT_PREPARE } from '../../eval/prepare.ts';
import { NlftError, UsageError } from '../../errors.ts';
import { type JudgeSpec, type PrepareRequest, preparationRecords, runPreparation } from '../../session/prepare.ts';
import { parse, required } from './args.ts';
import { evalSystemOption, SYSTEM_FLAGS } from './eval.ts';
import { describeGeneration, GENERATION_FLAGS, generationOptions, withGenerationModel } from './generation.ts';
import { limitOption, readDatasetBytes } from './inputs.ts';

export async function prepareCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    ...GENERATION_FLAGS,
    ...SYSTEM_FLAGS,
    data: { type: 'string' },
    out: { type: 'string' },
    limit: { type: 'string' },
    'judge-url': { type: 'string' },
    'judge-model': { type: 'string' },
  });
  const spec = required(values, 'model');
  const dataFile = required(values, 'data');
  const outFile = required(values, 'out');
  const g = generationOptions(values, { maxNew: DEFAULT_PREPARE.maxNewTokens, temperature: DEFAULT_PREPARE.temperature });
  const url = values['judge-url'];
  const judgeModel = values['judge-model'];
  if ((typeof url === 'string') !== (typeof judgeModel === 'string'))
    throw new UsageError('--judge-url and --judge-model go together (an OpenAI-compatible endpoint and its model name)');
  const judge: JudgeSpec =
    typeof url === 'string' && typeof judgeModel === 'string'
      ? { kind: 'chat', url, model: judgeModel, apiKey: process.env.JUDGE_API_KEY || null }
      : { kind: 'template' };
  const system = await evalSystemOption(values);
  const request: PrepareRequest = {
    data: { name: path.basename(dataFile), bytes: await readDatasetBytes(dataFile) },
    limit: limitOption(values),
    temperature: g.temperature,
    maxNewTokens: g.maxNew,
    seed: g.seed,
    system: system.text,
    judge,
  };
  preparationRecords(request); // a bad record is named before the model loads
  out(`system     ${describeSystem(system.text)} for records without an instruction (${system.source})`);
  await withGenerationModel(spec, 'preparation', values, g.quant, out, async ({ llama, tok, peft, signal }) => {
    const r = await runPreparation({ llama, tok, name: spec }, request, {
      signal,
      onItem: ({ expected, got, correct }, done, total) =>
        out(
          `record ${String(done).padStart(4)}/${total}  ${correct ? 'right' : 'wrong'}  expected ` +
            `${expected ?? '-'}, got ${got ?? '-'}${correct ? '' : '  (judged)'}`,
        ),
    });
    const records = r.items.map((i) => i.record);
    await writeFile(outFile, `${JSON.stringify(records, null, 1)}\n`);
    const right = r.items.filter((i) => i.correct).length;
    const cut = r.judgeError ? 'the judge failed' : 'stopped';
    const stopped = records.length < r.total ? ` (${cut} after ${records.length} of ${r.total})` : '';
    const summary =
      `prepared ${records.length} records${stopped}: ${right} right, ${records.length - right} wrong ` +
      `with judgments from ${r.judge}; wrote ${outFile} (${describeGeneration(g, peft !== null)})`;
    if (r.judgeError) throw new NlftError(`${r.judgeError}\n${summary}`, 'judge');
    out(summary);
  });
}
