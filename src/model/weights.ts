/**
 * Llama weights in host memory, f32, in Hugging Face layout (`nn.Linear` weight = [out, in], row-major).
 */
import type { LlamaConfig } from './config.ts';

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
}
