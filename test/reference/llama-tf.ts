/**
 * Reference Llama forward pass with `@tensorflow/tfjs-core` ops on the CPU backend, following
 * Hugging Face `LlamaForCausalLM` exactly (see docs/architecture.md §2):
 * embedding gather; per layer RMSNorm → q/k/v → RoPE (rotate_half, optional llama3 scaling) →
 * causal grouped-query attention → o_proj → residual; RMSNorm → SwiGLU MLP → residual;
 * final RMSNorm; lm_head (the embedding when `tieWordEmbeddings`). Optional LoRA on any of the
 * seven projections: y = x W^T + scale * (x A^T) B^T (no dropout).
 *
 * The core, {@link llamaLogitsTf}, is written with differentiable tf ops only and takes tensors
 * (which may be `tf.Variable`s), so `tf.grad` / `tf.variableGrads` can be applied to it.
 * {@link referenceForward} and {@link referenceLogProbs} are the plain-array wrappers.
 *
 * Importing this module registers the tfjs CPU backend; the wrappers select it (synchronously)
 * when no other backend is active. Call {@link initReferenceBackend} to select it explicitly.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { LlamaConfig } from '../../src/model/config.ts';
import type { LlamaWeights, Projection } from '../../src/model/weights.ts';

/**
 * Whether tfjs gradients are registered (tf.grad / tf.variableGrads usable). The Node bundle of
 * tfjs-core registers none; `dist/register_all_gradients` (ESM with extensionless imports) does,
 * into tfjs's global registry. Vitest inlines and loads it; plain Node/tsx cannot, and there only
 * the forward functions of this module are usable.
 */
export const gradientsRegistered: boolean = await import('@tensorflow/tfjs-core/dist/register_all_gradients').then(
  () => true,
  () => false,
);

/** HF module name of a LoRA-targetable projection. */
export type ProjectionName = Projection;

/** LoRA factors of one projection, host arrays: A [r, in], B [out, r]. */
export interface LoraFactors {
  A: Float32Array;
  B: Float32Array;
  r: number;
  /** Multiplier of the LoRA branch, alpha / r in PEFT. */
  scale: number;
}

/** LoRA for the whole model, index = layer; missing layers/projections have no adapter. */
export type LoraDict = Array<Partial<Record<ProjectionName, LoraFactors>>>;

/** LoRA factors of one projection as tensors (may be `tf.Variable`s for autodiff). */
export interface LoraFactorsTf {
  A: tf.Tensor2D; // [r, in]
  B: tf.Tensor2D; // [out, r]
  scale: number;
}

/** LoRA for the whole model as tensors, index = layer. */
export type LoraTensors = Array<Partial<Record<ProjectionName, LoraFactorsTf>>>;

/** One decoder layer's weights as tensors, HF layout. */
export interface LayerTensors {
  inputNorm: tf.Tensor1D; // [C]
  q: tf.Tensor2D; //         [H*D, C]
  k: tf.Tensor2D; //         [KVH*D, C]
  v: tf.Tensor2D; //         [KVH*D, C]
  o: tf.Tensor2D; //         [C, H*D]
  postNorm: tf.Tensor1D; //  [C]
  gate: tf.Tensor2D; //      [F, C]
  up: tf.Tensor2D; //        [F, C]
  down: tf.Tensor2D; //      [C, F]
}

/** The whole model's weights as tensors. */
export interface LlamaTensors {
  config: LlamaConfig;
  embed: tf.Tensor2D; //     [V, C]
  layers: LayerTensors[];
  finalNorm: tf.Tensor1D; // [C]
  /** [V, C]; null when tied (the lm-head is `embed`). */
  lmHead: tf.Tensor2D | null;
}

/** Options of the plain-array wrappers. */
export interface ReferenceOptions {
  lora?: LoraDict;
}

