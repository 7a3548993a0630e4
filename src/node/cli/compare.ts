/**
 * `nlft compare`: train every arm × seed with identical settings, evaluate each adapter and the base
 * model on the same test items, and print and write the table (docs/method.md §7.1). An arm is a
 * method with its own training flags (`nlft:negatives-without-saliency=skip`, `sft`): its pairs
 * become `nlft train` flags over the shared ones, so every training flag works in an arm. Each run
 * is `nlft train`'s code path in this process, seed by seed, and is evaluated as soon as it is
 * trained, under the system text it trained with (`runSystemText`); the base model last.
 * With --out a compare continues where an earlier one stopped: a run folder whose training finished
 * with the same flags is kept, and an evaluation already made with the same settings is reused
 * (`compare-run.json` in each run folder, `base-eval.json` for the base model).
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { adapterName } from '../../engine/gpu.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { type ArmOutcome, compareMarkdown, compareRows, DEFAULT_BOOTSTRAP } from '../../eval/compare.ts';
import { describeSystem, type EvalItem } from '../../eval/accuracy.ts';
import { UsageError } from '../../errors.ts';
import { readPeftAdapter } from '../../export/peft.ts';
import { DEFAULT_TEMPLATES } from '../../nlft/templates.ts';
import { DEFAULT_INSTRUCTION } from '../../data/prompt.ts';
import { runEvaluation, type LoadedJobModel } from '../../session/jobs.ts';
import type { DatasetFile, EvalOutcome } from '../../session/requests.ts';
import { isRecord } from '../../util/json.ts';
import { createTunedEngine } from '../engine.ts';
import { FolderSource } from '../fs-source.ts';
import { isPositiveInt, numberOption, type Options, parse, quantOption, required } from './args.ts';
import { runSystemText } from './eval.ts';
import { limitOption, loadModelWithTokenizer, readDatasetBytes } from './inputs.ts';
import { TRAIN_FLAGS, trainCommand, trainRequestOf } from './train.ts';

/** The flags of compare itself; every other flag is a training flag shared by all arms. */
const COMPARE_FLAGS = {
  eval: { type: 'string' },
  arms: { type: 'string' },
  seeds: { type: 'string' },
  limit: { type: 'string' },
  'max-new': { type: 'string' },
  system: { type: 'string' },
} satisfies Options;

/** Training flags compare sets per run (or that make no sense across runs), with what to use instead. */
const PER_RUN: Record<string, string> = {
  method: 'name the method in --arms (sft, nlft)',
  seed: 'use --seeds',
  resume: 'compare with --out keeps the runs an earlier compare finished with the same flags',
  out: '',
  model: '',
  data: '',
};

const METHODS = ['sft', 'nlft'] as const;

/** An arm: its name as written, its method and its own training flags (a boolean flag as `true`). */
export interface Arm {
  name: string;
  method: (typeof METHODS)[number];
  flags: Record<string, string | true>;
}

/**
 * --arms: comma-separated arms, each `method[:flag=value[:flag…]]` (a boolean flag by its bare
 * name); a value may hold commas (`nlft:targets=q_proj,v_proj`): a piece that does not start with
 * a method continues the arm before it when that arm ends in a value. Each flag must be a training flag (`flags`) that compare
 * does not set itself.
 */
export function parseArms(text: string, flags: Options): Arm[] {
  const pieces: string[] = [];
  for (const p of text.split(',').map((s) => s.trim())) {
    const starts = METHODS.some((m) => p === m || p.startsWith(`${m}:`));
    if (starts || pieces.length === 0 || !pieces[pieces.length - 1].includes('=')) pieces.push(p);
    else pieces[pieces.length - 1] += `,${p}`;
  }
  const arms = pieces.map((name) => {
    const [method, ...pairs] = name.split(':');
    if (!METHODS.includes(method as Arm['method']))
      throw new UsageError(`--arms: expected arms like sft, nlft or nlft:lambda=5, found "${name}"`);
    const own: Record<string, string | true> = {};
    for (const pair of pairs) {
      const eq = pair.indexOf('=');
      const key = eq < 0 ? pair : pair.slice(0, eq);
      const spec = flags[key];
      if (!spec || key in PER_RUN)
        throw new UsageError(
          `--arms ${name}: expected training flags as key=value, found "${key}"${PER_RUN[key] ? ` (${PER_RUN[key]})` : ''}`,
        );
      if ((spec.type === 'boolean') !== eq < 0)
        throw new UsageError(
          `--arms ${name}: expected ${spec.type === 'boolean' ? `"${key}" alone (a switch)` : `${key}=value`}, found "${pair}"`,
        );
      own[key] = eq < 0 ? true : pair.slice(eq + 1);
    }
    return { name, method: method as Arm['method'], flags: own };
  });
  const names = arms.map((a) => a.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) throw new UsageError(`--arms: expected every arm once, found "${twice}" twice`);
  return arms;
}

