/**
 * One Llama decoder layer as two residual blocks, each with its forward and backward side by side
 * (llm.c style):
 *   attention:  x_mid = x_in + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))),   xn1 = rmsnorm(x_in)
 *   MLP:        x_out = x_mid + down(silu(gate(xn2)) * up(xn2)),              xn2 = rmsnorm(x_mid)
 * The forwards write the layer's activations (activations.ts); the backwards read them and carry
 * the residual stream's gradient `dx` from d x_out down to d x_in. Each projection is a LoRA linear
 * (lora-linear.ts). Shapes: C hidden, F intermediate, H query heads, KVH kv heads, D head dim.
 */
import { PROJECTIONS, type Projection } from '../model/weights.ts';
import type { LayerGrads } from './activations.ts';
import type { TrackedBuffer } from './buffers.ts';
import { linearBackward, linearForward, type PassContext } from './lora-linear.ts';
import type { GpuWeight } from './ops.ts';

/** One layer's frozen weights on the GPU. */
export interface GpuLayer {
  inputNorm: TrackedBuffer;
  postNorm: TrackedBuffer;
  proj: Record<Projection, GpuWeight>;
}

/** Attention block forward of layer i: x_in (T,C) -> x_mid (T,C); with a KV cache (generation) also its rows. */
async function attentionForward(ctx: PassContext, i: number, L: GpuLayer): Promise<void> {
  const { enc, ops, config: c, acts } = ctx;
  const { T, cs, seg, kv } = acts;
  const [C, D, H, KVH] = [c.hiddenSize, c.headDim, c.numHeads, c.numKvHeads];
  const a = acts.layers[i];
  // x_in (T,C) -> xn1 (T,C), rstd1 (T)
  await ops.rmsnorm(enc, { x: a.xIn, w: L.inputNorm, out: a.xn1, rstd: a.rstd1, T, C, eps: c.rmsNormEps });
  // xn1 -> q (T,H*D)
  await linearForward(ctx, i, 'q_proj', L.proj.q_proj, a.xn1, a.q, 0, a.loraU.q_proj);
  // xn1 -> k (T,KVH*D)
  await linearForward(ctx, i, 'k_proj', L.proj.k_proj, a.xn1, a.k, 0, a.loraU.k_proj);
  // xn1 -> v (T,KVH*D)
  await linearForward(ctx, i, 'v_proj', L.proj.v_proj, a.xn1, a.v, 0, a.loraU.v_proj);
  // q, k rotated in place (RoPE)
  await ops.rope(enc, { x: a.q, cs, T, nHeads: H, D });
  await ops.rope(enc, { x: a.k, cs, T, nHeads: KVH, D });
  if (kv?.step) {
    // decode: k, v (1,KVH*D) -> cache row P; q (1,H*D) against cache rows 0..P -> att (1,H*D)
    const [kc, vc] = [kv.cache.k[i], kv.cache.v[i]];
    await ops.attentionDecode(enc, { q: a.q, k: a.k, v: a.v, kc, vc, step: kv.step, out: a.att, H, KVH, D });
  } else {
    if (kv) {
      // k, v -> cache rows 0..T-1 (the prompt)
      enc.copyBufferToBuffer(a.k.buffer, 0, kv.cache.k[i].buffer, 0, a.k.size);
      enc.copyBufferToBuffer(a.v.buffer, 0, kv.cache.v[i].buffer, 0, a.v.size);
    }
    // q (T,H*D), k, v (T,KVH*D) -> att (T,H*D), attLse (H,T)
    await ops.attention(enc, { q: a.q, k: a.k, v: a.v, out: a.att, lse: a.attLse, seg, T, H, KVH, D });
  }
  // x_mid = x_in
  if (a.xMid !== a.xIn) enc.copyBufferToBuffer(a.xIn.buffer, 0, a.xMid.buffer, 0, a.xIn.size);
  // x_mid += o(att) (T,C)
  await linearForward(ctx, i, 'o_proj', L.proj.o_proj, a.att, a.xMid, 1, a.loraU.o_proj);
}

/**
 * Attention block backward of layer i: g.dx = d x_mid (T,C) -> d x_in (T,C); LoRA gradients of q, k, v, o.
 * Without `plan.carry` d x_in is not made, and without `plan.attention` neither is dAtt (o's LoRA gradients only).
 */