/** Key in {@link LayerTensors} of each projection. */
const PROJECTION_KEY = {
  q_proj: 'q',
  k_proj: 'k',
  v_proj: 'v',
  o_proj: 'o',
  gate_proj: 'gate',
  up_proj: 'up',
  down_proj: 'down',
} as const satisfies Record<ProjectionName, keyof LayerTensors>;

/** [out, in] of each projection for a config. */
export function projectionShape(config: LlamaConfig, name: ProjectionName): [number, number] {
  const { hiddenSize: C, intermediateSize: F, numHeads: H, numKvHeads: KVH, headDim: D } = config;
  switch (name) {
    case 'q_proj':
      return [H * D, C];
    case 'k_proj':
    case 'v_proj':
      return [KVH * D, C];
    case 'o_proj':
      return [C, H * D];
    case 'gate_proj':
    case 'up_proj':
      return [F, C];
    case 'down_proj':
      return [C, F];
  }
}

/** Selects the tfjs CPU backend (awaitable form). */
export async function initReferenceBackend(): Promise<void> {
  if (!(await tf.setBackend('cpu'))) throw new Error('llama-tf: the tfjs CPU backend failed to initialise');
}

/** Makes sure the CPU backend is active; the CPU backend initialises synchronously. */
function ensureCpuBackend(): void {
  if (tf.engine().backendName === 'cpu') return;
  tf.setBackend('cpu').catch(() => undefined);
  if (tf.engine().backendName !== 'cpu') {
    throw new Error('llama-tf: the CPU backend is not active; await initReferenceBackend() first');
  }
}

function tensor2d(name: string, a: Float32Array, rows: number, cols: number): tf.Tensor2D {
  if (a.length !== rows * cols) throw new RangeError(`llama-tf: ${name} has ${a.length} values, expected ${rows}x${cols}`);
  return tf.tensor2d(a, [rows, cols], 'float32');
}

function tensor1d(name: string, a: Float32Array, n: number): tf.Tensor1D {
  if (a.length !== n) throw new RangeError(`llama-tf: ${name} has ${a.length} values, expected ${n}`);
  return tf.tensor1d(a, 'float32');
}

function checkConfig(config: LlamaConfig): void {
  if (config.headDim % 2 !== 0) throw new RangeError(`llama-tf: headDim ${config.headDim} is odd`);
  if (config.numHeads % config.numKvHeads !== 0) {
    throw new RangeError(`llama-tf: numHeads ${config.numHeads} is not a multiple of numKvHeads ${config.numKvHeads}`);
  }
}

/** Host weights -> tensors (sizes checked). The caller disposes them (or creates them in a tidy). */
export function weightsToTensors(w: LlamaWeights): LlamaTensors {
  ensureCpuBackend();
  const cfg = w.config;
  checkConfig(cfg);
  const { vocabSize: V, hiddenSize: C, intermediateSize: F, numHeads: H, numKvHeads: KVH, headDim: D } = cfg;
  if (w.layers.length !== cfg.numLayers) {
    throw new RangeError(`llama-tf: ${w.layers.length} layers, config says ${cfg.numLayers}`);
  }
  if (!cfg.tieWordEmbeddings && w.lmHead === null) throw new RangeError('llama-tf: untied model without lmHead');
  return {
    config: cfg,
    embed: tensor2d('embed', w.embed, V, C),
    layers: w.layers.map((l, i) => ({
      inputNorm: tensor1d(`layers.${i}.inputNorm`, l.inputNorm, C),
      q: tensor2d(`layers.${i}.q`, l.q, H * D, C),
      k: tensor2d(`layers.${i}.k`, l.k, KVH * D, C),
      v: tensor2d(`layers.${i}.v`, l.v, KVH * D, C),
      o: tensor2d(`layers.${i}.o`, l.o, C, H * D),
      postNorm: tensor1d(`layers.${i}.postNorm`, l.postNorm, C),
      gate: tensor2d(`layers.${i}.gate`, l.gate, F, C),
      up: tensor2d(`layers.${i}.up`, l.up, F, C),
      down: tensor2d(`layers.${i}.down`, l.down, C, F),
    })),
    finalNorm: tensor1d('finalNorm', w.finalNorm, C),
    lmHead: cfg.tieWordEmbeddings || w.lmHead === null ? null : tensor2d('lmHead', w.lmHead, V, C),
  };
}

