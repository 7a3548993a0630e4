/**
 * `nlft prepare`: turn `{question, answer}` records into NLFT records (docs/method.md §6): the model's
 * own answers (sampled at --temperature, 0.6 by default), graded by final number, a judgment for
 * each wrong one — from a judge model at an OpenAI-compatible endpoint (--judge-url, --judge-model,
 * key in $JUDGE_API_KEY) or, without one, a template judgment from the grade. Ctrl-C stops and
 * writes the records done so far. Questions without an instruction are asked under --system (or the
 * baseSystem of --templates, or the text the --adapter's run trained with); a text other than the
 * default is written into the prepared records as their instruction.
 */
import { writeFile } from 'node:fs/promises';
import { chatJudge, TEMPLATE_JUDGE } from '../../eval/judge.ts';
import { DEFAULT_PREPARE, prepareRecords } from '../../eval/prepare.ts';
import { UsageError } from '../../errors.ts';
import { parse, required } from './args.ts';
import { describeGeneration, GENERATION_FLAGS, generationOptions, withGenerationModel } from './generation.ts';
import { limitOption, readDatasetFile } from './inputs.ts';
import { evalSystemOption, SYSTEM_FLAGS } from './eval.ts';
import { describeSystem } from '../../eval/accuracy.ts';
import { DEFAULT_INSTRUCTION } from '../../data/prompt.ts';

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
  const limit = limitOption(values);
  const g = generationOptions(values, { maxNew: DEFAULT_PREPARE.maxNewTokens, temperature: DEFAULT_PREPARE.temperature });
  const url = values['judge-url'];
  const judgeModel = values['judge-model'];
  if ((typeof url === 'string') !== (typeof judgeModel === 'string'))
    throw new UsageError('--judge-url and --judge-model go together (an OpenAI-compatible endpoint and its model name)');
  const judge =
    typeof url === 'string' && typeof judgeModel === 'string'
      ? chatJudge({ url, model: judgeModel, apiKey: process.env.JUDGE_API_KEY || undefined })
      : TEMPLATE_JUDGE;
  const system = await evalSystemOption(values);
  const records = (await readDatasetFile(dataFile, false)).slice(0, limit);
  out(`system     ${describeSystem(system.text)} for records without an instruction (${system.source})`);
  await withGenerationModel(spec, 'preparation', values, g.quant, out, async ({ llama, tok, peft, signal }) => {
    let right = 0;
    const prepared = await prepareRecords(
      llama,
      tok,
      records,
      {
        temperature: g.temperature,
        maxNewTokens: g.maxNew,
        seed: g.seed,
        system: system.text === DEFAULT_INSTRUCTION ? undefined : system.text,
        judge,
        signal,
      },
      (_, { expected, got, correct }, done) => {
        if (correct) right++;
        out(
          `record ${String(done).padStart(4)}/${records.length}  ${correct ? 'right' : 'wrong'}  expected ` +
            `${expected ?? '-'}, got ${got ?? '-'}${correct ? '' : '  (judged)'}`,
        );
      },
    );
    await writeFile(outFile, `${JSON.stringify(prepared, null, 1)}\n`);
    const stopped = prepared.length < records.length ? ` (stopped after ${prepared.length} of ${records.length})` : '';
    out(
      `prepared ${prepared.length} records${stopped}: ${right} right, ${prepared.length - right} wrong ` +
        `with judgments from ${judge.name}; wrote ${outFile} (${describeGeneration(g, peft !== null)})`,
    );
  });
}