async function attentionBackward(ctx: PassContext, i: number, L: GpuLayer, g: LayerGrads, plan: LayerBackwardPlan): Promise<void> {
  const { enc, ops, config: c, acts } = ctx;
  const { T, cs, seg } = acts;
  const [C, D, H, KVH] = [c.hiddenSize, c.headDim, c.numHeads, c.numKvHeads];
  const a = acts.layers[i];
  const { dx, dAtt, dq, dk, dv, delta, dXn, lin } = g;
  // d x_mid -> dAtt (T,H*D)
  await linearBackward(ctx, i, 'o_proj', L.proj.o_proj, a.att, a.loraU.o_proj, dx, plan.input.o_proj ? dAtt : null, 0, lin);
  if (!plan.attention) return;
  // dAtt -> dq (T,H*D), dk, dv (T,KVH*D); probabilities recomputed from attLse, delta (H,T) scratch
  await ops.attentionBackward(enc, { q: a.q, k: a.k, v: a.v, out: a.att, lse: a.attLse, dout: dAtt, delta, dq, dk, dv, seg, T, H, KVH, D });
  // dq, dk rotated back in place (RoPE's transpose)
  await ops.rope(enc, { x: dq, cs, T, nHeads: H, D, dir: -1 });
  await ops.rope(enc, { x: dk, cs, T, nHeads: KVH, D, dir: -1 });
  const dIn = (p: Projection) => (plan.input[p] ? dXn : null);
  // dq -> dXn (T,C)
  await linearBackward(ctx, i, 'q_proj', L.proj.q_proj, a.xn1, a.loraU.q_proj, dq, dIn('q_proj'), 0, lin);
  // dXn += from dk
  await linearBackward(ctx, i, 'k_proj', L.proj.k_proj, a.xn1, a.loraU.k_proj, dk, dIn('k_proj'), 1, lin);
  // dXn += from dv
  await linearBackward(ctx, i, 'v_proj', L.proj.v_proj, a.xn1, a.loraU.v_proj, dv, dIn('v_proj'), 1, lin);
  // dx += norm'(dXn): d x_in
  if (plan.carry) await ops.rmsnormBackward(enc, { x: a.xIn, w: L.inputNorm, rstd: a.rstd1, dy: dXn, dx, T, C });
}

/** MLP block forward of layer i: x_mid (T,C) -> x_out (T,C), written to `xOut` (the next layer's input). */
async function mlpForward(ctx: PassContext, i: number, L: GpuLayer, xOut: TrackedBuffer): Promise<void> {
  const { enc, ops, config: c, acts } = ctx;
  const T = acts.T;
  const [C, F] = [c.hiddenSize, c.intermediateSize];
  const a = acts.layers[i];
  // x_mid (T,C) -> xn2 (T,C), rstd2 (T)
  await ops.rmsnorm(enc, { x: a.xMid, w: L.postNorm, out: a.xn2, rstd: a.rstd2, T, C, eps: c.rmsNormEps });
  // xn2 -> gate (T,F)
  await linearForward(ctx, i, 'gate_proj', L.proj.gate_proj, a.xn2, a.gate, 0, a.loraU.gate_proj);
  // xn2 -> up (T,F)
  await linearForward(ctx, i, 'up_proj', L.proj.up_proj, a.xn2, a.up, 0, a.loraU.up_proj);
  // hm (T,F) = silu(gate) * up
  await ops.swiglu(enc, { gate: a.gate, up: a.up, h: a.hm, n: T * F });
  // x_out = x_mid
  if (xOut !== a.xMid) enc.copyBufferToBuffer(a.xMid.buffer, 0, xOut.buffer, 0, a.xMid.size);
  // x_out += down(hm) (T,C)
  await linearForward(ctx, i, 'down_proj', L.proj.down_proj, a.hm, xOut, 1, a.loraU.down_proj);
}

/**
 * MLP block backward of layer i: g.dx = d x_out (T,C) -> d x_mid (T,C); LoRA gradients of gate, up, down.
 * Without `plan.mlpCarry` d x_mid is not made, and without `plan.mlp` neither is dF (down's LoRA gradients only).
 */