/** Host LoRA dict -> tensors (shapes checked against the config). */
export function loraToTensors(lora: LoraDict, config: LlamaConfig): LoraTensors {
  ensureCpuBackend();
  if (lora.length > config.numLayers) throw new RangeError(`llama-tf: LoRA for ${lora.length} layers, model has ${config.numLayers}`);
  return lora.map((layer, i) => {
    const out: Partial<Record<ProjectionName, LoraFactorsTf>> = {};
    for (const [name, f] of Object.entries(layer) as Array<[ProjectionName, LoraFactors | undefined]>) {
      if (f === undefined) continue;
      if (!(name in PROJECTION_KEY)) throw new RangeError(`llama-tf: unknown LoRA projection ${name}`);
      const [nOut, nIn] = projectionShape(config, name);
      out[name] = {
        A: tensor2d(`lora[${i}].${name}.A`, f.A, f.r, nIn),
        B: tensor2d(`lora[${i}].${name}.B`, f.B, nOut, f.r),
        scale: f.scale,
      };
    }
    return out;
  });
}

/** Disposes every tensor of a {@link LlamaTensors}. */
export function disposeLlamaTensors(t: LlamaTensors): void {
  const all: tf.Tensor[] = [t.embed, t.finalNorm];
  if (t.lmHead) all.push(t.lmHead);
  for (const l of t.layers) all.push(l.inputNorm, l.q, l.k, l.v, l.o, l.postNorm, l.gate, l.up, l.down);
  tf.dispose(all);
}

/** Disposes every tensor of a {@link LoraTensors}. */
export function disposeLoraTensors(t: LoraTensors): void {
  for (const layer of t) for (const f of Object.values(layer)) if (f) tf.dispose([f.A, f.B]);
}

/**
 * Rotary inverse frequencies as HF computes them (float32 tensor ops, the same sequence of
 * operations as `_compute_default_rope_parameters` and `_compute_llama3_parameters`); explicit
 * per-frequency factors (a GGUF file's `rope_freqs`) divide them, as ggml's rope divides each
 * frequency's angle by its factor.
 * -> (D/2)
 */
export function llamaInvFreqTf(config: LlamaConfig): tf.Tensor1D {
  return tf.tidy(() => {
    const D = config.headDim;
    // inv_freq = 1 / base^(arange(0, D, 2) / D)
    const exponents = tf.div(tf.range(0, D, 2, 'float32'), D);
    const invFreq = tf.div(1, tf.pow(tf.scalar(config.ropeTheta, 'float32'), exponents)) as tf.Tensor1D;
    if (config.ropeFreqFactors !== undefined) return tf.div(invFreq, tf.tensor1d(config.ropeFreqFactors, 'float32')) as tf.Tensor1D;
    const s = config.ropeScaling;
    if (s === null) return invFreq;
    const oldCtx = s.originalMaxPositionEmbeddings;
    const lowFreqWavelen = oldCtx / s.lowFreqFactor;
    const highFreqWavelen = oldCtx / s.highFreqFactor;
    const wavelen = tf.div(2 * Math.PI, invFreq);
    // wavelen > low_freq_wavelen: inv_freq / factor, else inv_freq
    const isLow = tf.greater(wavelen, lowFreqWavelen);
    const invFreqLlama = tf.where(isLow, tf.div(invFreq, s.factor), invFreq);
    // smooth = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    const smooth = tf.div(tf.sub(tf.div(oldCtx, wavelen), s.lowFreqFactor), s.highFreqFactor - s.lowFreqFactor);
    const smoothed = tf.add(tf.div(tf.mul(tf.sub(1, smooth), invFreqLlama), s.factor), tf.mul(smooth, invFreqLlama));
    // medium: not (wavelen < high_freq_wavelen) and not (wavelen > low_freq_wavelen)
    const isMedium = tf.logicalAnd(tf.logicalNot(tf.less(wavelen, highFreqWavelen)), tf.logicalNot(isLow));
    return tf.where(isMedium, smoothed, invFreqLlama) as tf.Tensor1D;
  });
}

