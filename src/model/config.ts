/**
 * Llama model configuration: the subset of Hugging Face `config.json` that
 * `LlamaForCausalLM` semantics need, validated, with camelCase names.
 */

/** llama3 (Llama 3.1/3.2) rotary frequency scaling. */
export interface Llama3RopeScaling {
  ropeType: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface LlamaConfig {
  /** `model_type`, always "llama" after validation. */
  modelType: 'llama';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** `head_dim` when present, else hidden_size / num_attention_heads. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: Llama3RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
}
