/**
 * What one pass over T tokens allocates: the forward's activations (kept per layer for the
 * backward pass, or one set shared by every layer when nothing is differentiated) and the backward's
 * scratch. src/engine/memory.ts estimates these same buffers before a run; keep the two in step.
 * Shapes are llm.c's: (T,C) = T rows of C floats, row-major.
 */
import type { LlamaConfig } from '../model/config.ts';
import { ropeTable } from '../model/rope.ts';
import type { Projection } from '../model/weights.ts';
import type { BufferManager, TrackedBuffer } from './buffers.ts';
import type { LoraParams } from './lora-params.ts';
import { packing } from './packing.ts';

/** One layer's activations. In a no-grad pass every layer shares one set; training keeps one per layer. */
export interface LayerActs {
  xIn: TrackedBuffer; //   (T,C) residual stream entering the layer
  xn1: TrackedBuffer; //   (T,C) input_layernorm output
  rstd1: TrackedBuffer; // (T)
  q: TrackedBuffer; //     (T,H*D) after rope
  k: TrackedBuffer; //     (T,KVH*D) after rope
  v: TrackedBuffer; //     (T,KVH*D)
  att: TrackedBuffer; //   (T,H*D) attention output (o_proj input)
  attLse: TrackedBuffer; // (H,T)
  xMid: TrackedBuffer; //  (T,C) residual after attention
  xn2: TrackedBuffer; //   (T,C) post_attention_layernorm output
  rstd2: TrackedBuffer; // (T)
  gate: TrackedBuffer; //  (T,F)
  up: TrackedBuffer; //    (T,F)
  hm: TrackedBuffer; //    (T,F) silu(gate)*up (down_proj input)
  /** u = dropout(x) A^T (T,r) per adapted projection, kept for dB. */
  loraU: Partial<Record<Projection, TrackedBuffer>>;
}

/** How a forward pass keeps activations (see `allocForwardActs`). */
export type ActsMode = 'shared' | 'per-layer' | 'checkpointed';

/** Everything a forward pass over T tokens wrote. */
export interface ForwardActs {
  T: number;
  mode: ActsMode;
  layers: LayerActs[];
  /** Residual stream after the last layer (T,C), the final norm's output (T,C) and its rstd (T). */
  xOut: TrackedBuffer;
  xnF: TrackedBuffer;
  rstdF: TrackedBuffer;
  /** RoPE table, a row per token (T, D/2, 2), and each token's sequence start (T) u32 (see packing.ts). */
  cs: TrackedBuffer;
  seg: TrackedBuffer;
  /** Tokens of each sequence packed in the T, in order. */
  lengths: readonly number[];
  /**
   * The pass's dropout seeds per token (`dropoutSeedTable`), made by its first pass over the
   * layers when dropout is on (or given with the pass's inputs) and read again by its backward;
   * null with dropout off, undefined before.
   */
  seeds?: TrackedBuffer | null;
  /** Scratch: dropout(x) for LoRA inputs (T, max in-features), when dropout is on. */
  xd: TrackedBuffer | null;
  /**
   * Generation: the per-layer KV cache. With `step` null (the prompt) the T tokens write rows
   * 0..T-1 and attention runs over them; with a decode step's buffer (T = 1; u32 [token id,
   * position P], written each token) the token's k, v go to row P and attention runs against the cache.
   */
  kv?: { cache: KvCache; step: TrackedBuffer | null };
}

/** Keys and values after RoPE of every layer, (maxT, KVH*D) each, for generation. */
export interface KvCache {
  k: TrackedBuffer[];
  v: TrackedBuffer[];
  maxT: number;
}

/** The model a pass runs: its shapes, adapters, RoPE frequencies and the buffer manager that counts its bytes. */
export interface PassModel {
  config: LlamaConfig;
  buffers: BufferManager;
  lora: LoraParams | null;
  invFreq: Float64Array;
}

/** A pass's per-token tables: each token's RoPE row (T, D/2, 2) at its position within its sequence, and its sequence's first token (T). */
export function passTables(m: PassModel, lengths: readonly number[]): { cs: Float32Array; seg: Uint32Array } {
  const pack = packing(lengths);
  return { cs: ropeTable(m.invFreq, pack.positions), seg: pack.seg };
}

/**
 * Allocate activations for T tokens, registering every buffer in `live` so the caller frees them:
 * - 'shared': one set reused by every layer (no-grad scoring);
 * - 'per-layer': every layer keeps its own activations for the backward pass;
 * - 'checkpointed': every layer keeps only its input; the rest is one shared set that the
 *   backward pass refills by recomputing each layer's forward (less memory, ~1/3 more compute).
 * `lengths`: the sequences packed in the T tokens (one by default); `tables`: their `passTables`
 * already on the GPU (a training pass uploads them with its other inputs), else uploaded here.
 */