/**
 * cos and sin of cat(freqs, freqs), freqs[t, i] = t * inv_freq[i], positions 0..T-1.
 * -> cos (T,D), sin (T,D)
 */
export function ropeCosSinTf(config: LlamaConfig, T: number): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  return tf.tidy(() => {
    const half = config.headDim / 2;
    const invFreq = llamaInvFreqTf(config);
    const pos = tf.range(0, T, 1, 'float32');
    const freqs = tf.mul(tf.reshape(pos, [T, 1]), tf.reshape(invFreq, [1, half])); // (T, D/2)
    const emb = tf.concat([freqs, freqs], 1) as tf.Tensor2D; // (T, D)
    return { cos: tf.cos(emb), sin: tf.sin(emb) };
  });
}

/** RMSNorm: x * w / sqrt(mean(x^2) + eps). x (T,C), w (C) -> (T,C) */
export function rmsNormTf(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  const variance = tf.mean(tf.square(x), -1, true); // (T,1)
  return tf.mul(w, tf.mul(x, tf.rsqrt(tf.add(variance, eps))));
}

/** Linear without bias plus optional LoRA. x (T,in), W (out,in) -> (T,out) */
export function linearTf(x: tf.Tensor2D, W: tf.Tensor2D, lora?: LoraFactorsTf): tf.Tensor2D {
  const y = tf.matMul(x, W, false, true) as tf.Tensor2D;
  if (!lora) return y;
  // scale * (x A^T) B^T: (T,in)(in,r) -> (T,r); (T,r)(r,out) -> (T,out)
  const delta = tf.matMul(tf.matMul(x, lora.A, false, true), lora.B, false, true);
  return tf.add(y, tf.mul(delta, lora.scale));
}

/** rotate_half: cat(-x2, x1) over the last axis. x (..., D) -> (..., D) */
export function rotateHalfTf<R extends tf.Rank>(x: tf.Tensor<R>): tf.Tensor<R> {
  const D = x.shape[x.rank - 1]!;
  const half = D / 2;
  const begin1 = x.shape.map(() => 0);
  const begin2 = x.shape.map((_, i) => (i === x.rank - 1 ? half : 0));
  const size = x.shape.map((s, i) => (i === x.rank - 1 ? half : s));
  const x1 = tf.slice(x, begin1, size);
  const x2 = tf.slice(x, begin2, size);
  return tf.concat([tf.neg(x2), x1], -1);
}

