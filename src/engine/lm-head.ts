/**
 * The fused lm-head and cross-entropy, forward and backward side by side. Only chosen rows of the
 * final hidden states are scored, and no (rows x vocab) logits buffer ever exists:
 *   forward:  h[rows] (R,C) @ W(V,C)^T -> lse, log q_y, log(1 - q_y) (R), logits only in registers;
 *   backward: per row r, coefficients (a_r, dz_y) (see train-pass.ts `lossCoefficients`) ->
 *             dz (R,VC) one vocabulary chunk at a time -> dh (R,C) = dz @ W[chunk] -> dxn (T,C).
 * When each row's loss-term weights are known before the forward (SFT, fixed saliency),
 * `lmHeadForwardBackward` does both at once, a chunk of rows at a time: the chunk's logits are kept
 * (rows x V for those rows only) and turned into dz in place, so the backward does not recompute them.
 * The lm-head weight is frozen (tied or not), so the backward yields only the hidden states' gradient.
 */
import { type TrackedBuffer, viewOf } from './buffers.ts';
import { type GpuWeight, type LmheadScratch, type Ops, paddedVocab, type Tuning } from './ops.ts';

/** The rows a pass scores: positions (R) in the T tokens and the target id (R) each one predicts. */
export interface ScoredRows {
  rows: TrackedBuffer;
  targets: TrackedBuffer;
  R: number;
}

/** What the forward wrote, (R) each, and the scratch its backward reuses. */
export interface LmHeadOut {
  lse: TrackedBuffer;
  logp: TrackedBuffer;
  log1mq: TrackedBuffer;
  scratch: LmheadScratch;
  /** dxn (T,C), the scored rows' gradient, when the forward ran the backward too (`lmHeadForwardBackward`). */
  dxn?: TrackedBuffer;
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
  const mk = (label: string) => ops.buffers.f32In(live, label, s.R);
  const out = { lse: mk('lse (R)'), logp: mk('logp (R)'), log1mq: mk('log(1-q) (R)') };
  const scratch = ops.lmheadScratch(s.R, w.rows);
  live.push(scratch.part, scratch.tlogit);
  await ops.lmhead(enc, { h, rows: s.rows, targets: s.targets, R: s.R, w, ...out, scratch });
  return { ...out, scratch };
}

/**
 * Backward of `lmHeadForward` for the loss coefficients `coef` (R,2): returns dxn (T,C), the
 * gradient of the final normed hidden states (zero off the scored rows). Buffers registered in `live`.
 */
export async function lmHeadBackward(
  ops: Ops,
  enc: GPUCommandEncoder,
  w: GpuWeight,
  h: TrackedBuffer,
  T: number,
  s: ScoredRows,
  fwd: LmHeadOut,
  coef: TrackedBuffer,
  live: TrackedBuffer[],
): Promise<TrackedBuffer> {
  const [R, V, C] = [s.R, w.rows, w.cols];
  const VC = Math.min(ops.tuning.ceChunk, Math.ceil(V / 4) * 4);
  const alloc = (label: string, floats: number) => ops.buffers.f32In(live, label, floats);
  const dz = alloc('dlogits chunk (R,VC)', R * VC);
  const dh = alloc('dh (R,C)', R * C);
  for (let vOff = 0; vOff < V; vOff += VC) {
    // h[rows], lse, coef -> dz (R,VC) for vocabulary columns vOff..vOff+VC-1
    await ops.lmheadDz(enc, { h, rows: s.rows, targets: s.targets, R, w, lse: fwd.lse, coef, dz, vOff, VC, scratch: fwd.scratch });
    // dh (R,C) += dz W[chunk]
    await ops.matmulDx(enc, { dy: dz, w, dx: dh, T: R, N: VC, nOff: vOff, beta: vOff === 0 ? 0 : 1 });
  }
  const dxn = alloc('d final norm (T,C)', T * C);
  enc.clearBuffer(dxn.buffer);
  // dxn[rows[r]] += dh[r]  (T,C)
  await ops.scatterRows(enc, { w, rows: s.rows, dh, dxn, R });
  return dxn;
}

/** Floats a kept-logits chunk holds at most when it is more than one step of rows (4 MiB). */
const KEPT_LOGITS_FLOATS = 1 << 20;
/** Floats under which a chunk is kept whatever the pass's length (1 MiB). */
const KEPT_LOGITS_SMALL = 1 << 18;

/**
 * The row step of kept-logits chunks for `tuning`: 64 rows (a bindable offset into the rows' (R)
 * buffers), or the lm-head's or matmul_dx's tile rows when larger, so no chunk runs a tile half idle.
 */