/** --seeds: comma-separated distinct non-negative integers (default 0). */
export function seedsOption(values: Record<string, unknown>): number[] {
  const text = typeof values.seeds === 'string' ? values.seeds : '0';
  const seeds = text.split(',').map((s) => Number(s.trim()));
  const ok = text.trim() !== '' && seeds.every((s, i) => Number.isInteger(s) && s >= 0 && seeds.indexOf(s) === i);
  if (!ok) throw new UsageError(`--seeds: expected distinct non-negative integers such as 0,1,2, found "${text}"`);
  return seeds;
}

/** Flags as argv: `--name=value` (so a value may start with a dash), a switch as `--name`. */
export function argvOf(values: Record<string, string | boolean | undefined>): string[] {
  return Object.entries(values).flatMap(([k, v]) => (v === true ? [`--${k}`] : typeof v === 'string' ? [`--${k}=${v}`] : []));
}

/** One run of the comparison: its arm, seed, folder, and how it went. */
interface CompareRun {
  arm: string;
  seed: number;
  dir: string;
  status: string;
  trainSeconds: number;
  system: string;
  eval: EvalOutcome | null;
}

/** Seconds of the run as run.json records them (load, scoring, training, writing). */
async function runSeconds(dir: string, fallback: number): Promise<number> {
  try {
    const run: unknown = JSON.parse(await readFile(path.join(dir, 'run.json'), 'utf8'));
    return isRecord(run) && isRecord(run.timings) && typeof run.timings.seconds === 'number' ? run.timings.seconds : fallback;
  } catch {
    return fallback;
  }
}

