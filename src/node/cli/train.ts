/**
 * `nlft train`: fine-tune LoRA adapters on a dataset and write them in PEFT's format and as GGUF, with
 * metrics.jsonl (one line per optimizer step), saliency.jsonl (NLFT), run.json (the session's run
 * record) and checkpoint.safetensors (to continue with --resume; written after every pause, at the end and,
 * with --checkpoint-seconds, while training; every file but the two logs atomically, so a run killed
 * at any moment continues from its last checkpoint). A thin host of the training
 * session (src/session/train.ts): flags and files become a `TrainRequest`, its events lines and files.
 */
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { formatBytes } from '../../engine/buffers.ts';
import { adapterName, describeAdapter } from '../../engine/gpu.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { formatProfile, GpuProfiler } from '../../engine/profile.ts';
import { DeviceLostError, UsageError } from '../../errors.ts';
import { GGUF_ADAPTER_FILE } from '../../export/gguf.ts';
import { peftAdapterFiles } from '../../export/peft.ts';
import { DEFAULT_LORA, loraParameterCount } from '../../model/lora.ts';
import type { Projection } from '../../model/weights.ts';
import { checkTrainRequest, DEFAULT_MAX_LEN, type SaliencyMode } from '../../session/options.ts';
import { checkScorerVocabulary, scoreWithScorer } from '../../session/scorer.ts';
import type { TrainEvent, TrainRequest } from '../../session/requests.ts';
import { planTraining, runTraining, trainRunRecord } from '../../session/train.ts';
import { CHECKPOINT_FILE } from '../../train/checkpoint.ts';
import { DEFAULT_TRAIN, type RunEnd } from '../../train/trainer.ts';
import { writePeftAdapter } from '../adapter-files.ts';
import { writeFileAtomic } from '../atomic-file.ts';
import { createTunedEngine } from '../engine.ts';
import { numberOption, type Options, parse, quantOption, rawOption, required } from './args.ts';
import { printGgufUsage } from './export.ts';
import { loadModelWithTokenizer, readDatasetBytes } from './inputs.ts';
import { DatasetProgress } from './progress.ts';
import { NLFT_FLAGS, saliencyOptions, scoreBatchOption, templatesOption } from './nlft-options.ts';
import { printSummary } from './score.ts';

export const TRAIN_FLAGS = {
  method: { type: 'string' },
  model: { type: 'string' },
  data: { type: 'string' },
  out: { type: 'string' },
  quant: { type: 'string' },
  epochs: { type: 'string' },
  steps: { type: 'string' },
  lr: { type: 'string' },
  rank: { type: 'string' },
  alpha: { type: 'string' },
  dropout: { type: 'string' },
  targets: { type: 'string' },
  'max-len': { type: 'string' },
  batch: { type: 'string' },
  seed: { type: 'string' },
  ...NLFT_FLAGS,
  'weight-decay': { type: 'string' },
  warmup: { type: 'string' },
  'max-grad-norm': { type: 'string' },
  resume: { type: 'string' },
  'checkpoint-seconds': { type: 'string' },
  recompute: { type: 'boolean' },
  // on (default): a step's records in one packed training pass (within the memory budget); off: one pass per record.
  packing: { type: 'string' },
  'memory-budget': { type: 'string' },
  saliency: { type: 'string' },
  scorer: { type: 'string' },
} satisfies Options;

/**
 * The request the flags ask for, defaults where absent, values as typed: the session's rules
 * check them (so `--rank 6` reads `rank: expected a positive multiple of 4 …, found 6` here as in
 * the app). Pure: reads no file.
 */
