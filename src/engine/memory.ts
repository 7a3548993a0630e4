/**
 * GPU memory a training step needs, estimated from the configuration before anything is
 * allocated, so a run that cannot fit is refused with the numbers (or switched to layer
 * recomputation) instead of failing part-way. Mirrors what `GpuLlama.allocActs` and
 * `TrainPass.backward` allocate; test/gpu/memory.test.ts checks it against the buffer manager.
 */
import type { LlamaConfig } from '../model/config.ts';
import type { QuantFormat } from '../model/quant.ts';
import { baseModelBytes, projectionShapes } from '../model/size.ts';
import type { Projection } from '../model/weights.ts';
import { DEFAULT_TUNING } from './ops.ts';

export interface TrainMemoryEstimate {
  /** Frozen base weights. */
  model: number;
  /** LoRA parameters, gradients, AdamW m and v, and the last-good copy. */
  lora: number;
  /** Activations kept for the backward pass plus the backward's scratch. */
  activations: number;
  total: number;
}

const F32 = 4;

/**
 * @param T tokens of the longest training sequence
 * @param R positions scored in it (response tokens)
 */
export function estimateTrainBytes(c: LlamaConfig, quant: QuantFormat, lora: { r: number; targets: readonly Projection[] }, T: number, R: number, recompute: boolean): TrainMemoryEstimate {
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
  const scoring = R * 3 + R * Math.ceil(c.vocabSize / (DEFAULT_TUNING.lmhead.TN * DEFAULT_TUNING.lmhead.WGX)) * 4 + R + 2 * R; // lse, logp, log1mq, partials, target logits, rows/targets
  const vc = Math.min(DEFAULT_TUNING.ceChunk, Math.ceil(c.vocabSize / 4) * 4);
  // Backward scratch: dz chunk, dh, d(final norm), d residual, dF, dGate, dUp, dXn, dAtt, dq, dk, dv, delta, g, gx.
  const backward = R * vc + R * C + 2 * T * C + 3 * T * F + T * C + 2 * T * HD + 2 * T * KVD + H * T + T * lora.r + T * maxIn + 2 * R;
  const activations = (kept + final + scoring + backward) * F32;
  const model = baseModelBytes(c, quant);
  const loraBytes = 5 * loraFloats * F32;
  return { model, lora: loraBytes, activations, total: model + loraBytes + activations };
}