export async function compareCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, { ...TRAIN_FLAGS, ...COMPARE_FLAGS });
  for (const key of Object.keys(PER_RUN))
    if (PER_RUN[key] && values[key] !== undefined) throw new UsageError(`--${key}: not a compare flag (${PER_RUN[key]})`);
  const spec = required(values, 'model');
  const dataFile = required(values, 'data');
  const evalFile = required(values, 'eval');
  const arms = parseArms(required(values, 'arms'), TRAIN_FLAGS);
  const seeds = seedsOption(values);
  const limit = limitOption(values);
  const maxNew = numberOption(values, 'max-new', 512, isPositiveInt, 'a positive integer');
  const quant = quantOption(values.quant);
  const shared: Record<string, string | boolean | undefined> = { ...values };
  for (const key of [...Object.keys(COMPARE_FLAGS), ...Object.keys(PER_RUN)]) delete shared[key];
  const evalData: DatasetFile = { name: path.basename(evalFile), bytes: await readDatasetBytes(evalFile) };
  // Every arm's flags checked before the first run trains (values the session's rules know).
  for (const arm of arms) {
    const v = { ...shared, ...arm.flags, method: arm.method };
    try {
      trainRequestOf(parse(argvOf(v), TRAIN_FLAGS), { templates: DEFAULT_TEMPLATES, data: { name: '', bytes: new Uint8Array() } });
    } catch (e) {
      if (e instanceof UsageError) throw new UsageError(`--arms ${arm.name}: ${e.message}`);
      throw e;
    }
  }
  const outDir = typeof values.out === 'string' ? values.out : null;
  const runsDir = outDir ? path.join(outDir, 'runs') : await mkdtemp(path.join(os.tmpdir(), 'nlft-compare-'));
  await mkdir(runsDir, { recursive: true });
  const ctl = new AbortController();
  const onSigint = () => ctl.abort();
  process.on('SIGINT', onSigint);
  try {
    out(`compare    ${arms.length} arms × ${seeds.length} seeds on ${dataFile}; evaluated on ${evalFile}`);
    const target = { spec, quant, runsDir, keep: outDir !== null };
    const request = { data: evalData, limit, maxNewTokens: maxNew };
    const runs: CompareRun[] = [];
    // Seed by seed, each run evaluated when trained: a first seed of every arm is known early.
    for (const seed of seeds)
      for (const [a, arm] of arms.entries()) {
        if (ctl.signal.aborted) break;
        const slug = `${String(a + 1).padStart(2, '0')}-${arm.name.replace(/[^A-Za-z0-9._-]+/g, '_')}-seed${seed}`;
        const dir = path.join(runsDir, slug);
        const tag = `[${arm.name} seed ${seed}]`;
        const t0 = performance.now();
        const trainArgv = argvOf({
          ...shared,
          ...arm.flags,
          method: arm.method,
          seed: String(seed),
          model: spec,
          data: dataFile,
          out: dir,
        });
        let status: string;
        if (outDir && (await finishedRun(dir, trainArgv))) {
          out(`kept       ${tag} ${dir}: trained by an earlier compare with the same flags (delete the folder to train it again)`);
          status = 'done';
        } else {
          out(`train      ${tag} → ${dir}`);
          const end = await trainCommand(trainArgv, (line) => {
            const step = /^step +(\d+)\/(\d+)/.exec(line);
            if (!step || Number(step[1]) % 10 === 0 || step[1] === step[2]) out(`  ${tag} ${line}`);
          });
          if (end.status === 'cancelled') break;
          status = end.status;
          if (outDir && status === 'done') await writeRunMark(dir, { argv: trainArgv, evals: [] });
        }
        const seconds = await runSeconds(dir, (performance.now() - t0) / 1000);
        const system = typeof values.system === 'string' ? values.system : ((await runSystemText(dir))?.text ?? DEFAULT_INSTRUCTION);
        const run: CompareRun = { arm: arm.name, seed, dir, status, trainSeconds: seconds, system, eval: null };
        runs.push(run);
        run.eval = await evaluateRun(target, run, request, ctl.signal, out);
      }
    // The table and compare.json list the runs arm by arm.
    runs.sort((x, y) => arms.findIndex((a) => a.name === x.arm) - arms.findIndex((a) => a.name === y.arm) || x.seed - y.seed);
    const reference = arms.some((a) => a.name === 'sft') ? 'sft' : arms[0].name;
    const baseSystem = (runs.find((r) => r.arm === reference) ?? runs[0])?.system ?? DEFAULT_INSTRUCTION;
    const base = ctl.signal.aborted ? null : await evaluateRun(target, null, request, ctl.signal, out, baseSystem);
    const evaluated = runs.filter((r) => r.eval && !r.eval.stopped);
    const stopped = !base || base.stopped || evaluated.length < arms.length * seeds.length;
    if (stopped) {
      out(`stopped: ${evaluated.length} of ${arms.length * seeds.length} runs trained and evaluated; no table`);
      process.exitCode = 1;
      return;
    }
    const outcomes: ArmOutcome[] = arms.map((arm) => {
      const mine = evaluated.filter((r) => r.arm === arm.name);
      return {
        arm: arm.name,
        seeds: mine.map((r) => r.seed),
        correct: mine.map((r) => correctness(r.eval!.items)),
        trainSeconds: mine.map((r) => r.trainSeconds),
      };
    });
    const rows = compareRows(outcomes, reference);
    const b = base!;
    const markdown = compareMarkdown(rows, { eval: path.basename(evalFile), items: b.items.length, base: b.summary.accuracy, reference });
    const command = `nlft compare ${argv.map((s) => (/^[\w.,:=/@+-]+$/.test(s) ? s : JSON.stringify(s))).join(' ')}`;
    for (const line of markdown.trimEnd().split('\n')) out(line);
    if (outDir) {
      const json = {
        command,
        model: spec,
        data: dataFile,
        eval: evalFile,
        quant,
        maxNewTokens: maxNew,
        trainingFlags: shared,
        reference,
        bootstrap: DEFAULT_BOOTSTRAP,
        items: b.items.map((it) => ({ index: it.index, id: it.id, expected: it.expected })),
        base: { label: b.label, summary: b.summary, correct: correctness(b.items) },
        runs: runs.map((r) => ({
          arm: r.arm,
          seed: r.seed,
          dir: r.dir,
          status: r.status,
          trainSeconds: r.trainSeconds,
          system: r.system,
          label: r.eval!.label,
          summary: r.eval!.summary,
          correct: correctness(r.eval!.items),
        })),
        rows,
      };
      await writeFile(path.join(outDir, 'compare.json'), `${JSON.stringify(json, null, 1)}\n`);
      await writeFile(path.join(outDir, 'compare.md'), `# nlft compare\n\n\`\`\`sh\n${command}\n\`\`\`\n\n${markdown}`);
      out(`wrote ${path.join(outDir, 'compare.json')} and compare.md`);
    }
  } finally {
    process.off('SIGINT', onSigint);
    if (!outDir) await rm(runsDir, { recursive: true, force: true });
  }
}

