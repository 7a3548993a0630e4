/**
 * GPU memory a training step needs, estimated from the configuration before anything is
 * allocated, so a run that cannot fit is refused with the numbers (or switched to layer
 * recomputation) instead of failing part-way. Mirrors what `allocForwardActs` and
 * `allocLayerGrads` (activations.ts) allocate; test/gpu/memory.test.ts checks it against the buffer manager.
 */
import type { LlamaConfig } from '../model/config.ts';
import type { QuantFormat } from '../model/quant.ts';
import { baseModelBytes, projectionShapes } from '../model/size.ts';
import type { Projection } from '../model/weights.ts';
import { keptLogitRows, keptRowStep } from './lm-head.ts';
import { DEFAULT_TUNING, paddedVocab, type Tuning } from './ops.ts';

export interface TrainMemoryEstimate {
  /** Frozen base weights. */
  model: number;
  /** LoRA parameters, gradients, AdamW m and v, the last-good copy, and AdamW's scratch. */
  lora: number;
  /** Activations kept for the backward pass plus the backward's scratch. */
  activations: number;
  total: number;
}

const F32 = 4;

/** AdamW's own scratch (src/train/optimizer.ts), at most: grad-norm partials (4096 floats), its stats and two uniforms. */
const OPTIMIZER_SCRATCH = 4096 * F32 + 4 + 16 + 48;

/**
 * @param T tokens of the longest training sequence
 * @param R positions scored in it (response tokens)
 */
export function estimateTrainBytes(
  c: LlamaConfig,
  quant: QuantFormat,
  lora: { r: number; targets: readonly Projection[] },
  T: number,
  R: number,
  recompute: boolean,
): TrainMemoryEstimate {
  const shapes = projectionShapes(c);
  const [C, F, H, HD, KVD] = [c.hiddenSize, c.intermediateSize, c.numHeads, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
  const pad = (n: number) => Math.ceil(n / 64) * 64;
  const loraFloats = c.numLayers * lora.targets.reduce((s, p) => s + pad(lora.r * shapes[p][1]) + pad(shapes[p][0] * lora.r), 0);
  const loraU = lora.targets.length * lora.r;
  // One layer's activations (allocActs): xn1, rstd1, q, k, v, att, lse, xMid, xn2, rstd2, gate, up, hm, lora u.
  const layer = T * (4 * C + 2 + 2 * HD + 2 * KVD + H + 3 * F + loraU);
  const inputs = (c.numLayers + 1) * T * C;
  const kept = recompute ? inputs + layer : inputs + c.numLayers * layer;
  const maxIn = Math.max(...lora.targets.map((p) => shapes[p][1]));
  const final = 2 * T * C + T + T * maxIn; // final norm, its rstd, the dropout scratch
  // lse, logp, log1mq; partials (vec4 per vocabulary tile); target logits; rows and targets
  const scoring = R * 3 + R * Math.ceil(c.vocabSize / (DEFAULT_TUNING.lmhead.TN * DEFAULT_TUNING.lmhead.WGX)) * 4 + R + 2 * R;
  const vp = paddedVocab(c.vocabSize);
  // The lm-head's unit gradient (R,C) and its scratch (lm-head.ts lmHeadForwardGrad): a chunk of
  // rows' kept logits in the default tiles' row steps, or a dz' vocabulary chunk for all rows.
  const keptRows = keptLogitRows(R, T, c.vocabSize, keptRowStep(DEFAULT_TUNING));
  const head = R * C + (keptRows > 0 ? keptRows * vp : R * Math.min(DEFAULT_TUNING.ceChunk, vp));
  // Backward scratch: the lm-head's, d(final norm), d residual, dF, dGate, dUp, dXn, dAtt, dq, dk, dv, delta, g, coefficients.
  const backward = head + 2 * T * C + 3 * T * F + T * C + 2 * T * HD + 2 * T * KVD + H * T + T * lora.r + R;
  const activations = (kept + final + scoring + backward) * F32;
  const model = baseModelBytes(c, quant);
  const loraBytes = 5 * loraFloats * F32 + OPTIMIZER_SCRATCH;
  return { model, lora: loraBytes, activations, total: model + loraBytes + activations };
}

/**
 * Bytes a no-grad scoring pass over T packed tokens allocates (GpuLlama.scoreBatch: one shared set
 * of activations, the RoPE table and sequence starts, ids, and the fused lm-head over R rows).
 */
export function estimateScoreBytes(
  c: LlamaConfig,
  lora: { r: number; targets: readonly Projection[] } | null,
  T: number,
  R: number,
  tuning: Tuning = DEFAULT_TUNING,
): number {
  const [C, F, H, HD, KVD] = [c.hiddenSize, c.intermediateSize, c.numHeads, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
  const loraU = lora ? lora.targets.length * lora.r : 0;
  // residual, xn, rstd, q, k, v, attention, lse, gate, up, swiglu, lora u; rope table (T, D); seg, ids.
  const perToken = 2 * C + 1 + 2 * HD + 2 * KVD + H + 3 * F + loraU + c.headDim + 2;
  const nTiles = Math.ceil(c.vocabSize / (tuning.lmhead.TN * tuning.lmhead.WGX));
  const perRow = 2 + 3 + 4 * nTiles + 1; // rows, targets; lse, logp, log1mq; partials (vec4); target logit
  return (T * perToken + R * perRow) * F32;
}

/**
 * The most tokens one packed no-grad pass may take: its estimate within `activationBytes` and each
 * of its buffers within the device's binding limit (at least 1: a longer sequence runs alone).
 */
export function scoreBatchTokens(
  c: LlamaConfig,
  lora: { r: number; targets: readonly Projection[] } | null,
  activationBytes: number,
  maxBindingBytes: number,
  tuning: Tuning = DEFAULT_TUNING,
): number {
  const widest = Math.max(c.intermediateSize, c.hiddenSize, c.numHeads * c.headDim) * F32;
  const nTiles = Math.ceil(c.vocabSize / (tuning.lmhead.TN * tuning.lmhead.WGX));
  const byBinding = Math.floor(maxBindingBytes / Math.max(widest, nTiles * 16));
  const byMemory = Math.floor(activationBytes / estimateScoreBytes(c, lora, 1, 1, tuning));
  return Math.max(1, Math.min(byBinding, byMemory));
}