export function trainRequestOf(values: Record<string, unknown>, inputs: Pick<TrainRequest, 'templates' | 'data' | 'resume'>): TrainRequest {
  const or = (name: string, fallback: unknown) => rawOption(values, name) ?? fallback;
  const d = DEFAULT_TRAIN;
  const request = {
    method: values.method ?? 'nlft',
    train: {
      epochs: or('epochs', d.epochs),
      maxSteps: or('steps', d.maxSteps),
      lr: or('lr', d.lr),
      warmupFraction: or('warmup', d.warmupFraction),
      batch: or('batch', d.batch),
      seed: or('seed', d.seed),
      weightDecay: or('weight-decay', d.weightDecay),
      maxGradNorm: or('max-grad-norm', d.maxGradNorm),
      recompute: values.recompute === true,
      packing: values.packing === undefined ? d.packing : ({ on: true, off: false }[String(values.packing)] ?? values.packing),
    },
    lora: {
      r: or('rank', DEFAULT_LORA.r),
      alpha: or('alpha', null),
      dropout: or('dropout', DEFAULT_LORA.dropout),
      targets:
        typeof values.targets === 'string' ? (values.targets.split(',').map((s) => s.trim()) as Projection[]) : [...DEFAULT_LORA.targets],
    },
    maxLen: or('max-len', DEFAULT_MAX_LEN),
    memoryBudgetMiB: or('memory-budget', null),
    scoreBatchTokens: scoreBatchOption(values),
    saliency: saliencyOptions(values),
    saliencyMode: values.saliency ?? null,
    scorer: values.scorer ?? null,
    ...inputs,
  } as TrainRequest;
  checkTrainRequest(request);
  return request;
}

/** When the saliency is computed, in words (the line before training). */
function describeSaliencyMode(mode: SaliencyMode, scorer: string | null): string {
  if (mode === 'dynamic') return 'dynamic: side views re-scored every step with the current adapters';
  return `static: classes and coefficients fixed before training from the ${scorer ? `scorer ${scorer}` : 'initial model'}'s scores`;
}

