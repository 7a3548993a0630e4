/**
 * `nlft eval`: accuracy of the model (with an optional PEFT adapter) on `{question, answer}` or
 * NLFT records — each question answered from the base prompt, its final number compared with the
 * standard answer's (docs/method.md §7) — printed with the counts; per-item results with --out.
 * Records without an instruction are asked under the system text the model was trained with
 * (`evalSystemOption`).
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_INSTRUCTION } from '../../data/prompt.ts';
import { adapterName } from '../../engine/gpu.ts';
import { describeSystem, evaluate, summarize, trainedSystemText } from '../../eval/accuracy.ts';
import { UsageError } from '../../errors.ts';
import { isRecord } from '../../util/json.ts';
import { parse, required } from './args.ts';
import { describeGeneration, GENERATION_FLAGS, generationOptions, withGenerationModel } from './generation.ts';
import { limitOption, readDatasetFile } from './inputs.ts';
import { templatesOption } from './nlft-options.ts';

/** The flags that choose the system text (`evalSystemOption`). */
export const SYSTEM_FLAGS = { system: { type: 'string' }, templates: { type: 'string' } } as const;

/** A system text and where it came from, in words (for the setting line and --out). */
export interface SystemChoice {
  text: string;
  source: string;
}

/**
 * The system text a training run (an `nlft train` output folder) trained its records without an
 * instruction with: the most common base-view system text of its data file (`trainedSystemText`),
 * or, when the file named in run.json cannot be read from here, its templates' base text (NLFT) or
 * default instruction (SFT). Null when the folder has no run.json.
 */
export async function runSystemText(runDir: string): Promise<SystemChoice | null> {
  const file = path.join(runDir, 'run.json');
  if (!existsSync(file)) return null;
  let run: unknown;
  try {
    run = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  const prompt = isRecord(run) && isRecord(run.prompt) ? run.prompt : {};
  const templates = isRecord(prompt.templates) ? prompt.templates : {};
  const base = [templates.baseSystem, prompt.defaultInstruction].find((t) => typeof t === 'string') as string | undefined;
  const fallback = base ?? DEFAULT_INSTRUCTION;
  const data = isRecord(run) && isRecord(run.data) && typeof run.data.path === 'string' ? run.data.path : null;
  if (data && existsSync(data))
    return { text: trainedSystemText(await readDatasetFile(data, false), fallback), source: `the run in ${runDir} trained with (${data})` };
  return { text: fallback, source: `the base text of the run in ${runDir} (run.json)` };
}

/**
 * The system text for records without an instruction: --system, else the baseSystem of
 * --templates, else the text the --adapter folder's run trained with (its run.json), else the default.
 */
export async function evalSystemOption(values: Record<string, unknown>): Promise<SystemChoice> {
  if (typeof values.system === 'string') return { text: values.system, source: '--system' };
  if (typeof values.templates === 'string')
    return { text: (await templatesOption(values)).baseSystem, source: `baseSystem of ${values.templates}` };
  const fromRun = typeof values.adapter === 'string' ? await runSystemText(values.adapter) : null;
  return fromRun ?? { text: DEFAULT_INSTRUCTION, source: 'the default instruction' };
}

export async function evalCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    ...GENERATION_FLAGS,
    ...SYSTEM_FLAGS,
    data: { type: 'string' },
    limit: { type: 'string' },
    out: { type: 'string' },
  });
  const spec = required(values, 'model');
  const dataFile = required(values, 'data');
  const limit = limitOption(values);
  const g = generationOptions(values, { maxNew: 512, temperature: 0 });
  const system = await evalSystemOption(values);
  const records = (await readDatasetFile(dataFile, false)).slice(0, limit);
  out(`system     ${describeSystem(system.text)} for records without an instruction (${system.source})`);
  await withGenerationModel(spec, 'evaluation', values, g.quant, out, async ({ llama, tok, peft, engine, signal }) => {
    const items = await evaluate(
      llama,
      tok,
      records,
      { maxNewTokens: g.maxNew, temperature: g.temperature, seed: g.seed, system: system.text, signal, check: engine.ctx.check },
      (it, done) => {
        out(
          `item ${String(done).padStart(4)}/${records.length}  ${it.correct ? 'right' : 'wrong'}  ` +
            `expected ${it.expected ?? '-'}, got ${it.got ?? '-'}  (${it.tokens} tokens, ${it.ended})`,
        );
      },
    );
    const s = summarize(items);
    const setting = `${describeGeneration(g, peft !== null)}, max-new ${g.maxNew}, ${describeSystem(system.text)}, ${adapterName(engine.ctx.adapter)}`;
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
            system: system.text,
            systemSource: system.source,
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
