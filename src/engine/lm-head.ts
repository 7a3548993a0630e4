/**
 * The fused lm-head and cross-entropy, forward and backward side by side. Only chosen rows of the
 * final hidden states are scored, and no (tokens x vocab) logits buffer ever exists:
 *   forward:  h[rows] (R,C) @ W(V,C)^T -> lse, log q_y, log(1 - q_y) (R), logits only in registers;
 *   training forward: the same, and each row's unit gradient g (R,C) = dz' @ W, where dz' is -1 at
 *             the target and the softmax without the target elsewhere: every loss term of a row is
 *             a multiple of g (docs/method.md §5), known before any coefficient is;
 *   backward: dxn (T,C), rows[r] += coef_r * g_r, the coefficients from the host (train-pass.ts
 *             `lossCoefficients`).
 * g is made a chunk of rows at a time from their kept logits (rows x V for those rows only), or,
 * when such a chunk would be too large for the pass, one vocabulary chunk at a time recomputing the
 * logits. The lm-head weight is frozen (tied or not), so the backward yields only the hidden
 * states' gradient.
 */
import { type TrackedBuffer, viewOf } from './buffers.ts';
import { type GpuWeight, type LmheadScratch, type Ops, paddedVocab, type Tuning } from './ops.ts';

/** The rows a pass scores: positions (R) in the T tokens and the target id (R) each one predicts. */
export interface ScoredRows {
  rows: TrackedBuffer;
  targets: TrackedBuffer;
  R: number;
}

/** What the forward wrote, (R) each. */
export interface LmHeadOut {
  lse: TrackedBuffer;
  logp: TrackedBuffer;
  log1mq: TrackedBuffer;
}

/** What the training forward wrote: the scores and each row's unit gradient g (R,C). */
export interface LmHeadTrainOut extends LmHeadOut {
  grad: TrackedBuffer;
}

/** The (R) outputs of a pass over R rows and the tiles' scratch for `tileRows` rows at a time, registered in `live`. */
function allocScores(ops: Ops, R: number, V: number, live: TrackedBuffer[], tileRows = R): LmHeadOut & { scratch: LmheadScratch } {
  const mk = (label: string) => ops.buffers.f32In(live, label, R);
  const scratch = ops.lmheadScratch(tileRows, V);
  live.push(scratch.part, scratch.tlogit);
  return { lse: mk('lse (R)'), logp: mk('logp (R)'), log1mq: mk('log(1-q) (R)'), scratch };
}

/** h (T,C), W (V,C) -> lse, logp = log q_y, log1mq = log(1 - q_y) (R), for the scored rows; buffers registered in `live`. */
export async function lmHeadForward(
  ops: Ops,
  enc: GPUCommandEncoder,
  w: GpuWeight,
  h: TrackedBuffer,
  s: ScoredRows,
  live: TrackedBuffer[],
): Promise<LmHeadOut> {
  const { scratch, ...out } = allocScores(ops, s.R, w.rows, live);
  await ops.lmhead(enc, { h, rows: s.rows, targets: s.targets, R: s.R, w, ...out, scratch });
  return out;
}

/** Floats a kept-logits chunk holds at most when it is more than one step of rows (4 MiB). */
const KEPT_LOGITS_FLOATS = 1 << 20;
/** Floats under which a chunk is kept whatever the pass's length (1 MiB). */
const KEPT_LOGITS_SMALL = 1 << 18;

/**
 * The row step of kept-logits chunks for `tuning`: the lm-head's or matmul_dx's tile rows, whichever
 * is larger, so no chunk runs a tile half idle, rounded up to 64 rows (a chunk starts at a bindable
 * offset, 256 bytes, into the rows' (R) buffers).
 */
export function keptRowStep(tuning: Pick<Tuning, 'lmhead' | 'matmulDx'>): number {
  return Math.ceil(Math.max(tuning.lmhead.TM * tuning.lmhead.WGY, tuning.matmulDx.TM * tuning.matmulDx.WGY) / 64) * 64;
}

/**
 * Rows per chunk when `lmHeadForwardGrad` keeps a chunk of rows' logits, or 0 when it recomputes
 * them instead: as many rows as 4 MiB holds, in steps of `step` (`keptRowStep`), at least one step
 * and at most R; a chunk is at most half the pass's T tokens (so nothing near a tokens x vocab
 * buffer exists: a small vocabulary's packed pass keeps chunks of T/2 rows or fewer) unless it is
 * under 1 MiB; 0 when not even one step of rows is.
 */