export async function trainCommand(argv: string[], out: (line: string) => void): Promise<RunEnd> {
  // --profile: GPU time per kernel and phase, dispatches, submits, uploads and readbacks per step (docs/architecture.md §3c).
  const values = parse(argv, { ...TRAIN_FLAGS, profile: { type: 'boolean' } });
  const modelDir = required(values, 'model');
  const dataFile = required(values, 'data');
  const outDir = required(values, 'out');
  const quant = quantOption(values.quant);
  const resumeDir = typeof values.resume === 'string' ? values.resume : null;
  // Seconds between checkpoints while training (0: after every step); without it, only at a pause and at the end.
  const checkpointSeconds =
    values['checkpoint-seconds'] === undefined
      ? null
      : numberOption(values, 'checkpoint-seconds', 0, (x) => x >= 0, 'a number of seconds, 0 or more');
  let checkpoint: Uint8Array | null = null;
  if (resumeDir) {
    try {
      checkpoint = await readFile(path.join(resumeDir, CHECKPOINT_FILE));
    } catch {
      throw new UsageError(`--resume ${resumeDir}: cannot read its ${CHECKPOINT_FILE}`);
    }
  }
  const templates = await templatesOption(values);
  const request = trainRequestOf(values, {
    templates,
    data: { name: path.basename(dataFile), bytes: await readDatasetBytes(dataFile) },
    resume: checkpoint ? { checkpoint } : undefined,
  });
  const started = Date.now();

  const opened = await loadModelWithTokenizer(modelDir, 'training', out);
  const { model, tok } = opened;
  const scorerId = request.scorer ?? null;
  let scorer = scorerId ? await loadModelWithTokenizer(scorerId, 'the scorer', out) : null;
  if (scorer) checkScorerVocabulary(opened, scorer, scorerId!);
  const parsing = new DatasetProgress(dataFile);
  const plan = await planTraining(request, { config: model.config, quant, id: modelDir }, tok, parsing.parsed);
  parsing.end();
  const { train, lora, memory, dataSummary: ds } = plan;
  out(
    `data       ${dataFile}: ${plan.records} records${plan.truncated ? `, ${plan.truncated} answers truncated to fit --max-len ${plan.maxLen}` : ''}`,
  );
  out(
    `           ${ds.positives} positive, ${ds.negatives} negative, ${ds.unknown} unknown; tokens per record p50 ` +
      `${ds.totalTokens.p50}, p90 ${ds.totalTokens.p90}, max ${ds.totalTokens.max}; ${ds.truncated} over --max-len`,
  );
  if (plan.resume) out(`resume     ${resumeDir}: step ${plan.resume.state.step}, with the checkpoint's training and LoRA settings`);
  if (memory.kept)
    out(
      `memory     ${formatBytes(memory.kept.total)} needed with all activations kept, over --memory-budget ` +
        `${request.memoryBudgetMiB} MiB: recomputing layers instead (${formatBytes(memory.estimate.total)})`,
    );
  const est = memory.estimate;
  out(
    `memory     estimate ${formatBytes(est.total)}: model ${formatBytes(est.model)}, LoRA + AdamW ` +
      `${formatBytes(est.lora)}, activations ${formatBytes(est.activations)}${train.recompute ? ' (recomputing layers)' : ''}` +
      (train.packing ? `; a step's records packed, up to ${memory.passTokens} tokens a pass` : '; one pass per record'),
  );
  const { engine, note } = await createTunedEngine(model.config, quant);
  try {
    out(`kernels    ${note}`);
    await mkdir(outDir, { recursive: true });
    const metricsFile = path.join(outDir, 'metrics.jsonl');
    const saliencyFile = path.join(outDir, 'saliency.jsonl');
    if (!plan.resume) await Promise.all([writeFile(metricsFile, ''), plan.method === 'nlft' ? writeFile(saliencyFile, '') : null]);
    // A run killed after its last checkpoint logged steps the resumed run does again: keep the lines up to the checkpoint.
    else await Promise.all([keepStepsUpTo(metricsFile, plan.resume.state.step), keepStepsUpTo(saliencyFile, plan.resume.state.step)]);
    /** The checkpoint on disk to continue from (the one resumed, or the last written), or null. */
    let kept = plan.resume && resumeDir ? { step: plan.resume.state.step, dir: resumeDir } : null;
    const onEvent = async (ev: TrainEvent) => {
      if (ev.type === 'scoring' && ev.passTokens !== undefined) {
        out(`scoring    ${ev.total} records, no-grad views packed ${ev.passTokens} tokens per pass`);
      } else if (ev.type === 'started') {
        if (ev.summary) printSummary(ev.summary, out);
        if (ev.saliencyMode) out(`saliency   ${describeSaliencyMode(ev.saliencyMode, ev.scorer ?? null)}`);
        out(
          `model      ${modelDir} (${quant}), LoRA r ${lora.r} alpha ${lora.alpha} on ${lora.targets.join(',')} ` +
            `(${loraParameterCount(model.config, lora).toLocaleString('en-US')} parameters); ${ev.totalSteps} steps of batch ${train.batch}`,
        );
        out(`adapter    ${describeAdapter(engine.ctx.adapter)}`);
      } else if (ev.type === 'step') {
        const m = ev.metrics;
        if (ev.entries.length) await appendFile(saliencyFile, ev.entries.map((e) => `${JSON.stringify(e)}\n`).join(''));
        await appendFile(metricsFile, `${JSON.stringify(m)}\n`);
        profiler?.step();
        out(
          `step ${String(m.step).padStart(4)}/${m.totalSteps}  loss ${m.loss.toFixed(4)}  lr ${m.lr.toExponential(2)} ` +
            ` grad-norm ${m.gradNorm.toFixed(3)}  ${m.ms.toFixed(0)} ms  ${formatBytes(m.peakBytes)}`,
        );
      } else if (ev.type === 'checkpoint') {
        await writeFileAtomic(path.join(outDir, CHECKPOINT_FILE), ev.bytes);
        kept = { step: ev.step, dir: outDir };
      }
    };
    // A scorer scores first and is freed before the trained model is uploaded (docs/method.md §3.2).
    const scored = scorer ? await scoreWithScorer(engine, opened, { ...scorer, id: scorerId!, quant }, plan, { onEvent }) : null;
    scorer = null;
    const llama = GpuLlama.create(engine.ops, model.weights, quant);
    const profiler = values.profile ? GpuProfiler.attach(engine.ctx.device) : null;
    const ctl = new AbortController();
    const onSigint = () => ctl.abort();
    process.once('SIGINT', onSigint);
    const result = await runTraining(
      engine,
      llama,
      tok,
      plan,
      {
        onEvent,
        model: { id: modelDir, quant },
        signal: ctl.signal,
        checkpointSeconds,
      },
      scored,
    )
      .catch((e: unknown) => {
        if (e instanceof DeviceLostError) out(continueLine(argv, kept));
        throw e;
      })
      .finally(() => process.off('SIGINT', onSigint));
    if (profiler) {
      // The first step also holds compiles (and a static run's scoring): averaged over the others when there are any.
      out(formatProfile(await profiler.report(1)));
      profiler.detach();
    }
    const params = await llama.lora!.read();
    const files = peftAdapterFiles(params, lora, { baseModel: modelDir, model: model.config });
    await writePeftAdapter(outDir, files);
    const record = trainRunRecord(plan, result, {
      model: { path: modelDir, quant, config: model.config },
      dataPath: dataFile,
      environment: { adapter: engine.ctx.adapter, node: process.version, platform: `${process.platform}-${process.arch}` },
      startedAt: started,
    });
    await writeFileAtomic(path.join(outDir, 'run.json'), `${JSON.stringify(record, null, 2)}\n`);
    const { end } = result;
    const what =
      end.status === 'non-finite' ? `stopped: ${end.message}` : end.status === 'done' ? 'trained' : 'cancelled (continue with --resume)';
    out(
      `${what}: ${end.steps}/${result.totalSteps} steps, last loss ${result.lastLoss.toFixed(4)}, ` +
        `peak ${formatBytes(result.peakBytes)}; wrote ${outDir} (${adapterName(engine.ctx.adapter)})`,
    );
    printGgufUsage(modelDir, path.join(outDir, GGUF_ADAPTER_FILE), files[GGUF_ADAPTER_FILE]?.length ?? 0, out);
    if (end.status === 'non-finite') process.exitCode = 1;
    return end;
  } finally {
    engine.destroy();
  }
}

