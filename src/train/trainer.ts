/**
 * The training loop, independent of DOM and Node: epochs of shuffled samples (micro-batch 1),
 * gradient accumulation into the flat LoRA gradient buffer, one GPU AdamW step per effective batch
 * with a cosine schedule, per-step metrics, cancel and pause, non-finite guards, and checkpoints
 * that resume to exactly the same result as an uninterrupted run.
 *
 * Packing (`TrainConfig.packing`, docs/architecture.md §3): the records of a step go through one
 * forward and backward pass, packed end to end (`TrainPass.forwardPacked`), as many as the pass's
 * token cap allows; their second sequences (NLFT's anchors) through one more. Each record keeps its
 * own loss normalisation and dropout masks, so a packed step's gradient is the unpacked one's up to
 * summation order.
 *
 * Determinism: the order of micro-batches is a function of (seed, epoch) and the LoRA dropout
 * masks of (seed, micro-batch index), so the state to save is just the step counter plus the
 * parameters and optimizer moments.
 */
import type { Engine } from '../engine/engine.ts';
import type { GpuLlama, PositionScores } from '../engine/llama.ts';
import { groupByTokens } from '../engine/packing.ts';
import { lossCoefficients, lossValue, type SequenceForward, TrainPass, type TermKind, type TrainSequence } from '../engine/train-pass.ts';
import { NlftError } from '../errors.ts';
import { Rng } from '../util/rng.ts';
import { AdamW } from './optimizer.ts';
import { sequenceOf, type TrainSample } from '../data/prompt.ts';
import { cosineWithWarmup } from './schedule.ts';

/** Hyper-parameters of a run (stored with it). */
export interface TrainConfig {
  epochs: number;
  /** Stop after this many optimizer steps (null: run all epochs). */
  maxSteps: number | null;
  lr: number;
  warmupFraction: number;
  /** Effective batch: micro-batches (of one sequence) accumulated per optimizer step. */
  batch: number;
  seed: number;
  weightDecay: number;
  maxGradNorm: number;
  /** Keep only each layer's input and recompute the layer in the backward pass (less memory). */
  recompute: boolean;
  /** Run a step's records packed in one training pass (within the pass's token cap) instead of one pass each. */
  packing: boolean;
}

export const DEFAULT_TRAIN: TrainConfig = {
  epochs: 3,
  maxSteps: null,
  lr: 5e-5,
  warmupFraction: 0.1,
  batch: 4,
  seed: 0,
  weightDecay: 0,
  maxGradNorm: 1,
  recompute: false,
  packing: true,
};

/** Per-position loss terms of one sample (SFT: every response token, likelihood, weight 1/N). */
export interface SampleTerms {
  kinds: TermKind[];
  weights: ArrayLike<number>;
  /** A second term on the same positions (NLFT's optional SFT term on negatives); gradients add. */
  extra?: { kinds: TermKind[]; weights: ArrayLike<number> };
  /**
   * A second sequence of the same record (NLFT's anchor, docs/method.md §3), trained in a forward
   * and backward pass after the first's (packed with the step's other second sequences): its loss
   * adds to the record's, its gradients accumulate into the same buffer.
   */
  second?: SequenceTerms;
  /**
   * Called once the record's passes ran, records in step order, with its second sequence's scores
   * and loss when it has one (NLFT reports the visit's saliency entry here).
   */
  report?: (second: { scores: PositionScores; loss: number } | null) => void;
}

/** A sequence with its loss terms: the model reads `ids`, position `rows[i]` is scored against `targets[i]`. */
export interface SequenceTerms {
  ids: number[];
  rows: number[];
  targets: number[];
  kinds: TermKind[];
  weights: ArrayLike<number>;
}

/**
 * How a method weights a sample's tokens after its forward pass (NLFT needs the scores; SFT does
 * not), from that sample's share of the pass alone: the terms of one record never depend on the
 * other records packed with it.
 */
export type TermsFn = (sample: TrainSample, pass: SequenceForward) => Promise<SampleTerms> | SampleTerms;

/** SFT: the mean cross-entropy of the response tokens. */
export const sftTerms: TermsFn = (s) => ({
  kinds: s.responseIds.map(() => 'likelihood'),
  weights: new Float32Array(s.responseIds.length).fill(1 / s.responseIds.length),
});

/** A training method: how it weights each sample, and optional work once per optimizer step. */
export interface LossMethod {
  terms: TermsFn;
  /**
   * Called with an optimizer step's micro-batches before their forward passes (the adapters do not
   * change within a step, so NLFT scores all their no-grad views here in packed passes).
   */
  beginStep?(samples: readonly TrainSample[]): Promise<void>;
}

export const SFT: LossMethod = { terms: sftTerms };