export function allocForwardActs(
  m: PassModel,
  T: number,
  mode: ActsMode,
  live: TrackedBuffer[],
  lengths: readonly number[] = [T],
  tables?: { cs: TrackedBuffer; seg: TrackedBuffer },
): ForwardActs {
  const c = m.config;
  const b = m.buffers;
  const alloc = (label: string, floats: number) => b.f32In(live, label, floats);
  const [C, F, HD, KVD] = [c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
  const shared = mode === 'shared';
  const layerSet = (i: number, xIn: TrackedBuffer): LayerActs => {
    const loraU: LayerActs['loraU'] = {};
    for (const e of m.lora?.entries ?? [])
      if (e.layer === i || mode !== 'per-layer') loraU[e.proj] ??= alloc(`lora u ${i}.${e.proj} (T,r)`, T * e.r);
    const xn1 = alloc('xn1 (T,C)', T * C);
    const rstd1 = alloc('rstd1 (T)', T);
    return {
      xIn,
      xn1,
      rstd1,
      q: alloc('q (T,H*D)', T * HD),
      k: alloc('k (T,KVH*D)', T * KVD),
      v: alloc('v (T,KVH*D)', T * KVD),
      att: alloc('attention (T,H*D)', T * HD),
      attLse: alloc('attention lse (H,T)', c.numHeads * T),
      // No-grad: the residual is updated in place and one normed buffer serves both norms.
      xMid: shared ? xIn : alloc('residual mid (T,C)', T * C),
      xn2: shared ? xn1 : alloc('xn2 (T,C)', T * C),
      rstd2: shared ? rstd1 : alloc('rstd2 (T)', T),
      gate: alloc('gate (T,F)', T * F),
      up: alloc('up (T,F)', T * F),
      hm: alloc('swiglu (T,F)', T * F),
      loraU,
    };
  };
  const inputs = [alloc('residual (T,C)', T * C)];
  if (!shared) for (let i = 1; i <= c.numLayers; i++) inputs.push(alloc('residual (T,C)', T * C));
  const first = layerSet(0, inputs[0]);
  const layers = [first];
  for (let i = 1; i < c.numLayers; i++) {
    if (mode === 'per-layer') layers.push(layerSet(i, inputs[i]));
    else layers.push({ ...first, xIn: shared ? first.xIn : inputs[i] });
  }
  const sum = lengths.reduce((a, n) => a + n, 0);
  if (sum !== T) throw new RangeError(`allocActs: packed lengths sum to ${sum}, not T=${T}`);
  let { cs, seg } = tables ?? {};
  if (!cs || !seg) {
    const data = passTables(m, lengths);
    cs = b.uploadIn(live, 'rope table (T,D/2,2)', data.cs);
    seg = b.uploadIn(live, 'sequence starts (T)', data.seg);
  }
  return {
    T,
    mode,
    layers,
    xOut: shared ? first.xIn : inputs[c.numLayers],
    xnF: shared ? first.xn1 : alloc('final norm (T,C)', T * C),
    rstdF: shared ? first.rstd1 : alloc('final rstd (T)', T),
    cs,
    seg,
    lengths: [...lengths],
    xd: null,
  };
}

/** Scratch of the LoRA backward, shared by every adapted projection (see lora-linear.ts). */
export interface LinearScratch {
  /** g = dY B (T, max r). */
  g: TrackedBuffer;
}

/** The backward pass's scratch: one layer's gradients at a time, reused from the last layer down. */
export interface LayerGrads {
  /** (T,C) gradient of the residual stream: d x_out entering a layer's backward, d x_in leaving it. */
  dx: TrackedBuffer;
  dF: TrackedBuffer; //    (T,F) d silu(gate)*up
  dGate: TrackedBuffer; // (T,F)
  dUp: TrackedBuffer; //   (T,F)
  dXn: TrackedBuffer; //   (T,C) d of a norm's output (xn2, then xn1)
  dAtt: TrackedBuffer; //  (T,H*D) d attention output
  dq: TrackedBuffer; //    (T,H*D)
  dk: TrackedBuffer; //    (T,KVH*D)
  dv: TrackedBuffer; //    (T,KVH*D)
  delta: TrackedBuffer; // (H,T) attention backward scratch: rowsum(dout * out)
  lin: LinearScratch;
}

/** Allocate the backward scratch for T tokens (registered in `live`). */
export function allocLayerGrads(b: BufferManager, c: LlamaConfig, lora: LoraParams, T: number, live: TrackedBuffer[]): LayerGrads {
  const alloc = (label: string, floats: number) => b.f32In(live, label, floats);
  const [C, F, HD, KVD] = [c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
  const dx = alloc('d residual (T,C)', T * C);
  const dF = alloc('d hidden (T,F)', T * F);
  const dGate = alloc('d gate (T,F)', T * F);
  const dUp = alloc('d up (T,F)', T * F);
  const dXn = alloc('d normed (T,C)', T * C);
  const dAtt = alloc('d attention (T,H*D)', T * HD);
  const dq = alloc('dq (T,H*D)', T * HD);
  const dk = alloc('dk (T,KVH*D)', T * KVD);
  const dv = alloc('dv (T,KVH*D)', T * KVD);
  const delta = alloc('attention delta (H,T)', c.numHeads * T);
  const maxR = Math.max(...lora.entries.map((e) => e.r));
  const g = alloc('lora g (T,r)', T * maxR);
  return { dx, dF, dGate, dUp, dXn, dAtt, dq, dk, dv, delta, lin: { g } };
}
