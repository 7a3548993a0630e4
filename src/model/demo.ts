/**
 * Seeded random Llama models: test fixtures, and the app's embedded demo model (no
 * pretrained weights are needed to try the whole pipeline).
 *
 * Initialisation is chosen so that the model is not degenerate: projections have std
 * 1/sqrt(fan_in), so activations keep unit scale and attention scores have std ≈ 1; the
 * embeddings (and an untied lm-head) have std 2/sqrt(hidden), so that after the final
 * RMSNorm the logits have std ≈ 2 and next-token log-probabilities vary over a few nats;
 * norm weights are 1 ± 0.1.
 */
import type { LlamaConfig } from './config.ts';
import type { SafetensorsDtype, SafetensorsTensor } from './safetensors.ts';
import { hfTensorNames, weightAt, type LayerWeights, type LlamaWeights } from './weights.ts';
import { fillNormal, Rng } from '../util/rng.ts';

/** Shape and seed of a random Llama model. */
export interface TinyLlamaOptions
  extends Pick<LlamaConfig, 'vocabSize' | 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads'> {
  seed: number;
  /** Default hiddenSize / numHeads. */
  headDim?: number;
  /** Tie the lm-head to the embeddings. */
  tie: boolean;
  /** Llama 3.2 rope scaling (llama3, factor 32, low 1, high 4, original 8192). Default false. */
  ropeScaling?: boolean;
  /** Default 500000 with rope scaling (as Llama 3), else 10000. */
  ropeTheta?: number;
  /** Default 131072 with rope scaling, else 2048. */
  maxPositionEmbeddings?: number;
}

/**
 * The app's embedded demo model: vocabulary of the real SmolLM2 tokenizer (49152), hidden 64,
 * FFN 128, 2 layers, 4 heads of 16 with 2 KV heads, tied embeddings, llama3 rope scaling.
 */
export const DEMO_MODEL_OPTIONS: Readonly<TinyLlamaOptions> = {
  seed: 1234,
  vocabSize: 49152,
  hiddenSize: 64,
  intermediateSize: 128,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  tie: true,
  ropeScaling: true,
};

/**
 * The `LlamaConfig` of a random model. Token ids follow SmolLM2 (`<|im_start|>` 1 as BOS,
 * `<|im_end|>` 2 as EOS), or null when the vocabulary is too small to hold them.
 */
export function tinyLlamaConfig(opts: TinyLlamaOptions): LlamaConfig {
  const scaled = opts.ropeScaling ?? false;
  return {
    modelType: 'llama',
    vocabSize: opts.vocabSize,
    hiddenSize: opts.hiddenSize,
    intermediateSize: opts.intermediateSize,
    numLayers: opts.numLayers,
    numHeads: opts.numHeads,
    numKvHeads: opts.numKvHeads,
    headDim: opts.headDim ?? opts.hiddenSize / opts.numHeads,
    rmsNormEps: 1e-5,
    ropeTheta: opts.ropeTheta ?? (scaled ? 500000 : 10000),
    ropeScaling: scaled
      ? { ropeType: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 }
      : null,
    maxPositionEmbeddings: opts.maxPositionEmbeddings ?? (scaled ? 131072 : 2048),
    tieWordEmbeddings: opts.tie,
    bosTokenId: opts.vocabSize > 1 ? 1 : null,
    eosTokenId: opts.vocabSize > 2 ? 2 : null,
  };
}

/**
 * Random weights for a model of the given shape, deterministic in `opts.seed`. Tensors are
 * drawn in HF order from one generator, so a shape change changes all later values.
 */
export function makeTinyLlama(opts: TinyLlamaOptions): LlamaWeights {
  const config = tinyLlamaConfig(opts);
  const rng = new Rng(opts.seed);
  const C = config.hiddenSize;
  const normal = (count: number, std: number, mean = 0): Float32Array => fillNormal(new Float32Array(count), std, rng, mean);
  const norm = (): Float32Array => normal(C, 0.1, 1);
  const proj = (rows: number, cols: number): Float32Array => normal(rows * cols, 1 / Math.sqrt(cols));

  const { vocabSize: V, intermediateSize: F, numHeads: H, numKvHeads: KVH, headDim: D } = config;
  const embed = normal(V * C, 2 / Math.sqrt(C));
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    layers.push({
      inputNorm: norm(),
      q: proj(H * D, C),
      k: proj(KVH * D, C),
      v: proj(KVH * D, C),
      o: proj(C, H * D),
      postNorm: norm(),
      gate: proj(F, C),
      up: proj(F, C),
      down: proj(C, F),
    });
  }
  const finalNorm = norm();
  const lmHead = config.tieWordEmbeddings ? null : normal(V * C, 2 / Math.sqrt(C));
  return { config, embed, layers, finalNorm, lmHead };
}

/** The weights as safetensors entries under their HF names, in HF order, all of `dtype`. */
export function weightsToSafetensorsEntries(weights: LlamaWeights, dtype: SafetensorsDtype): SafetensorsTensor[] {
  return hfTensorNames(weights.config).map((spec) => {
    const data = weightAt(weights, spec.slot);
    if (data === null) throw new Error(`weightsToSafetensorsEntries: ${spec.name} is absent from the weights`);
    return { name: spec.name, dtype, shape: spec.shape, data };
  });
}