async function mlpBackward(ctx: PassContext, i: number, L: GpuLayer, g: LayerGrads, plan: LayerBackwardPlan): Promise<void> {
  const { enc, ops, config: c, acts } = ctx;
  const T = acts.T;
  const [C, F] = [c.hiddenSize, c.intermediateSize];
  const a = acts.layers[i];
  const { dx, dF, dGate, dUp, dXn, lin } = g;
  // d x_out -> dF (T,F)
  await linearBackward(ctx, i, 'down_proj', L.proj.down_proj, a.hm, a.loraU.down_proj, dx, plan.input.down_proj ? dF : null, 0, lin);
  if (!plan.mlp) return;
  // dF -> dGate, dUp (T,F)
  await ops.swigluBackward(enc, { gate: a.gate, up: a.up, dh: dF, dgate: dGate, dup: dUp, n: T * F });
  const dIn = (p: Projection) => (plan.input[p] ? dXn : null);
  // dGate -> dXn (T,C)
  await linearBackward(ctx, i, 'gate_proj', L.proj.gate_proj, a.xn2, a.loraU.gate_proj, dGate, dIn('gate_proj'), 0, lin);
  // dXn += from dUp
  await linearBackward(ctx, i, 'up_proj', L.proj.up_proj, a.xn2, a.loraU.up_proj, dUp, dIn('up_proj'), 1, lin);
  // dx += norm'(dXn): d x_mid
  if (plan.mlpCarry) await ops.rmsnormBackward(enc, { x: a.xMid, w: L.postNorm, rstd: a.rstd2, dy: dXn, dx, T, C });
}

/** Layer i forward: x_in (T,C) -> x_out (T,C), the next layer's input or, after the last layer, `acts.xOut`. */
export async function layerForward(ctx: PassContext, i: number, L: GpuLayer): Promise<void> {
  const { acts } = ctx;
  await attentionForward(ctx, i, L);
  await mlpForward(ctx, i, L, i + 1 < acts.layers.length ? acts.layers[i + 1].xIn : acts.xOut);
}

/** Where layer i's backward stops (`layerBackwardPlan`): each flag says what it makes. */
export interface LayerBackwardPlan {
  /** d x_in, and what only it needs (q/k/v input gradients, the input norm's backward): an adapter is in a layer below. */
  carry: boolean;
  /** The attention's backward (dAtt, then dq, dk, dv): carry, or q/k/v adapted. */
  attention: boolean;
  /** d x_mid through the MLP (gate/up input gradients, the post-attention norm's backward): the attention's backward, or o adapted. */
  mlpCarry: boolean;
  /** The gate/up output gradients (down's input gradient, SwiGLU's backward): mlpCarry, or gate/up adapted. */
  mlp: boolean;
  /** Anything at all: mlp, or down adapted. */
  runs: boolean;
  /** Whether each projection's input gradient is made (q/k/v: carry, o: attention, gate/up: mlpCarry, down: mlp). */
  input: Record<Projection, boolean>;
}

const ATTENTION_INPUTS: readonly Projection[] = ['q_proj', 'k_proj', 'v_proj'];
const MLP_INPUTS: readonly Projection[] = ['gate_proj', 'up_proj'];

/**
 * What layer i's backward makes, given which (layer, projection) pairs have adapters. Base weights
 * and the embedding are frozen, so the backward goes only as far down as the lowest adapter, as
 * autodiff skips what needs no gradient: a layer under every adapter is skipped whole, and in the
 * lowest adapted layer what feeds only the gradients below it is skipped.
 */
export function layerBackwardPlan(adapted: (layer: number, p: Projection) => boolean, i: number): LayerBackwardPlan {
  const any = (l: number, ps: readonly Projection[]) => ps.some((p) => adapted(l, p));
  let carry = false;
  for (let l = 0; l < i && !carry; l++) carry = any(l, PROJECTIONS);
  const attention = carry || any(i, ATTENTION_INPUTS);
  const mlpCarry = attention || adapted(i, 'o_proj');
  const mlp = mlpCarry || any(i, MLP_INPUTS);
  const input = {
    q_proj: carry,
    k_proj: carry,
    v_proj: carry,
    o_proj: attention,
    gate_proj: mlpCarry,
    up_proj: mlpCarry,
    down_proj: mlp,
  };
  return { carry, attention, mlpCarry, mlp, runs: mlp || adapted(i, 'down_proj'), input };
}

/**
 * Layer i backward: g.dx = d x_out (T,C) -> d x_in (T,C), adding the layer's LoRA gradients, as far
 * as `layerBackwardPlan` says. A checkpointed pass first recomputes the layer's forward from its kept
 * input to refill the shared activations.
 */
export async function layerBackward(ctx: PassContext, i: number, L: GpuLayer, g: LayerGrads): Promise<void> {
  const plan = layerBackwardPlan((l, p) => ctx.lora?.entry(l, p) !== undefined, i);
  if (!plan.runs) return;
  if (ctx.acts.mode === 'checkpointed') await layerForward(ctx, i, L);
  await mlpBackward(ctx, i, L, g, plan);
  if (plan.mlpCarry) await attentionBackward(ctx, i, L, g, plan);
}
