/**
 * Llama weights in host memory, f32, in Hugging Face layout (`nn.Linear` weight = [out, in], row-major).
 */
import { ModelFormatError } from '../errors.ts';
import type { LlamaConfig } from './config.ts';
import type { QuantizedMatrix } from './quant.ts';

/** The seven projection types LoRA can target, in HF module names. */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

export interface LayerWeights {
  inputNorm: Float32Array; // [C]           model.layers.i.input_layernorm.weight
  q: Float32Array; //         [H*D, C]      model.layers.i.self_attn.q_proj.weight
  k: Float32Array; //         [KVH*D, C]    model.layers.i.self_attn.k_proj.weight
  v: Float32Array; //         [KVH*D, C]    model.layers.i.self_attn.v_proj.weight
  o: Float32Array; //         [C, H*D]      model.layers.i.self_attn.o_proj.weight
  postNorm: Float32Array; //  [C]           model.layers.i.post_attention_layernorm.weight
  gate: Float32Array; //      [F, C]        model.layers.i.mlp.gate_proj.weight
  up: Float32Array; //        [F, C]        model.layers.i.mlp.up_proj.weight
  down: Float32Array; //      [C, F]        model.layers.i.mlp.down_proj.weight
}

export interface LlamaWeights {
  config: LlamaConfig;
  embed: Float32Array; //     [V, C]        model.embed_tokens.weight
  layers: LayerWeights[];
  finalNorm: Float32Array; // [C]           model.norm.weight
  /** [V, C] lm_head.weight; null when tie_word_embeddings (the lm-head is `embed`). */
  lmHead: Float32Array | null;
  /**
   * Matrices the file held in one of our block formats (a GGUF's Q8_0 / Q4_0), by the f32 array
   * above they decode to: an upload in that format takes these blocks as they are instead of
   * re-quantizing the values (`GpuLlama.create`).
   */
  storedBlocks?: ReadonlyMap<Float32Array, QuantizedMatrix>;
}

/* ------------------------------------------------------------------------------------ */
/* Hugging Face tensor names                                                            */
/* ------------------------------------------------------------------------------------ */

/** HF module path of each per-layer tensor, after `model.layers.<i>.`. */
export const LAYER_TENSOR_NAMES: Record<keyof LayerWeights, string> = {
  inputNorm: 'input_layernorm.weight',
  q: 'self_attn.q_proj.weight',
  k: 'self_attn.k_proj.weight',
  v: 'self_attn.v_proj.weight',
  o: 'self_attn.o_proj.weight',
  postNorm: 'post_attention_layernorm.weight',
  gate: 'mlp.gate_proj.weight',
  up: 'mlp.up_proj.weight',
  down: 'mlp.down_proj.weight',
};

/** Where a tensor lives in `LlamaWeights`. */
export type WeightSlot = { layer: null; key: 'embed' | 'finalNorm' | 'lmHead' } | { layer: number; key: keyof LayerWeights };

/** One tensor a Llama checkpoint must hold: HF name, shape, and its place in `LlamaWeights`. */
export interface HfTensorSpec {
  name: string;
  shape: number[];
  slot: WeightSlot;
}

/**
 * Every tensor a checkpoint of `config` must hold, in HF order (embeddings, layers, final
 * norm, then `lm_head.weight` only when the embeddings are not tied).
 */
export function hfTensorNames(config: LlamaConfig): HfTensorSpec[] {
  const { vocabSize: V, hiddenSize: C, intermediateSize: F, numHeads: H, numKvHeads: KVH, headDim: D } = config;
  const layerShapes: Record<keyof LayerWeights, number[]> = {
    inputNorm: [C],
    q: [H * D, C],
    k: [KVH * D, C],
    v: [KVH * D, C],
    o: [C, H * D],
    postNorm: [C],
    gate: [F, C],
    up: [F, C],
    down: [C, F],
  };
  const specs: HfTensorSpec[] = [{ name: 'model.embed_tokens.weight', shape: [V, C], slot: { layer: null, key: 'embed' } }];
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const key of Object.keys(LAYER_TENSOR_NAMES) as (keyof LayerWeights)[]) {
      specs.push({ name: `model.layers.${layer}.${LAYER_TENSOR_NAMES[key]}`, shape: layerShapes[key], slot: { layer, key } });
    }
  }
  specs.push({ name: 'model.norm.weight', shape: [C], slot: { layer: null, key: 'finalNorm' } });
  if (!config.tieWordEmbeddings) specs.push({ name: 'lm_head.weight', shape: [V, C], slot: { layer: null, key: 'lmHead' } });
  return specs;
}

/** The array in `weights` at `slot` (`lmHead` is null for tied embeddings). */
export function weightAt(weights: LlamaWeights, slot: WeightSlot): Float32Array | null {
  return slot.layer === null ? weights[slot.key] : weights.layers[slot.layer][slot.key];
}

/** Number of parameters of a model of `config` (the tied lm-head is not counted twice). */
export function parameterCount(config: LlamaConfig): number {
  return hfTensorNames(config).reduce((sum, spec) => sum + spec.shape.reduce((a, d) => a * d, 1), 0);
}

/** Where `assembleWeights` gets tensors from: one safetensors file, or the shards of an index. */
export interface TensorLookup {
  /** File named when a tensor is missing, e.g. `model.safetensors` or `model.safetensors.index.json`. */
  readonly source: string;
  /** The file holding `name` and the tensor's shape there, or null when there is none. */
  find(name: string): { file: string; shape: readonly number[] } | null;
  /** The tensor's values as f32; called only for names `find` returned. */
  read(name: string): Promise<Float32Array>;
}

/**
 * Builds `LlamaWeights` for `config` from a checkpoint. Every expected tensor must exist
 * with exactly the expected shape (checked before its data is read); `lm_head.weight` is
 * required when the embeddings are untied and ignored when tied. Other tensors in the
 * checkpoint (such as `rotary_emb.inv_freq` buffers) are ignored. Tensors are read one at
 * a time, in HF order.
 *
 * @throws ModelFormatError naming the file and tensor of a missing or mis-shaped tensor
 */
export async function assembleWeights(config: LlamaConfig, tensors: TensorLookup): Promise<LlamaWeights> {
  const specs = hfTensorNames(config);
  // Check every tensor's presence and shape first, so a bad checkpoint fails before any reading.
  for (const spec of specs) {
    const found = tensors.find(spec.name);
    if (found === null) {
      const why = spec.slot.key === 'lmHead' ? ' (required because tie_word_embeddings is false)' : '';
      throw new ModelFormatError(tensors.source, spec.name, `missing; expected shape ${formatShape(spec.shape)}${why}`);
    }
    if (found.shape.length !== spec.shape.length || found.shape.some((d, i) => d !== spec.shape[i])) {
      throw new ModelFormatError(found.file, spec.name, `expected shape ${formatShape(spec.shape)}, found ${formatShape(found.shape)}`);
    }
  }
  const weights: LlamaWeights = {
    config,
    embed: new Float32Array(0),
    layers: [],
    finalNorm: new Float32Array(0),
    lmHead: null,
  };
  for (const spec of specs) {
    const data = await tensors.read(spec.name);
    const { slot } = spec;
    if (slot.layer === null) {
      weights[slot.key] = data;
    } else {
      weights.layers[slot.layer] ??= {} as LayerWeights; // all nine fields follow in this loop
      weights.layers[slot.layer][slot.key] = data;
    }
  }
  return weights;
}

/** `[64, 128]` */
function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