export interface StepMetrics {
  step: number;
  totalSteps: number;
  epoch: number;
  /** Mean loss of the batch's samples. */
  loss: number;
  /** Tokens fed (prompt + response) in the batch. */
  tokens: number;
  ms: number;
  lr: number;
  gradNorm: number;
  /** GPU bytes at the step's peak (buffer manager). */
  peakBytes: number;
  samples: string[];
}

export interface TrainerState {
  /** Optimizer steps done. */
  step: number;
}

export interface Checkpoint {
  config: TrainConfig;
  state: TrainerState;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

export interface RunHooks {
  onStep?: (m: StepMetrics) => void | Promise<void>;
  /** Checked between micro-batches; an aborted signal ends the run after the current step. */
  signal?: AbortSignal;
  /** Awaited between steps: resolve to continue (a host implements pause with it). */
  paused?: () => Promise<void>;
}

export type RunEnd = { status: 'done' | 'cancelled'; steps: number } | { status: 'non-finite'; steps: number; message: string };

export class Trainer {
  readonly totalSteps: number;
  readonly state: TrainerState = { step: 0 };
  private readonly optimizer: AdamW;
  private readonly schedule: (step: number) => number;
  private readonly orders = new Map<number, number[]>();
  private readonly backup;

  constructor(
    private readonly engine: Engine,
    private readonly model: GpuLlama,
    private readonly samples: readonly TrainSample[],
    readonly config: TrainConfig,
    private readonly method: LossMethod = SFT,
    /** The LoRA dropout rate on the adapters' input (`LoraConfig.dropout`, its one home). */
    private readonly dropout = 0,
    /** Tokens one packed training pass may hold (with `config.packing`; a longer record runs alone). */
    private readonly passTokens = Number.POSITIVE_INFINITY,
  ) {
    if (samples.length === 0) throw new NlftError('the dataset has no records: nothing to train on', 'dataset');
    if (!model.lora) throw new NlftError('training needs LoRA adapters on the model', 'no-lora');
    for (const [k, ok] of [
      ['epochs', config.epochs > 0],
      ['batch', Number.isInteger(config.batch) && config.batch >= 1],
      ['lr', config.lr > 0],
    ] as const) {
      if (!ok) throw new NlftError(`training option ${k} must be positive (got ${config[k]})`, 'usage');
    }
    const micro = Math.ceil(config.epochs * samples.length);
    this.totalSteps = Math.min(Math.ceil(micro / config.batch), config.maxSteps ?? Infinity);
    const lora = model.lora;
    this.optimizer = new AdamW(engine, lora.params, lora.enableGradients(), lora.n, {
      weightDecay: config.weightDecay,
      maxGradNorm: config.maxGradNorm,
    });
    this.schedule = cosineWithWarmup({ baseLr: config.lr, totalSteps: this.totalSteps, warmupFraction: config.warmupFraction });
    this.backup = engine.buffers.create('lora params (last good)', lora.n * 4);
  }

  /** Index into `samples` of global micro-batch k (epoch-wise Fisher–Yates shuffles from the seed). */
  sampleAt(k: number): { sample: number; epoch: number } {
    const n = this.samples.length;
    const epoch = Math.floor(k / n);
    let order = this.orders.get(epoch);
    if (!order) {
      const rng = new Rng((Math.imul(this.config.seed, 1000003) + epoch) >>> 0);
      order = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [order[i], order[j]] = [order[j], order[i]];
      }
      this.orders.set(epoch, order);
    }
    return { sample: order[k % n], epoch };
  }

