/**
 * A training run, written once for both hosts (the `nlft train` CLI and the app's worker): the
 * request's options checked (session/options.ts), the data parsed and turned into the method's
 * samples, the memory a step needs estimated and fitted to the budget, the LoRA adapters
 * initialised or restored from a checkpoint, NLFT's scoring pass sized and run, the trainer run
 * with its checkpoint cadence, and everything reported as `TrainEvent`s. A host only turns its
 * input into a `TrainRequest` and the events into lines and files, or messages.
 *
 * Two phases, because a host may need the plan before it has a GPU (the CLI creates its engine
 * with the budget the plan settled): `planTraining` is CPU-only, `runTraining` uses the engine.
 */
import type { DatasetRecord } from '../data/dataset.ts';
import { parseDataset } from '../data/dataset.ts';
import { DEFAULT_INSTRUCTION, type TrainSample } from '../data/prompt.ts';
import type { DatasetSummary } from '../data/summary.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import { formatBytes } from '../engine/buffers.ts';
import type { Engine } from '../engine/engine.ts';
import type { GpuLlama } from '../engine/llama.ts';
import { estimateTrainBytes, scoreBatchTokens, type TrainMemoryEstimate } from '../engine/memory.ts';
import { DeviceLostError, NlftError, UsageError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { PickedFilesSource } from '../model/files-source.ts';
import { initLora, type LoraConfig } from '../model/lora.ts';
import type { QuantFormat } from '../model/quant.ts';
import {
  anchorSamples,
  classifyScores,
  type DatasetScores,
  DEFAULT_SCORE_BATCH_TOKENS,
  type NlftSample,
  nlftMethod,
  nlftSamples,
  type SaliencyEntry,
  type SaliencySummary,
  saliencySummary,
  scoreRecords,
  staticNlftMethod,
} from '../nlft/method.ts';
import type { SaliencyOptions } from '../nlft/saliency.ts';
import { type NlftTemplates, parseTemplates } from '../nlft/templates.ts';
import { CHECKPOINT_FILE, checkpointBytes, readCheckpoint } from '../train/checkpoint.ts';
import { sftSamples } from '../train/samples.ts';
import { type Checkpoint, type RunEnd, SFT, type TrainConfig, Trainer } from '../train/trainer.ts';
import { recordsSummary } from './jobs.ts';
import { checkTrainConfig, checkTrainRequest, type SaliencyMode, saliencyModeOf } from './options.ts';
import type { RunModel, TrainEvent, TrainRequest } from './requests.ts';

export type TrainMethod = 'nlft' | 'sft';

/** The samples of a method: NLFT's three views of each record's `output`, or SFT on the standard `answer`. */
export function methodSamples(
  method: TrainMethod,
  records: readonly DatasetRecord[],
  tok: TextTokenizer,
  templates: NlftTemplates,
  maxLen: number,
): { samples: TrainSample[]; truncated: number } {
  return method === 'nlft' ? nlftSamples(records, tok, templates, maxLen) : sftSamples(records, tok, maxLen);
}

/** The memory a training step needs and how it fits the budget. */
export interface MemoryPlan {
  /** The estimate of the step as it will run. */
  estimate: TrainMemoryEstimate;
  /** Recompute layers in the backward pass (asked for, or switched on to fit the budget). */
  recompute: boolean;
  /** When the budget switched recomputation on: the estimate with all activations kept; else null. */
  kept: TrainMemoryEstimate | null;
  /** The budget in bytes, or null for none. */
  budgetBytes: number | null;
  /**
   * Tokens a packed training pass may hold (`Trainer`'s `passTokens`): `DEFAULT_TRAIN_PASS_TOKENS`,
   * or fewer when the budget allows fewer (a longer record still runs alone).
   */
  passTokens: number;
}

/** Tokens a packed training pass holds at most when no memory budget bounds it fewer. */
export const DEFAULT_TRAIN_PASS_TOKENS = 2048;

/**
 * Fits a step's memory to the budget. The step is sized on its largest pass: with packing
 * (`packBatch` records a pass, the step's batch) the `packBatch` longest samples packed, within the
 * pass's token cap; else the longest sample alone (T its tokens fed, prompt + response − 1; R its
 * scored rows, the response tokens). A budget caps a packed pass at the tokens whose activations fit
 * it (at least the longest sample). Over the budget even so, a run keeping every layer's activations
 * switches to recomputing them when that fits; otherwise it is refused.
 *
 * @throws UsageError with the needed and allowed sizes, when even recomputation does not fit
 */
export function planMemory(
  c: LlamaConfig,
  quant: QuantFormat,
  lora: LoraConfig,
  samples: readonly TrainSample[],
  recompute: boolean,
  budgetMiB: number | null,
  packBatch = 1,
): MemoryPlan {
  const sizes = samples
    .map((s) => ({ T: s.promptIds.length + s.responseIds.length - 1, R: s.responseIds.length }))
    .sort((a, b) => b.T - a.T || b.R - a.R);
  const longest = sizes[0];
  const top = sizes.slice(0, packBatch).reduce((a, s) => ({ T: a.T + s.T, R: a.R + s.R }), { T: 0, R: 0 });
  const budgetBytes = budgetMiB === null ? null : budgetMiB * 2 ** 20;
  // Activations are linear in a pass's tokens and rows, so a token's share (R = T: every token scored) bounds a pass of T tokens.
  const plan = (r: boolean) => {
    const perToken = estimateTrainBytes(c, quant, lora, 1, 1, r);
    const byBudget = budgetBytes === null ? Infinity : Math.floor((budgetBytes - perToken.model - perToken.lora) / perToken.activations);
    const passTokens = Math.max(longest.T, Math.min(DEFAULT_TRAIN_PASS_TOKENS, byBudget));
    const T = Math.min(passTokens, top.T);
    return { estimate: estimateTrainBytes(c, quant, lora, T, Math.min(top.R, T), r), passTokens };
  };
  const asked = plan(recompute);
  if (budgetBytes === null || asked.estimate.total <= budgetBytes) return { ...asked, recompute, kept: null, budgetBytes };
  const alt = plan(true);
  if (!recompute && alt.estimate.total <= budgetBytes) return { ...alt, recompute: true, kept: asked.estimate, budgetBytes };
  const one = estimateTrainBytes(c, quant, lora, longest.T, longest.R, true);
  throw new UsageError(
    `a training step needs about ${formatBytes(one.total)} even recomputing layers (model ${formatBytes(one.model)}, LoRA and optimizer ${formatBytes(one.lora)}, ` +
      `activations ${formatBytes(one.activations)} for ${longest.T + 1} tokens), over the memory budget of ${budgetMiB} MiB; try a lower maxLen, q4 weights or a smaller rank`,
  );
}

/** A run as planned before the GPU is involved: settings resolved, data prepared, memory fitted. */
export interface TrainPlan {
  method: TrainMethod;
  /** The training settings (the checkpoint's when resuming), recompute as the memory plan decided. */
  train: TrainConfig;
  lora: LoraConfig;
  maxLen: number;
  saliency: SaliencyOptions;
  /** When NLFT's saliency is computed (docs/method.md §3.1). */
  saliencyMode: SaliencyMode;
  /** The scorer model as the request names it, or null (the trained model scores). */
  scorer: string | null;
  templates: NlftTemplates;
  records: number;
  samples: TrainSample[];
  /** Samples whose response was cut to fit `maxLen`. */
  truncated: number;
  dataSummary: DatasetSummary;
  memory: MemoryPlan;
  /** The checkpoint to continue from, or null for a fresh run. */
  resume: Checkpoint | null;
  /** Tokens per packed no-grad scoring pass the request asked for (null: sized from memory). */
  scoreBatchTokens: number | null;
}

/**
 * Checks a request and prepares its run for the model `model` (its config, weight format and id)
 * with tokenizer `tok`.
 *
 * `onRecords` sees the records parsed so far while the data is read (`DatasetOptions.onProgress`).
 *
 * @throws UsageError for a bad option or a run over the memory budget; DatasetError, TemplateError,
 *   ModelFormatError (the checkpoint) naming the record, field or file; NlftError ('usage') when a
 *   resumed run trained another model
 */
export async function planTraining(
  req: TrainRequest,
  model: { config: LlamaConfig; quant: QuantFormat; id: string },
  tok: TextTokenizer,
  onRecords?: (records: number) => void,
): Promise<TrainPlan> {
  let { train, lora } = checkTrainRequest(req);
  let resume: Checkpoint | null = null;
  if (req.resume) {
    const want = req.resume.model;
    if (want && (want.id !== model.id || want.quant !== model.quant)) {
      throw new NlftError(
        `This run trained ${want.id} with ${want.quant} weights; load that model (now ${model.id}, ${model.quant}) to continue it.`,
        'usage',
      );
    }
    const saved = await readCheckpoint(
      new PickedFilesSource([new File([req.resume.checkpoint as BlobPart], CHECKPOINT_FILE)], 'the saved run'),
    );
    ({ lora } = saved);
    train = checkTrainConfig(saved.checkpoint.config);
    resume = saved.checkpoint;
  }
  const templates = parseTemplates(req.templates, 'NLFT templates');
  const records = parseDataset(req.data.bytes, req.data.name, { requireOutput: req.method === 'nlft', onProgress: onRecords }).records;
  const { samples, truncated } = methodSamples(req.method, records, tok, templates, req.maxLen);
  const anchored = req.method === 'nlft' && req.saliency.negatives === 'anchor'; // anchors are sequences of their own (docs/method.md §3)
  const sized = anchored ? [...samples, ...anchorSamples(samples)] : samples;
  const memory = planMemory(
    model.config,
    model.quant,
    lora,
    sized,
    train.recompute,
    req.memoryBudgetMiB ?? null,
    train.packing ? train.batch : 1,
  );
  return {
    method: req.method,
    train: { ...train, recompute: memory.recompute },
    lora,
    maxLen: req.maxLen,
    saliency: req.saliency,
    saliencyMode: saliencyModeOf(req),
    scorer: req.scorer ?? null,
    templates,
    records: records.length,
    samples,
    truncated,
    dataSummary: recordsSummary(records, tok, req.maxLen),
    memory,
    resume,
    scoreBatchTokens: req.scoreBatchTokens ?? null,
  };
}

/**
 * Tokens per packed no-grad scoring pass: the asked number, or else `DEFAULT_SCORE_BATCH_TOKENS`
 * within `activationBytes` (the memory a training step takes anyway); either way within the
 * device's per-buffer binding limit.
 */
export function scorePassTokens(
  c: LlamaConfig,
  lora: LoraConfig | null,
  asked: number | null,
  activationBytes: number,
  maxBindingBytes: number,
): number {
  const fitting = (bytes: number) => scoreBatchTokens(c, lora, bytes, maxBindingBytes);
  return asked === null ? Math.min(DEFAULT_SCORE_BATCH_TOKENS, fitting(activationBytes)) : Math.min(asked, fitting(Infinity));
}

/** How a host runs a planned training: where events go, and its stop, pause and checkpoint cadence. */
export interface TrainHost {
  /** Receives every event in order; a returned promise is awaited (a host may write files). */
  onEvent(event: TrainEvent): void | Promise<void>;
  /** The model trained, as checkpoints and `started` name it. */
  model: RunModel;
  /** Ends the run after the current step. */
  signal?: AbortSignal;
  /** Checked between steps: a promise pauses the run (after a checkpoint and a `paused` event) until it resolves. */
  pauseGate?: () => Promise<void> | null;
  /** Seconds between checkpoints while training (null: only when the run pauses or ends). */
  checkpointSeconds: number | null;
}

/** How a run went, for the host's summary and run record. */
export interface TrainResult {
  end: RunEnd;
  /** Optimizer step the run started from (0, or the checkpoint's). */
  fromStep: number;
  totalSteps: number;
  /** Loss of the last step run (NaN when none ran). */
  lastLoss: number;
  /** Highest GPU bytes of a step. */
  peakBytes: number;
  /** GPU bytes held with the model and fresh adapters, before training. */
  modelBytes: number;
  /** NLFT: the saliency summary under the initial adapters; null for SFT. */
  summary: SaliencySummary | null;
  scoreBatchTokens: number;
}

/**
 * The failure `e` of a run on `engine`, as a `DeviceLostError` saying where the run stood and which
 * checkpoint it keeps when the device was lost (whatever `e` is: a readback the loss aborted, most
 * often), else `e` as it is.
 */
async function lossOrAsIs(engine: Engine, e: unknown, trainer: Trainer | null, kept: number | null): Promise<unknown> {
  const loss = e instanceof DeviceLostError ? e : await engine.ctx.lossSoFar();
  if (!loss) return e;
  const at = trainer
    ? `at step ${Math.min(trainer.state.step + 1, trainer.totalSteps)} of ${trainer.totalSteps}`
    : 'before training started';
  const keeps =
    kept === null
      ? 'no checkpoint was kept, so the run must start again'
      : `the run is kept with its checkpoint at step ${kept} and can continue from it on a new device`;
  return loss.during(`${at}; ${keeps}.`);
}

/**
 * Trains `llama` (which gets fresh adapters, or the checkpoint's) as `plan` says. Every event goes
 * to `host.onEvent`; a checkpoint event comes when the run pauses, every `checkpointSeconds`, and
 * when it ends. When the device is lost the run ends with a `DeviceLostError` naming the step and
 * the last checkpoint (the resumed one, or the last sent); no checkpoint comes after the loss, so
 * none holds part of a step. The adapters stay on `llama` afterwards. While it runs, the buffer manager holds
 * the plan's memory budget (an allocation over it fails with the numbers). NLFT scores the data
 * with the initial adapters for the summary (and static saliency), unless `scored` holds the
 * scores already (the scorer's, from `scoreWithScorer`, which a plan with a scorer needs).
 *
 * @throws NlftError ('scorer') when the plan names a scorer and `scored` is absent
 */
export async function runTraining(
  engine: Engine,
  llama: GpuLlama,
  tok: TextTokenizer,
  plan: TrainPlan,
  host: TrainHost,
  scored: DatasetScores | null = null,
): Promise<TrainResult> {
  const budgetBefore = engine.buffers.budget;
  if (plan.memory.budgetBytes !== null) engine.buffers.budget = plan.memory.budgetBytes;
  let trainer: Trainer | null = null;
  /** The step of the checkpoint the host holds (the one resumed, or the last sent), or null. */
  let kept = plan.resume ? plan.resume.state.step : null;
  try {
    const c = llama.config;
    const { method, train, lora, samples } = plan;
    const passTokens = scorePassTokens(
      c,
      lora,
      plan.scoreBatchTokens,
      plan.memory.estimate.activations,
      engine.ctx.device.limits.maxStorageBufferBindingSize,
    );
    llama.setLora(initLora(c, lora, train.seed));
    const modelBytes = engine.buffers.current;
    engine.buffers.resetPeak();
    const tokenText = (id: number) => tok.tokenText(id);
    let summary: SaliencySummary | null = null;
    let entries: SaliencyEntry[] = [];
    if (method === 'sft') {
      trainer = new Trainer(engine, llama, samples, train, SFT, lora.dropout, plan.memory.passTokens);
    } else {
      const nlft = samples as readonly TrainSample[] as readonly NlftSample[];
      if (plan.scorer && !scored) throw new NlftError(`the scorer ${plan.scorer} has not scored the data (scoreWithScorer)`, 'scorer');
      let scores = scored;
      if (!scores) {
        await host.onEvent({ type: 'scoring', done: 0, total: samples.length, passTokens });
        scores = await scoreRecords(llama, nlft, {
          maxTokens: passTokens,
          anchors: plan.saliency.negatives === 'anchor',
          onProgress: (done) => void host.onEvent({ type: 'scoring', done, total: samples.length }),
        });
      }
      const initial = classifyScores(nlft, scores, plan.saliency, tokenText);
      summary = saliencySummary(initial.entries, plan.saliency.negativesWithoutSaliency, plan.saliency.negatives);
      const report = { tokenText, onEntry: (e: SaliencyEntry) => void entries.push(e), stepOf: () => (trainer?.state.step ?? 0) + 1 };
      const fixed = (s: TrainSample, i: number) => {
        const { logpc, logpj } = scores.records[i]; // the hidden states are not kept
        return [s, { scores: { logpc, logpj }, result: initial.results[i] }] as const;
      };
      const loss =
        plan.saliencyMode === 'static'
          ? staticNlftMethod(new Map(samples.map(fixed)), report)
          : nlftMethod(llama, { saliency: plan.saliency, ...report, maxBatchTokens: passTokens });
      trainer = new Trainer(engine, llama, samples, train, loss, lora.dropout, plan.memory.passTokens);
    }
    const active: Trainer = trainer;
    if (plan.resume) await active.restore(plan.resume);
    const fromStep = active.state.step;
    await host.onEvent({
      type: 'started',
      totalSteps: active.totalSteps,
      records: plan.records,
      truncated: plan.truncated,
      summary,
      model: host.model,
      fromStep,
      dataSummary: plan.dataSummary,
      memory: plan.memory.estimate,
      recompute: train.recompute,
      scoreBatchTokens: passTokens,
      ...(method === 'nlft' ? { saliencyMode: plan.saliencyMode, scorer: plan.scorer } : {}),
    });
    let lastCheckpoint = performance.now();
    const checkpoint = async () => {
      const step = active.state.step;
      await host.onEvent({ type: 'checkpoint', step, bytes: checkpointBytes(await active.checkpoint(), lora) });
      kept = step;
      lastCheckpoint = performance.now();
    };
    let peakBytes = 0;
    let lastLoss = Number.NaN;
    const end = await active.run({
      signal: host.signal,
      async paused() {
        const gate = host.pauseGate?.();
        if (!gate) return;
        await checkpoint(); // a paused run may never be resumed in this process
        await host.onEvent({ type: 'paused', step: active.state.step });
        await gate;
      },
      async onStep(metrics) {
        peakBytes = Math.max(peakBytes, metrics.peakBytes);
        lastLoss = metrics.loss;
        const visited = entries;
        entries = [];
        await host.onEvent({ type: 'step', metrics, entries: visited });
        if (host.checkpointSeconds !== null && performance.now() - lastCheckpoint > host.checkpointSeconds * 1000) await checkpoint();
      },
    });
    await checkpoint();
    return { end, fromStep, totalSteps: active.totalSteps, lastLoss, peakBytes, modelBytes, summary, scoreBatchTokens: passTokens };
  } catch (e) {
    throw await lossOrAsIs(engine, e, trainer, kept);
  } finally {
    trainer?.destroy();
    engine.buffers.budget = budgetBefore;
  }
}

/** Where a run came from and ran, as the host knows it (for the run record). */
export interface RunOrigin {
  /** The model as the user named it (folder, Hub id) and its config. */
  model: { path: string; quant: QuantFormat; config: LlamaConfig };
  /** The dataset as the user named it. */
  dataPath: string;
  /** The GPU adapter and the host's runtime, e.g. `{ adapter, node, platform }`. */
  environment: Record<string, unknown>;
  /** When the run was asked for (ms since the epoch). */
  startedAt: number;
}

/**
 * The run record (`run.json`): settings, data and its summary, prompt building, NLFT options and
 * summary, environment, result, timings and memory.
 */
export function trainRunRecord(plan: TrainPlan, result: TrainResult, origin: RunOrigin): Record<string, unknown> {
  const { method } = plan;
  return {
    method,
    model: origin.model,
    data: { path: origin.dataPath, records: plan.records, truncated: plan.truncated, maxLen: plan.maxLen, summary: plan.dataSummary },
    lora: plan.lora,
    train: plan.train,
    prompt:
      method === 'nlft'
        ? {
            templates: plan.templates,
            views:
              'chat template of the model per view (system + user, generation prompt); the response is the record output, tokenized separately',
          }
        : {
            template: 'chat template of the model: system = instruction, user = input, generation prompt',
            defaultInstruction: DEFAULT_INSTRUCTION,
            response: 'answer + end-of-sequence token',
          },
    nlft:
      method === 'nlft'
        ? {
            options: plan.saliency,
            saliencyMode: plan.saliencyMode,
            scorer: plan.scorer,
            summary: result.summary,
            scoreBatchTokens: result.scoreBatchTokens,
          }
        : null,
    environment: origin.environment,
    result: { ...result.end, totalSteps: result.totalSteps, lastLoss: result.lastLoss },
    timings: { startedAt: new Date(origin.startedAt).toISOString(), seconds: (Date.now() - origin.startedAt) / 1000 },
    memory: {
      peakBytes: result.peakBytes,
      modelBytes: result.modelBytes,
      estimate: plan.memory.estimate,
      budgetBytes: plan.memory.budgetBytes,
    },
  };
}