export function keptRowStep(tuning: Pick<Tuning, 'lmhead' | 'matmulDx'>): number {
  return Math.max(64, tuning.lmhead.TM * tuning.lmhead.WGY, tuning.matmulDx.TM * tuning.matmulDx.WGY);
}

/**
 * Rows per chunk when `lmHeadForwardBackward` keeps a chunk of rows' logits, or 0 when it does
 * not: as many rows as 4 MiB holds, in steps of `step` (`keptRowStep`), at least one step and at
 * most R; kept only while the chunk is at most half the pass's T tokens (so nothing near a
 * tokens x vocab buffer exists) or under 1 MiB.
 */
export function keptLogitRows(R: number, T: number, V: number, step: number): number {
  const vp = paddedVocab(V);
  const rows = Math.min(R, step * Math.max(1, Math.floor(KEPT_LOGITS_FLOATS / (step * vp))));
  return rows * 2 <= T || rows * vp <= KEPT_LOGITS_SMALL ? rows : 0;
}

/**
 * Forward and backward of the lm-head at once, for rows whose loss terms are known before the
 * forward: `terms` (R,2) holds each row's likelihood and unlikelihood weight, and the GPU makes
 * their coefficients (ops.lmheadCoefs) once the forward has each row's log q. Returns what
 * `lmHeadForward` does and dxn (T,C), the gradient `lmHeadBackward` gives for the coefficients
 * `lossCoefficients` makes of the same weights. When `keptLogitRows` allows, per chunk of rows:
 * z (rows,V) kept -> lse, log q, log(1-q) -> coefficients -> dz in place -> dh = dz @ W ->
 * dxn[rows] += dh, two lm-head products a row instead of three (equal up to the order of the dh
 * sums); else `lmHeadForward` then `lmHeadBackward`. Buffers registered in `live`.
 */
export async function lmHeadForwardBackward(
  ops: Ops,
  enc: GPUCommandEncoder,
  w: GpuWeight,
  h: TrackedBuffer,
  T: number,
  s: ScoredRows,
  terms: TrackedBuffer,
  live: TrackedBuffer[],
): Promise<Required<LmHeadOut>> {
  const [R, V, C] = [s.R, w.rows, w.cols];
  const alloc = (label: string, floats: number) => ops.buffers.f32In(live, label, floats);
  const coef = alloc('loss coefficients (R,2)', 2 * R);
  const RC = keptLogitRows(R, T, V, keptRowStep(ops.tuning));
  if (RC === 0) {
    const fwd = await lmHeadForward(ops, enc, w, h, s, live);
    await ops.lmheadCoefs(enc, { R, w, logp: fwd.logp, log1mq: fwd.log1mq, terms, coef });
    return { ...fwd, dxn: await lmHeadBackward(ops, enc, w, h, T, s, fwd, coef, live) };
  }
  const out = { lse: alloc('lse (R)', R), logp: alloc('logp (R)', R), log1mq: alloc('log(1-q) (R)', R) };
  const scratch = ops.lmheadScratch(RC, V);
  live.push(scratch.part, scratch.tlogit);
  const z = alloc('kept logits (rows,V)', RC * paddedVocab(V));
  const dh = alloc('dh (rows,C)', RC * C);
  const dxn = alloc('d final norm (T,C)', T * C);
  enc.clearBuffer(dxn.buffer);
  for (let r0 = 0; r0 < R; r0 += RC) {
    const n = Math.min(RC, R - r0);
    const part = (t: TrackedBuffer, floats: number) => viewOf(t, r0 * floats * 4, n * floats * 4);
    const [rows, targets, lse, logp, log1mq] = [s.rows, s.targets, out.lse, out.logp, out.log1mq].map((t) => part(t, 1));
    // h[rows] (n,C) -> z (n,V) kept, lse, logp, log1mq (n)
    await ops.lmheadKeep(enc, { h, rows, targets, R: n, w, lse, logp, log1mq, scratch, z });
    // the rows' term weights (n,2) -> coefficients (n,2) -> dz in place
    const c = part(coef, 2);
    await ops.lmheadCoefs(enc, { R: n, w, logp, log1mq, terms: part(terms, 2), coef: c });
    await ops.lmheadDzRows(enc, { targets, R: n, w, lse, coef: c, z });
    // dh (n,C) = dz (n,V) @ W (V,C)
    await ops.matmulDx(enc, { dy: z, w, dx: dh, T: n, N: paddedVocab(V), beta: 0 });
    // dxn[rows[r]] += dh[r]
    await ops.scatterRows(enc, { w, rows, dh, dxn, R: n });
  }
  return { ...out, scratch, dxn };
}
