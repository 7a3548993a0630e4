/**
 * One training pass over one sequence, or several packed end to end (`forwardPacked`): the forward pass keeping every layer's activations
 * (`GpuLlama.encodeForward` + `encodeTrainScores`), then (after the caller has turned the scores into
 * per-position coefficients) the backward pass (`GpuLlama.encodeBackward`), which accumulates LoRA
 * gradients into the model's flat gradient buffer. Base weights get no
 * gradient; activations' gradients flow through the dequantized base weights.
 *
 * The loss this differentiates is  L = sum_r c_r * (-log q_r)  for likelihood rows and
 * u_r * (-log(1 - q_r)) for unlikelihood rows; its gradient at each row's hidden state is one number
 * (`lossCoefficients`, from docs/method.md §5) times the unit gradient the forward made of the row.
 */
import { NlftError } from '../errors.ts';
import { type ForwardActs, passTables } from './activations.ts';
import type { TrackedBuffer } from './buffers.ts';
import type { GpuLlama, PositionScores } from './llama.ts';
import type { LmHeadTrainOut, ScoredRows } from './lm-head.ts';
import type { DropoutSpec } from './lora-linear.ts';
import { dropoutSeedTable } from './ops.ts';
import { packing } from './packing.ts';

const MAP_READ = 0x1; // GPUMapMode.READ and GPUBufferUsage.MAP_READ
const COPY_DST = 0x8; // GPUBufferUsage.COPY_DST

/** A loss term's kind at one scored position. */
export type TermKind = 'likelihood' | 'unlikelihood';

/**
 * Per-row coefficients of the lm-head backward (R): each scored row's hidden-state gradient is its
 * coefficient times the unit gradient g the forward made of it (lm-head.ts `lmHeadForwardGrad`,
 * g = the gradient of -log q_y divided by 1 - q_y). From docs/method.md §5, with q = q_y:
 *   likelihood c*(-log q):       c * (1 - q) = c * exp(log(1-q))
 *   unlikelihood u*(-log(1-q)):  -u * q      = -u * exp(log q)
 * Both are formed from the forward's log q and log(1-q) and are bounded by the term's weight at any q.
 */
export function lossCoefficients(kinds: readonly TermKind[], weights: ArrayLike<number>, scores: PositionScores): Float32Array {
  return Float32Array.from(kinds, (kind, r) =>
    kind === 'likelihood' ? weights[r] * Math.exp(scores.log1mq[r]) : -weights[r] * Math.exp(scores.logp[r]),
  );
}

/** The loss value of the same terms, from the forward's log-probabilities. */
export function lossValue(kinds: readonly TermKind[], weights: ArrayLike<number>, scores: PositionScores): number {
  let s = 0;
  for (let r = 0; r < kinds.length; r++) s += weights[r] * -(kinds[r] === 'likelihood' ? scores.logp[r] : scores.log1mq[r]);
  return s;
}

/** One sequence of a training pass: its token ids and the positions it scores (distinct), with the id each predicts. */
export interface TrainSequence {
  ids: number[];
  rows: number[];
  targets: number[];
}

/** What a loss method reads of one sequence's forward pass: its scored rows' scores and final hidden states. */
export interface SequenceForward {
  /** log q, log(1-q) and lse of each scored row of the sequence, in its order. */
  readonly scores: PositionScores;
  /** Final hidden states (after the last norm) of the sequence's scored rows, (R, C), for saliency clustering. */
  hiddenRows(): Promise<Float32Array>;
}

export class TrainPass implements SequenceForward {
  /** The final hidden states of the scored rows, read back once when first asked for. */
  private hidden: Promise<Float32Array> | null = null;

  private constructor(
    private readonly model: GpuLlama,
    private readonly acts: ForwardActs,
    private readonly scored: ScoredRows,
    private readonly rowList: readonly number[],
    /** Index in the scored rows of each sequence's first row, and the total (one more entry than sequences). */
    private readonly rowStarts: readonly number[],
    private readonly head: LmHeadTrainOut,
    private readonly dropout: DropoutSpec,
    private readonly live: TrackedBuffer[],
    /** log q, log(1-q) and lse of each scored row. */
    readonly scores: PositionScores,
  ) {}

  /**
   * Forward over `ids` keeping activations; scores `rows` (distinct positions) against `targets`.
   * The model must have LoRA adapters (they are what is trained). With `recompute`, only each
   * layer's input is kept and the backward pass recomputes the layer (activation checkpointing).
   */
  static forward(
    model: GpuLlama,
    ids: number[],
    rows: number[],
    targets: number[],
    dropout: DropoutSpec,
    recompute = false,
  ): Promise<TrainPass> {
    return TrainPass.forwardPacked(model, [{ ids, rows, targets }], dropout, recompute);
  }