  /** Run until all steps are done, the signal aborts, or a loss or gradient is not finite. */
  async run(hooks: RunHooks = {}): Promise<RunEnd> {
    const { engine, model, config } = this;
    const lora = model.lora!;
    const micro = Math.ceil(config.epochs * this.samples.length);
    while (this.state.step < this.totalSteps) {
      if (hooks.signal?.aborted) return { status: 'cancelled', steps: this.state.step };
      await hooks.paused?.();
      const step = this.state.step + 1;
      const t0 = performance.now();
      engine.buffers.resetPeak();
      model.ops.trimUniforms(); // nothing is being recorded between steps
      const first = (step - 1) * config.batch;
      const last = Math.min(step * config.batch, micro);
      const visits = Array.from({ length: last - first }, (_, i) => ({
        k: first + i,
        sample: this.samples[this.sampleAt(first + i).sample],
      }));
      const epoch = this.sampleAt(last - 1).epoch;
      await this.method.beginStep?.(visits.map((v) => v.sample));
      const count = last - first;
      const lr = this.schedule(step);
      // The optimizer step (parameters copied aside to undo a non-finite one, norm, clip, update)
      // and the norm's readback, recorded into the step's last backward encoder: one submit.
      const norm: { read?: () => Promise<number> } = {};
      const update = async (enc: GPUCommandEncoder) => {
        enc.copyBufferToBuffer(lora.params.buffer, 0, this.backup.buffer, 0, lora.n * 4);
        await this.optimizer.step(enc, { lr, step, gradScale: 1 / count });
        norm.read = this.optimizer.recordNormReadback(enc);
      };
      const r = await this.accumulateVisits(visits, step, update);
      if ('nonFinite' in r) {
        await this.discardGradients();
        return { status: 'non-finite', steps: this.state.step, message: r.nonFinite };
      }
      let lossSum = 0;
      for (const l of r.losses) lossSum += l;
      if (!norm.read) {
        // The step's last pass had no gradient to send back (every weight 0): the update alone.
        const enc = engine.ctx.device.createCommandEncoder({ label: 'optimizer step' });
        await update(enc);
        engine.ctx.device.queue.submit([enc.finish()]);
      }
      const gradNorm = await norm.read!();
      try {
        engine.ctx.check(); // a command the GPU refused makes this step's numbers meaningless
      } catch (e) {
        await this.undoStep();
        throw e;
      }
      if (!Number.isFinite(gradNorm)) {
        await this.undoStep();
        return {
          status: 'non-finite',
          steps: this.state.step,
          message: `the gradient norm is not finite at step ${step}; training stopped, the adapter keeps the parameters of step ${this.state.step}`,
        };
      }
      this.state.step = step;
      await hooks.onStep?.({
        step,
        totalSteps: this.totalSteps,
        epoch,
        loss: lossSum / count,
        tokens: r.tokens,
        ms: performance.now() - t0,
        lr,
        gradNorm,
        peakBytes: engine.buffers.peak,
        samples: visits.map((v) => v.sample.id),
      });
    }
    return { status: 'done', steps: this.state.step };
  }

  /** Put back the parameters the last optimizer step started from (copied by `run` before it). */
  private async undoStep(): Promise<void> {
    const { device } = this.engine.ctx;
    const undo = device.createCommandEncoder({ label: 'undo step' });
    undo.copyBufferToBuffer(this.backup.buffer, 0, this.model.lora!.params.buffer, 0, this.model.lora!.n * 4);
    device.queue.submit([undo.finish()]);
    await device.queue.onSubmittedWorkDone();
  }

  /**
   * Forward and backward passes of one record (micro-batch k of optimizer step `step`): its
   * sequence and, when its terms bring one, its second sequence; their gradients are added into the
   * LoRA gradient buffer. Returns the record's loss and the tokens fed, or the message of a
   * non-finite loss. Called alone it gives one record's gradient (the model's `lora.readGrads()`).
   */
  async accumulate(s: TrainSample, k: number, step: number): Promise<{ loss: number; tokens: number } | { nonFinite: string }> {
    const r = await this.accumulateVisits([{ sample: s, k }], step);
    return 'nonFinite' in r ? r : { loss: r.losses[0], tokens: r.tokens };
  }

  /** The dropout seed of micro-batch k's sequence; its second sequence (k < 2^31) takes it with the top bit flipped. */
  private seedOf(k: number, second: boolean): number {
    const seed = (Math.imul(this.config.seed, 0x2545f491) ^ k) >>> 0;
    return second ? (seed ^ 0x80000000) >>> 0 : seed;
  }