/**
 * How to go on after the device was lost: the same command (`argv`) resuming the checkpoint `kept`
 * (its step and folder), or, with none, the command again with a checkpoint cadence.
 */
function continueLine(argv: readonly string[], kept: { step: number; dir: string } | null): string {
  const words = argv.filter((a, i) => a !== '--resume' && argv[i - 1] !== '--resume' && !a.startsWith('--resume='));
  const command = (extra: string[]) => ['nlft', 'train', ...words, ...extra].map(shellWord).join(' ');
  if (kept) return `continue   from the checkpoint at step ${kept.step}: ${command(['--resume', kept.dir])}`;
  return `continue   no checkpoint was written: run it again, with --checkpoint-seconds S to keep one while training: ${command([])}`;
}

/** `word` as a POSIX shell reads it back: bare when it holds only safe characters, else single-quoted. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * Keeps the lines of a JSON Lines log (metrics.jsonl, saliency.jsonl) whose `step` is at most
 * `step` (a line without a step stays); a missing file is left missing.
 */
async function keepStepsUpTo(file: string, step: number): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return;
  }
  const kept = text.split('\n').filter((line) => {
    if (!line.trim()) return false;
    try {
      const s = (JSON.parse(line) as { step?: unknown }).step;
      return typeof s !== 'number' || s <= step;
    } catch {
      return false; // a line cut by the kill
    }
  });
  await writeFileAtomic(file, kept.map((l) => `${l}\n`).join(''));
}
