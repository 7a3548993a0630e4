/**
 * The fused lm-head and cross-entropy, forward and backward side by side. Only chosen rows of the
 * final hidden states are scored, and no (rows x vocab) logits buffer ever exists:
 *   forward:  h[rows] (R,C) @ W(V,C)^T -> lse, log q_y, log(1 - q_y) (R), logits only in registers;
 *   backward: per row r, coefficients (a_r, dz_y) (see train-pass.ts `lossCoefficients`) ->
 *             dz (R,VC) one vocabulary chunk at a time -> dh (R,C) = dz @ W[chunk] -> dxn (T,C).
 * The lm-head weight is frozen (tied or not), so the backward yields only the hidden states' gradient.
 */
import type { TrackedBuffer } from './buffers.ts';
import type { GpuWeight, LmheadScratch, Ops } from './ops.ts';

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