export function keptLogitRows(R: number, T: number, V: number, step: number): number {
  const vp = paddedVocab(V);
  const rows = Math.min(R, step * Math.max(1, Math.floor(KEPT_LOGITS_FLOATS / (step * vp))));
  if (rows * 2 <= T || rows * vp <= KEPT_LOGITS_SMALL) return rows;
  return Math.floor(T / (2 * step)) * step;
}

/**
 * The training forward of the lm-head: `lmHeadForward`'s scores and each scored row's unit gradient
 * g (R,C) (see the file's header), for a pass of T tokens. With `keep` rows a chunk (default
 * `keptLogitRows`): per chunk, z (rows,V) kept -> lse, log q, log(1-q) -> dz' in place -> g = dz' @ W,
 * two lm-head products a row; with 0: the scores, then per vocabulary chunk (`Tuning.ceChunk`) the
 * logits recomputed into dz' (R,VC) and g += dz' @ W[chunk], three. Buffers registered in `live`.
 */
export async function lmHeadForwardGrad(
  ops: Ops,
  enc: GPUCommandEncoder,
  w: GpuWeight,
  h: TrackedBuffer,
  T: number,
  s: ScoredRows,
  live: TrackedBuffer[],
  keep = keptLogitRows(s.R, T, w.rows, keptRowStep(ops.tuning)),
): Promise<LmHeadTrainOut> {
  const [R, V, C] = [s.R, w.rows, w.cols];
  const alloc = (label: string, floats: number) => ops.buffers.f32In(live, label, floats);
  const grad = alloc('unit gradient g (R,C)', R * C);
  if (keep === 0) {
    const { scratch, ...out } = allocScores(ops, R, V, live);
    const rows = { h, rows: s.rows, targets: s.targets, R, w, ...out, scratch };
    await ops.lmhead(enc, rows);
    const VC = Math.min(ops.tuning.ceChunk, paddedVocab(V));
    const dz = alloc("dz' chunk (R,VC)", R * VC);
    for (let vOff = 0; vOff < V; vOff += VC) {
      // h[rows], lse, log(1-q) -> dz' (R,VC) for vocabulary columns vOff..vOff+VC-1
      await ops.lmheadDz(enc, { ...rows, dz, vOff, VC });
      // g (R,C) += dz' W[chunk]
      await ops.matmulDx(enc, { dy: dz, w, dx: grad, T: R, N: VC, nOff: vOff, beta: vOff === 0 ? 0 : 1 });
    }
    return { ...out, grad };
  }
  const { scratch, ...scores } = allocScores(ops, R, V, live, keep);
  const z = alloc('kept logits (rows,V)', keep * paddedVocab(V));
  for (let r0 = 0; r0 < R; r0 += keep) {
    const n = Math.min(keep, R - r0);
    const part = (t: TrackedBuffer, floats: number) => viewOf(t, r0 * floats * 4, n * floats * 4);
    const [rows, targets, lse, logp, log1mq] = [s.rows, s.targets, scores.lse, scores.logp, scores.log1mq].map((t) => part(t, 1));
    const chunk = { h, rows, targets, R: n, w, lse, logp, log1mq, scratch };
    // h[rows] (n,C) -> z (n,V) kept, lse, logp, log1mq (n)
    await ops.lmheadKeep(enc, { ...chunk, z });
    // z -> dz' in place
    await ops.lmheadDzRows(enc, { ...chunk, z });
    // g (n,C) = dz' (n,V) @ W (V,C)
    await ops.matmulDx(enc, { dy: z, w, dx: part(grad, C), T: n, N: paddedVocab(V), beta: 0 });
  }
  return { ...scores, grad };
}

/**
 * Backward of `lmHeadForwardGrad` for the rows' loss coefficients `coef` (R) (train-pass.ts
 * `lossCoefficients`): returns dxn (T,C), the gradient of the final normed hidden states,
 * coef_r * g_r at the scored rows and zero elsewhere. Buffers registered in `live`.
 */
export async function lmHeadBackward(
  ops: Ops,
  enc: GPUCommandEncoder,
  w: GpuWeight,
  T: number,
  s: ScoredRows,
  fwd: LmHeadTrainOut,
  coef: TrackedBuffer,
  live: TrackedBuffer[],
): Promise<TrackedBuffer> {
  const dxn = ops.buffers.f32In(live, 'd final norm (T,C)', T * w.cols);
  enc.clearBuffer(dxn.buffer);
  // dxn[rows[r]] += coef[r] * g[r]  (T,C)
  await ops.scatterRows(enc, { w, rows: s.rows, coef, dh: fwd.grad, dxn, R: s.R });
  return dxn;
}