/** q*cos + rotate_half(q)*sin. x (heads,T,D), cos/sin (T,D) -> (heads,T,D) */
export function applyRopeTf(x: tf.Tensor3D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor3D {
  return tf.add(tf.mul(x, cos), tf.mul(rotateHalfTf(x), sin));
}

/** HF repeat_kv: each kv head repeated nRep times consecutively. (KVH,T,D) -> (KVH*nRep,T,D) */
export function repeatKvTf(x: tf.Tensor3D, nRep: number): tf.Tensor3D {
  if (nRep === 1) return x;
  const [KVH, T, D] = x.shape;
  return tf.reshape(tf.tile(tf.expandDims(x, 1), [1, nRep, 1, 1]), [KVH * nRep, T, D]);
}

/** Additive causal mask: 0 where s ≤ t, -Infinity above the diagonal. -> (T,T) */
function causalMask(T: number): tf.Tensor2D {
  const m = new Float32Array(T * T);
  for (let t = 0; t < T; t++) for (let s = t + 1; s < T; s++) m[t * T + s] = -Infinity;
  return tf.tensor2d(m, [T, T]);
}

/**
 * Self-attention block of one layer (input already normed), with RoPE and causal GQA.
 * x (T,C) -> (T,C) (after o_proj)
 */
function attentionTf(
  x: tf.Tensor2D,
  layer: LayerTensors,
  config: LlamaConfig,
  cos: tf.Tensor2D,
  sin: tf.Tensor2D,
  mask: tf.Tensor2D,
  lora: Partial<Record<ProjectionName, LoraFactorsTf>>,
): tf.Tensor2D {
  const { numHeads: H, numKvHeads: KVH, headDim: D } = config;
  const T = x.shape[0];
  const q = linearTf(x, layer.q, lora.q_proj); // (T, H*D)
  const k = linearTf(x, layer.k, lora.k_proj); // (T, KVH*D)
  const v = linearTf(x, layer.v, lora.v_proj); // (T, KVH*D)
  const qh = applyRopeTf(tf.transpose(tf.reshape(q, [T, H, D]), [1, 0, 2]), cos, sin); //   (H,T,D)
  const kh = applyRopeTf(tf.transpose(tf.reshape(k, [T, KVH, D]), [1, 0, 2]), cos, sin); // (KVH,T,D)
  const vh = tf.transpose(tf.reshape(v, [T, KVH, D]), [1, 0, 2]) as tf.Tensor3D; //          (KVH,T,D)
  const kr = repeatKvTf(kh, H / KVH); // (H,T,D)
  const vr = repeatKvTf(vh, H / KVH); // (H,T,D)
  const scores = tf.add(tf.mul(tf.matMul(qh, kr, false, true), 1 / Math.sqrt(D)), mask); // (H,T,T)
  const probs = tf.softmax(scores, -1);
  const ctx = tf.matMul(probs, vr); // (H,T,D)
  const merged = tf.reshape(tf.transpose(ctx, [1, 0, 2]), [T, H * D]) as tf.Tensor2D; // (T, H*D)
  return linearTf(merged, layer.o, lora.o_proj); // (T,C)
}

/** SwiGLU MLP: down(silu(gate(x)) * up(x)). x (T,C) -> (T,C) */
function mlpTf(x: tf.Tensor2D, layer: LayerTensors, lora: Partial<Record<ProjectionName, LoraFactorsTf>>): tf.Tensor2D {
  const g = linearTf(x, layer.gate, lora.gate_proj); // (T,F)
  const u = linearTf(x, layer.up, lora.up_proj); // (T,F)
  const act = tf.mul(tf.mul(g, tf.sigmoid(g)), u) as tf.Tensor2D; // silu(g) * u
  return linearTf(act, layer.down, lora.down_proj); // (T,C)
}

function checkIds(ids: number[], V: number): void {
  if (ids.length === 0) throw new RangeError('llama-tf: empty ids');
  ids.forEach((id, t) => {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`llama-tf: ids[${t}] = ${id} is outside [0, ${V})`);
  });
}

/**
 * The decoder stack up to and including the final RMSNorm.
 * ids (T) -> hidden (T,C)
 */
export function llamaHiddenTf(wt: LlamaTensors, ids: number[], lora?: LoraTensors): tf.Tensor2D {
  const cfg = wt.config;
  checkConfig(cfg);
  checkIds(ids, cfg.vocabSize);
  const T = ids.length;
  const { cos, sin } = ropeCosSinTf(cfg, T);
  const mask = causalMask(T);
  let h = tf.gather(wt.embed, tf.tensor1d(ids, 'int32')) as tf.Tensor2D; // (T,C)
  wt.layers.forEach((layer, i) => {
    const l = lora?.[i] ?? {};
    h = tf.add(h, attentionTf(rmsNormTf(h, layer.inputNorm, cfg.rmsNormEps), layer, cfg, cos, sin, mask, l));
    h = tf.add(h, mlpTf(rmsNormTf(h, layer.postNorm, cfg.rmsNormEps), layer, l));
  });
  return rmsNormTf(h, wt.finalNorm, cfg.rmsNormEps);
}