  /**
   * Forward and backward passes of a step's records (micro-batches `visits[i].k` of step `step`):
   * packed (`config.packing`) in passes of at most `passTokens` tokens, else one pass per record;
   * after each pass of first sequences, one for their second sequences. Every sequence is masked by
   * its own dropout seed (`seedOf`) whichever pass it runs in. Returns each record's loss (its
   * sequences' summed) and the tokens fed, or the message of the first non-finite loss (`run` then
   * discards the step's gradients). `last`, when given, is recorded into the step's last backward
   * pass, after every loss of the step was found finite (`run`'s optimizer step); it is not called
   * when that pass has no gradient to send back.
   */
  private async accumulateVisits(
    visits: readonly { sample: TrainSample; k: number }[],
    step: number,
    last?: (enc: GPUCommandEncoder) => Promise<void>,
  ): Promise<{ losses: number[]; tokens: number } | { nonFinite: string }> {
    const stopped = `training stopped, the adapter keeps the parameters of step ${this.state.step}`;
    const losses = visits.map(() => 0);
    const reports: { terms: SampleTerms; second: { scores: PositionScores; loss: number } | null }[] = [];
    let tokens = 0;
    const groups = this.config.packing
      ? groupByTokens(
          visits.map((v, i) => ({ ...v, i, seq: sequenceOf(v.sample) })),
          (v) => v.seq.ids.length,
          this.passTokens,
        )
      : visits.map((v, i) => [{ ...v, i, seq: sequenceOf(v.sample) }]);
    for (const [g, group] of groups.entries()) {
      const lastGroup = g === groups.length - 1;
      const pass = await this.forward(
        group.map((v) => v.seq),
        group.map((v) => this.seedOf(v.k, false)),
      );
      const coefs: Float32Array[] = [];
      const seconds: { i: number; k: number; seq: SequenceTerms }[] = [];
      for (const [j, v] of group.entries()) {
        const s = v.sample;
        const own = pass.sequence(j);
        const t = await this.method.terms(s, own);
        const loss = lossValue(t.kinds, t.weights, own.scores) + (t.extra ? lossValue(t.extra.kinds, t.extra.weights, own.scores) : 0);
        if (!Number.isFinite(loss)) {
          pass.release();
          return { nonFinite: `the loss of record ${s.index} (id ${s.id}) is not finite at step ${step}; ${stopped}` };
        }
        const coef = lossCoefficients(t.kinds, t.weights, own.scores);
        if (t.extra) lossCoefficients(t.extra.kinds, t.extra.weights, own.scores).forEach((c, r) => (coef[r] += c)); // the backward is linear in them
        coefs.push(coef);
        losses[v.i] = loss;
        tokens += v.seq.ids.length;
        reports[v.i] = { terms: t, second: null };
        if (t.second) seconds.push({ i: v.i, k: v.k, seq: t.second });
      }
      const coef = concat(coefs);
      if (coef.some((c) => c !== 0)) await pass.backward(coef, lastGroup && seconds.length === 0 ? last : undefined);
      else pass.release(); // every weight 0 (skipped records, or anchored negatives without unlikely tokens): no gradient
      const secondGroups = this.config.packing ? groupByTokens(seconds, (q) => q.seq.ids.length, this.passTokens) : seconds.map((q) => [q]);
      for (const [h, sg] of secondGroups.entries()) {
        const pass2 = await this.forward(
          sg.map((q) => q.seq),
          sg.map((q) => this.seedOf(q.k, true)),
        );
        const coefs2: Float32Array[] = [];
        for (const [j, q] of sg.entries()) {
          const { scores } = pass2.sequence(j);
          const loss2 = lossValue(q.seq.kinds, q.seq.weights, scores);
          if (!Number.isFinite(loss2)) {
            pass2.release();
            const s = visits[q.i].sample;
            return {
              nonFinite: `the loss of record ${s.index} (id ${s.id}), its second sequence (the anchor), is not finite at step ${step}; ${stopped}`,
            };
          }
          losses[q.i] += loss2;
          tokens += q.seq.ids.length;
          reports[q.i].second = { scores, loss: loss2 };
          coefs2.push(lossCoefficients(q.seq.kinds, q.seq.weights, scores));
        }
        await pass2.backward(concat(coefs2), lastGroup && h === secondGroups.length - 1 ? last : undefined);
      }
    }
    for (const r of reports) r.terms.report?.(r.second);
    return { losses, tokens };
  }

  /** The forward pass of sequences packed in order, sequence i's dropout masks from `seeds[i]`. */
  private forward(seqs: readonly TrainSequence[], seeds: readonly number[]): Promise<TrainPass> {
    const dropout = { rate: this.dropout, seed: seeds[0], seeds };
    return TrainPass.forwardPacked(this.model, seqs, dropout, this.config.recompute);
  }

  private async discardGradients(): Promise<void> {
    const enc = this.engine.ctx.device.createCommandEncoder();
    enc.clearBuffer(this.model.lora!.grads!.buffer);
    this.engine.ctx.device.queue.submit([enc.finish()]);
    await this.engine.ctx.device.queue.onSubmittedWorkDone();
  }

  /** Everything needed to continue this run exactly. */
  async checkpoint(): Promise<Checkpoint> {
    const lora = this.model.lora!;
    const { m, v } = await this.optimizer.state();
    return { config: { ...this.config }, state: { ...this.state }, params: await this.engine.buffers.readF32(lora.params, lora.n), m, v };
  }

  /** Continue from a checkpoint of a run with the same configuration and samples. */
  async restore(ck: Checkpoint): Promise<void> {
    const lora = this.model.lora!;
    if (ck.params.length !== lora.n)
      throw new NlftError(
        `the checkpoint holds ${ck.params.length} LoRA values, this model's adapters ${lora.n}: different rank or targets`,
        'checkpoint',
      );
    this.engine.ctx.device.queue.writeBuffer(lora.params.buffer, 0, ck.params.buffer, ck.params.byteOffset, ck.params.byteLength);
    this.optimizer.loadState({ m: ck.m, v: ck.v });
    this.state.step = ck.state.step;
  }

  /** Free the optimizer's state, the last-good copy, and the pass buffers kept for a next step. */
  destroy(): void {
    this.optimizer.destroy();
    this.engine.buffers.destroy(this.backup);
    this.engine.buffers.flushPool();
  }
}

/** Arrays laid end to end. */
function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
