/**
 * The linear layer with a LoRA adapter, forward and backward side by side:
 *   y = beta*y + x W^T + s * dropout(x) A^T B^T,   s = alpha / r
 * W (out,in) is a frozen base weight (f32/q8/q4, dequantized inside the matmul tiles); A (r,in) and
 * B (out,r) are the trained factors. The forward keeps u = dropout(x) A^T (T,r) for dB. The dropout
 * mask is never stored: both passes hash it from the same seed (`dropoutSeed`), so the backward
 * sees exactly the forward's mask. The pass's seed is on the GPU (`PassContext.seed`, written once
 * per pass); each dispatch adds only its (layer, projection) salt, a constant of the run. Also the shared context of every layer function of a pass.
 */
import type { LlamaConfig } from '../model/config.ts';
import { PROJECTIONS, type Projection } from '../model/weights.ts';
import type { ForwardActs, LinearScratch } from './activations.ts';
import type { TrackedBuffer } from './buffers.ts';
import type { LoraParams } from './lora-params.ts';
import type { GpuWeight, Ops } from './ops.ts';

/** LoRA dropout of a pass: rate and the seed the masks are hashed from (0 rate = off). */
export interface DropoutSpec {
  rate: number;
  seed: number;
  /**
   * A packed pass's seed of each sequence, in order: each is masked exactly as in a pass of its own
   * with its seed. Absent: every sequence takes `seed`.
   */
  seeds?: readonly number[];
}

/** The salt of one (layer, projection) input's dropout mask, a constant of the model's shape. */
export function dropoutSalt(layer: number, proj: Projection): number {
  return (Math.imul(layer + 1, 0x9e3779b1) ^ Math.imul(PROJECTIONS.indexOf(proj) + 1, 0x85ebca77)) >>> 0;
}

/** The mask seed of a pass seed and a salt: the CPU twin of kernels/dropout.wgsl `mask_seed`. */
export function dropoutSeed(passSeed: number, salt: number): number {
  let h = (passSeed ^ salt) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

/**
 * What the layer functions of one pass share: the encoder they record into, the kernels, the
 * model's shapes and adapters, the pass's dropout and its activations.
 */
export interface PassContext {
  enc: GPUCommandEncoder;
  ops: Ops;
  config: LlamaConfig;
  lora: LoraParams | null;
  dropout: DropoutSpec;
  /** The pass's dropout seeds on the GPU (`Ops.passSeed`: each token's sequence seed and position); null when dropout is off. */
  seed: TrackedBuffer | null;
  acts: ForwardActs;
}

/**
 * Forward of projection `p` of layer `layer`:
 *   x (T,in) -> out (T,out) (beta 1 adds onto out, the residual stream), u (T,r) = dropout(x) A^T.
 * `u` is where the adapter's intermediate goes; without an adapter on (layer, p) only the base runs.
 * One row (T = 1, a decode step) runs kernels/matvec.wgsl: u, then the base with s u B^T added in.
 */
export async function linearForward(
  ctx: PassContext,
  layer: number,
  p: Projection,
  w: GpuWeight,
  x: TrackedBuffer,
  out: TrackedBuffer,
  beta: 0 | 1,
  u: TrackedBuffer | undefined,
): Promise<void> {
  const { enc, ops, dropout, seed, acts } = ctx;
  const T = acts.T;
  const e = u ? ctx.lora?.entry(layer, p) : undefined;
  // One row (a decode step): matrix-vector kernels.
  const row = T === 1;
  if (!e) {
    // out = beta*out + x W^T
    await (row ? ops.matvec(enc, { x, w, out, beta }) : ops.matmul(enc, { x, w, out, T, beta }));
    return;
  }
  const { A, B } = ctx.lora!.weights(e);
  let xa = x;
  if (dropout.rate > 0) {
    // xd (T,in) = dropout(x)
    await ops.dropout(enc, { x, out: acts.xd!, n: T * e.inF, width: e.inF, seed: seed!, salt: dropoutSalt(layer, p), rate: dropout.rate });
    xa = acts.xd!;
  }
  // u (T,r) = dropout(x) A^T
  await (row ? ops.matvec(enc, { x: xa, w: A, out: u! }) : ops.matmul(enc, { x: xa, w: A, out: u!, T }));
  // out = beta*out + x W^T + s u B^T, one kernel
  const lora = { u: u!, B, scale: e.scale };
  await (row ? ops.matvec(enc, { x, w, out, beta, lora }) : ops.matmul(enc, { x, w, out, T, beta, lora }));
}

/**
 * Backward of `linearForward`, given its input x (T,in) and u (T,r):
 *   dOut (T,out) -> dIn (T,in) = beta*dIn + dOut W + s * dropout'(dOut B A)   (beta 1 adds onto dIn)
 *   dB (out,r) += s dOut^T u,   dA (r,in) += s g^T dropout(x),   g = dOut B (T,r)
 * The base weight gets no gradient; the LoRA gradients accumulate into the model's gradient buffer.
 * `dIn` null: no adapter is below this input, so only the LoRA gradients are made (no dIn product).
 */
export async function linearBackward(
  ctx: PassContext,
  layer: number,
  p: Projection,
  w: GpuWeight,
  x: TrackedBuffer,
  u: TrackedBuffer | undefined,
  dOut: TrackedBuffer,
  dIn: TrackedBuffer | null,
  beta: 0 | 1,
  scratch: LinearScratch,
): Promise<void> {
  const { enc, ops, dropout, seed, acts } = ctx;
  const T = acts.T;
  const e = ctx.lora?.entry(layer, p);
  if (!e) {
    // dIn = beta*dIn + dOut W
    if (dIn) await ops.matmulDx(enc, { dy: dOut, w, dx: dIn, T, beta });
    return;
  }
  const lora = ctx.lora!;
  const { A, B } = lora.weights(e);
  const { dA, dB } = lora.gradViews(e);
  const { g } = scratch;
  const salt = dropoutSalt(layer, p);
  let xa = x;
  if (dropout.rate > 0) {
    // xd (T,in) = dropout(x), the forward's mask
    await ops.dropout(enc, { x, out: acts.xd!, n: T * e.inF, width: e.inF, seed: seed!, salt, rate: dropout.rate });
    xa = acts.xd!;
  }
  // dB += s dOut^T u
  await ops.matmulTn(enc, { a: dOut, b: u!, out: dB, T, M: e.outF, P: e.r, alpha: e.scale, beta: 1 });
  // g (T,r) = dOut B
  await ops.matmulDx(enc, { dy: dOut, w: B, dx: g, T });
  // dA += s g^T dropout(x)
  await ops.matmulTn(enc, { a: g, b: xa, out: dA, T, M: e.r, P: e.inF, alpha: e.scale, beta: 1 });
  if (!dIn) return;
  // dIn = beta*dIn + dOut W + s dropout'(g A), one kernel
  const mask = dropout.rate > 0 ? { seed: seed!, salt, rate: dropout.rate } : undefined;
  await ops.matmulDx(enc, { dy: dOut, w, dx: dIn, T, beta, lora: { g, A, scale: e.scale, dropout: mask } });
}