/** lm_head on final hidden states. hidden (T,C) -> logits (T,V) */
export function lmHeadTf(wt: LlamaTensors, hidden: tf.Tensor2D): tf.Tensor2D {
  const head = wt.config.tieWordEmbeddings ? wt.embed : wt.lmHead;
  if (head === null) throw new RangeError('llama-tf: untied model without lmHead');
  return tf.matMul(hidden, head, false, true);
}

/**
 * Full forward pass; differentiable with respect to every tensor in `wt` and `lora`.
 * ids (T) -> logits (T,V)
 */
export function llamaLogitsTf(wt: LlamaTensors, ids: number[], lora?: LoraTensors): tf.Tensor2D {
  return lmHeadTf(wt, llamaHiddenTf(wt, ids, lora));
}

/**
 * log softmax(logits[t])[targets[t]] for the positions whose target is ≥ 0, in increasing t.
 * logits (T,V), targets (T) -> (number of targets ≥ 0)
 */
export function tokenLogProbsTf(logits: tf.Tensor2D, targets: number[]): tf.Tensor1D {
  const [T, V] = logits.shape;
  if (targets.length !== T) throw new RangeError(`llama-tf: ${targets.length} targets for ${T} positions`);
  const flat: number[] = [];
  targets.forEach((y, t) => {
    if (y < 0) return;
    if (!Number.isInteger(y) || y >= V) throw new RangeError(`llama-tf: targets[${t}] = ${y} is outside [0, ${V})`);
    flat.push(t * V + y);
  });
  const logp = tf.reshape(tf.logSoftmax(logits, -1), [T * V]);
  return tf.gather(logp, tf.tensor1d(flat, 'int32')) as tf.Tensor1D;
}

/** HF inverse rotary frequencies as a host array (float32). -> (D/2) */
export function referenceInvFreq(config: LlamaConfig): Float32Array {
  ensureCpuBackend();
  const t = llamaInvFreqTf(config);
  const out = Float32Array.from(t.dataSync() as Float32Array);
  t.dispose();
  return out;
}

/**
 * Reference forward on host arrays.
 * ids (T) -> hidden (T,C) final-normed, logits (T,V)
 */
export function referenceForward(
  weights: LlamaWeights,
  ids: number[],
  opts: ReferenceOptions = {},
): { hidden: Float32Array; logits: Float32Array } {
  ensureCpuBackend();
  const [hidden, logits] = tf.tidy(() => {
    const wt = weightsToTensors(weights);
    const lora = opts.lora ? loraToTensors(opts.lora, weights.config) : undefined;
    const h = llamaHiddenTf(wt, ids, lora);
    return [h, lmHeadTf(wt, h)];
  });
  try {
    return {
      hidden: Float32Array.from(hidden!.dataSync() as Float32Array),
      logits: Float32Array.from(logits!.dataSync() as Float32Array),
    };
  } finally {
    tf.dispose([hidden!, logits!]);
  }
}

/**
 * Reference token log-probabilities on host arrays: out[t] = log softmax(logits[t])[targets[t]],
 * NaN where targets[t] is -1.
 * ids (T), targets (T) -> (T)
 */
export function referenceLogProbs(weights: LlamaWeights, ids: number[], targets: number[], opts: ReferenceOptions = {}): Float32Array {
  ensureCpuBackend();
  if (targets.length !== ids.length) throw new RangeError(`llama-tf: ${targets.length} targets for ${ids.length} ids`);
  const picked = tf.tidy(() => {
    const wt = weightsToTensors(weights);
    const lora = opts.lora ? loraToTensors(opts.lora, weights.config) : undefined;
    return tokenLogProbsTf(llamaLogitsTf(wt, ids, lora), targets);
  });
  const values = picked.dataSync();
  picked.dispose();
  const out = new Float32Array(ids.length).fill(NaN);
  let j = 0;
  targets.forEach((y, t) => {
    if (y >= 0) out[t] = values[j++]!;
  });
  return out;
}