  /**
   * `forward` for several sequences packed end to end in one pass (packing.ts): each sequence
   * attends only to itself and is positioned from 0, so its scores equal a pass of its own and
   * the backward adds the sum of their gradients (up to summation order), with one pass's
   * dispatches and submits for all of them. `scores`, `hiddenRows` and `backward`'s coefficients
   * hold the sequences' rows one after another, in order (`sequence(i)` is sequence i's share).
   * With `dropout.seeds`, each sequence's dropout masks are those of a pass of its own with its seed.
   */
  static async forwardPacked(model: GpuLlama, seqs: readonly TrainSequence[], dropout: DropoutSpec, recompute = false): Promise<TrainPass> {
    if (seqs.length === 0) throw new NlftError('a training pass needs at least one sequence', 'empty-input');
    for (const q of seqs) {
      model.checkInput(q.ids, q.rows, q.targets);
      if (new Set(q.rows).size !== q.rows.length)
        throw new NlftError('each position can be scored only once in a training pass', 'bad-position');
    }
    if (!model.lora) throw new NlftError('training needs LoRA adapters on the model', 'no-lora');
    const { T, starts } = packing(seqs.map((q) => q.ids.length));
    const rows = seqs.flatMap((q, i) => q.rows.map((r) => starts[i] + r));
    if (rows.length === 0) throw new NlftError('a training pass needs at least one scored position', 'empty-input');
    model.lora.enableGradients();
    const b = model.buffers;
    const live: TrackedBuffer[] = [];
    try {
      // The pass's inputs in one buffer and one upload: ids, scored rows, targets, the RoPE and
      // sequence-start tables, and with dropout each token's seed.
      const lengths = seqs.map((q) => q.ids.length);
      const tables = passTables(model, lengths);
      const withSeeds = dropout.rate > 0;
      const [ids, rowsBuf, targets, cs, seg, seeds] = b.uploadParts(live, 'pass inputs', [
        Uint32Array.from(seqs.flatMap((q) => q.ids)),
        Uint32Array.from(rows),
        Uint32Array.from(seqs.flatMap((q) => q.targets)),
        tables.cs,
        tables.seg,
        ...(withSeeds ? [dropoutSeedTable(dropout.seeds ?? lengths.map(() => dropout.seed), lengths)] : []),
      ]);
      const acts = model.allocActs(T, recompute ? 'checkpointed' : 'per-layer', live, lengths, { cs, seg });
      acts.seeds = seeds ?? null;
      const enc = b.device.createCommandEncoder({ label: 'train forward' });
      await model.encodeForward(enc, ids, acts, dropout, live);
      const R = rows.length;
      const scored = { rows: rowsBuf, targets, R };
      const head = await model.encodeTrainScores(enc, acts, scored, live);
      // The three (R) outputs copied into one mappable buffer by the same submit: one readback.
      const staging = b.device.createBuffer({ label: 'scores (3,R):readback', size: 12 * R, usage: MAP_READ | COPY_DST });
      [head.logp, head.log1mq, head.lse].forEach((t, i) => enc.copyBufferToBuffer(t.buffer, t.offset ?? 0, staging, 4 * R * i, 4 * R));
      b.device.queue.submit([enc.finish()]);
      await staging.mapAsync(MAP_READ);
      const all = new Float32Array(staging.getMappedRange().slice(0));
      staging.destroy();
      const [logp, log1mq, lse] = [0, 1, 2].map((i) => all.subarray(i * R, (i + 1) * R));
      const rowStarts = [0];
      for (const q of seqs) rowStarts.push(rowStarts.at(-1)! + q.rows.length);
      return new TrainPass(model, acts, scored, rows, rowStarts, head, dropout, live, { logp, log1mq, lse });
    } catch (e) {
      for (const t of live) b.destroy(t);
      throw e;
    }
  }

  /** Final hidden states (after the last norm) of all scored rows, (R, C), for saliency clustering; one readback per pass. */
  hiddenRows(): Promise<Float32Array> {
    this.hidden ??= (async () => {
      const C = this.model.config.hiddenSize;
      const all = await this.model.buffers.readF32(this.acts.xnF, this.acts.T * C);
      const out = new Float32Array(this.scored.R * C);
      this.rowList.forEach((r, i) => out.set(all.subarray(r * C, (r + 1) * C), i * C));
      return out;
    })();
    return this.hidden;
  }

  /** Sequence i's share of the pass (of `forwardPacked`'s sequences, in order): its rows' scores and hidden states. */
  sequence(i: number): SequenceForward {
    const [from, to] = [this.rowStarts[i], this.rowStarts[i + 1]];
    const { logp, log1mq, lse } = this.scores;
    const C = this.model.config.hiddenSize;
    return {
      scores: { logp: logp.subarray(from, to), log1mq: log1mq.subarray(from, to), lse: lse.subarray(from, to) },
      hiddenRows: async () => (await this.hiddenRows()).subarray(from * C, to * C),
    };
  }

  /**
   * Backward pass for per-row coefficients `coef` (R) (see `lossCoefficients`); adds the LoRA
   * gradients into `model.lora.grads`, in one submit with what `then` records after it (the
   * optimizer step, so that a step's last backward and its update are one submit). The pass's
   * buffers are then recycled (`BufferManager.recycle`): the next pass of the same shape takes them
   * back, and with them the bind groups made for them.
   */
  async backward(coef: Float32Array, then?: (enc: GPUCommandEncoder) => Promise<void>): Promise<void> {
    const R = this.scored.R;
    if (coef.length !== R) throw new NlftError(`${coef.length} loss coefficients for ${R} scored positions`, 'bad-position');
    const b = this.model.buffers;
    const tmp: TrackedBuffer[] = [];
    try {
      const enc = b.device.createCommandEncoder({ label: 'backward' });
      const coefBuf = b.uploadIn(tmp, 'loss coefficients (R)', coef);
      await this.model.encodeBackward(enc, this.acts, this.scored, this.head, coefBuf, this.dropout, tmp);
      await then?.(enc);
      // No wait: what reads the gradients next (the optimizer step, a readback) is queued behind it.
      b.device.queue.submit([enc.finish()]);
      b.recycle([...this.live, ...tmp]);
      this.live.length = 0;
      tmp.length = 0;
    } finally {
      for (const t of tmp) b.destroy(t);
      this.release();
    }
  }

  /** Free the activations (also done by `backward`). */
  release(): void {
    for (const t of this.live) this.model.buffers.destroy(t);
    this.live.length = 0;
  }
}