const correctness = (items: readonly EvalItem[]) => items.map((it) => it.correct);

/** `compare-run.json` in a run folder: the training flags it finished with and its evaluations so far. */
interface RunMark {
  argv: string[];
  evals: { key: string; outcome: EvalOutcome }[];
}

const RUN_MARK = 'compare-run.json';
const BASE_EVAL = 'base-eval.json';

async function readRunMark(file: string): Promise<RunMark | null> {
  try {
    const mark: unknown = JSON.parse(await readFile(file, 'utf8'));
    return isRecord(mark) && Array.isArray(mark.argv) && Array.isArray(mark.evals) ? (mark as unknown as RunMark) : null;
  } catch {
    return null;
  }
}

const writeRunMark = (dir: string, mark: RunMark) => writeFile(path.join(dir, RUN_MARK), `${JSON.stringify(mark)}\n`);

/** A run folder an earlier compare trained to its end with exactly these flags (its mark, run.json and adapter). */
async function finishedRun(dir: string, argv: string[]): Promise<boolean> {
  const mark = await readRunMark(path.join(dir, RUN_MARK));
  if (!mark || JSON.stringify(mark.argv) !== JSON.stringify(argv)) return false;
  try {
    const run: unknown = JSON.parse(await readFile(path.join(dir, 'run.json'), 'utf8'));
    await readFile(path.join(dir, 'adapter_model.safetensors'));
    return isRecord(run) && isRecord(run.result) && run.result.status === 'done';
  } catch {
    return false;
  }
}

/** Where and how `evaluateRun` evaluates: the model, its quantization, the runs' folder, and whether marks are kept. */
interface EvalTarget {
  spec: string;
  quant: ReturnType<typeof quantOption>;
  runsDir: string;
  keep: boolean;
}

/**
 * One evaluation of the comparison: a run's adapter under the system text it trained with, or (run
 * null) the base model under `baseSystem` (--system, else the reference arm's text). The model is
 * loaded for it and freed after, so no second copy is held while the next run trains. With `keep`,
 * an evaluation made earlier with the same model, test bytes, limit, length and text is taken from
 * the run's mark, and a new one is added to it (a stopped one is not).
 */
async function evaluateRun(
  target: EvalTarget,
  run: CompareRun | null,
  request: { data: DatasetFile; limit: number; maxNewTokens: number },
  signal: AbortSignal,
  out: (line: string) => void,
  baseSystem = DEFAULT_INSTRUCTION,
): Promise<EvalOutcome> {
  const { spec, quant, runsDir, keep } = target;
  const system = run ? run.system : baseSystem;
  const tag = run ? `[${run.arm} seed ${run.seed}]` : 'base model';
  const markFile = run ? path.join(run.dir, RUN_MARK) : path.join(runsDir, BASE_EVAL);
  const mark = (keep ? await readRunMark(markFile) : null) ?? { argv: [], evals: [] };
  const key = JSON.stringify({
    model: spec,
    quant,
    test: createHash('sha256').update(request.data.bytes).digest('hex'),
    limit: request.limit,
    maxNew: request.maxNewTokens,
    system,
  });
  const report = (o: EvalOutcome, how: string) =>
    out(`eval       ${tag}: accuracy ${o.summary.correct}/${o.summary.total} = ${(100 * o.summary.accuracy).toFixed(1)}%${how}`);
  const kept = mark.evals.find((e) => e.key === key)?.outcome;
  if (kept) {
    report(kept, ' (kept from an earlier compare)');
    return kept;
  }
  const { model, tok } = await loadModelWithTokenizer(spec, 'evaluation', () => {});
  const { engine } = await createTunedEngine(model.config, quant);
  try {
    const m: LoadedJobModel = { llama: GpuLlama.create(engine.ops, model.weights, quant), tok, name: spec, quant, trained: null };
    if (run) {
      const peft = await readPeftAdapter(new FolderSource(run.dir), model.config);
      m.llama.setLora(peft.lora);
      m.trained = peft.config;
    }
    out(`eval       ${tag}: ${describeSystem(system)} on ${adapterName(engine.ctx.adapter)}`);
    const o = await runEvaluation(m, { ...request, system }, { signal, check: engine.ctx.check });
    report(o, o.stopped ? ' (stopped)' : '');
    if (keep && !o.stopped) {
      mark.evals.push({ key, outcome: o });
      await writeFile(markFile, `${JSON.stringify(mark)}\n`);
    }
    return o;
  } finally {
    engine.destroy();
  }
}
