/**
 * Llama model configuration: the subset of Hugging Face `config.json` that
 * `LlamaForCausalLM` semantics need, validated, with camelCase names.
 */
import { ModelFormatError } from '../errors.ts';
import { describeJsonValue, isRecord } from '../util/json.ts';

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
  /**
   * Explicit per-frequency divisors of the inverse frequencies (headDim / 2 of them): what
   * llama.cpp stores as the `rope_freqs` tensor of a Llama 3.1/3.2 GGUF file instead of the
   * llama3 parameters. Absent for a model without them; never together with `ropeScaling`.
   */
  ropeFreqFactors?: number[];
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
}

/* ------------------------------------------------------------------------------------ */
/* config.json parsing                                                                  */
/* ------------------------------------------------------------------------------------ */

/**
 * Validates a parsed Hugging Face `config.json` of a Llama model and returns its
 * `LlamaConfig`. Absent optional fields take the `transformers` defaults
 * (`num_key_value_heads` = heads, `head_dim` = hidden / heads, `rms_norm_eps` 1e-6,
 * `rope_theta` 10000, `max_position_embeddings` 2048, `tie_word_embeddings` false).
 *
 * @param json the parsed JSON
 * @param fileName named in error messages
 * @throws ModelFormatError naming the field, what was expected and what was found, for a
 *   missing or malformed field and for options this engine does not support
 */
export function parseLlamaConfig(json: unknown, fileName = 'config.json'): LlamaConfig {
  if (!isRecord(json)) throw new ModelFormatError(fileName, undefined, `expected a JSON object, found ${describeJsonValue(json)}`);
  const fail = (field: string, detail: string): never => {
    throw new ModelFormatError(fileName, field, detail);
  };
  /** A positive integer field; `fallback` when absent (required when no fallback). */
  const positiveInt = (field: string, fallback?: number): number => {
    const v = json[field];
    if (v === undefined && fallback !== undefined) return fallback;
    if (v === undefined) return fail(field, 'missing; expected a positive integer');
    if (!Number.isSafeInteger(v) || (v as number) <= 0) return fail(field, `expected a positive integer, found ${describeJsonValue(v)}`);
    return v as number;
  };
  /** A positive finite number field, `fallback` when absent. */
  const positiveNumber = (field: string, fallback: number): number => {
    const v = json[field];
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      return fail(field, `expected a positive number, found ${describeJsonValue(v)}`);
    return v;
  };
  /** A boolean field, `false` when absent or null. */
  const flag = (field: string): boolean => {
    const v = json[field];
    if (v === undefined || v === null) return false;
    if (typeof v !== 'boolean') return fail(field, `expected true or false, found ${describeJsonValue(v)}`);
    return v;
  };

  checkModelType(json, fail);
  if (json.hidden_act !== undefined && json.hidden_act !== 'silu') {
    fail('hidden_act', `unsupported activation ${describeJsonValue(json.hidden_act)}; expected "silu"`);
  }
  for (const field of ['attention_bias', 'mlp_bias']) {
    if (flag(field)) fail(field, 'true is not supported; expected false (Llama projections without biases)');
  }

  const vocabSize = positiveInt('vocab_size');
  const hiddenSize = positiveInt('hidden_size');
  const intermediateSize = positiveInt('intermediate_size');
  const numLayers = positiveInt('num_hidden_layers');
  const numHeads = positiveInt('num_attention_heads');
  const numKvHeads = positiveInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    fail('num_key_value_heads', `expected a divisor of num_attention_heads (${numHeads}), found ${numKvHeads}`);
  }
  if (json.head_dim === undefined && hiddenSize % numHeads !== 0) {
    fail('head_dim', `missing, and hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  }
  const headDim = positiveInt('head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) fail('head_dim', `expected an even number (rotary embeddings rotate pairs), found ${headDim}`);
  const ropeScaling = parseRopeScaling(json.rope_scaling, fail);
  const ropeFreqFactors = parseRopeFreqFactors(json.rope_freq_factors, headDim / 2, fail);
  if (ropeFreqFactors !== null && ropeScaling !== null) {
    fail('rope_freq_factors', 'expected either rope_scaling or rope_freq_factors, found both');
  }

  return {
    modelType: 'llama',
    vocabSize,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: positiveNumber('rms_norm_eps', 1e-6),
    ropeTheta: positiveNumber('rope_theta', 10000),
    ropeScaling,
    ...(ropeFreqFactors === null ? {} : { ropeFreqFactors }),
    maxPositionEmbeddings: positiveInt('max_position_embeddings', 2048),
    tieWordEmbeddings: flag('tie_word_embeddings'),
    bosTokenId: parseTokenId(json.bos_token_id, 'bos_token_id', fail),
    eosTokenId: parseEosTokenId(json.eos_token_id, fail),
  };
}

/**
 * Writes a config back as a Hugging Face `config.json` object (the fields `parseLlamaConfig`
 * reads, plus `architectures` and `hidden_act`), so that `parseLlamaConfig(configToJson(c))`
 * equals `c`. Explicit rope frequency factors, which Hugging Face configs cannot express, go
 * under this engine's own key `rope_freq_factors` (Hugging Face transformers ignores it).
 */
export function configToJson(config: LlamaConfig): Record<string, unknown> {
  const rs = config.ropeScaling;
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    hidden_act: 'silu',
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling:
      rs === null
        ? null
        : {
            rope_type: 'llama3',
            factor: rs.factor,
            low_freq_factor: rs.lowFreqFactor,
            high_freq_factor: rs.highFreqFactor,
            original_max_position_embeddings: rs.originalMaxPositionEmbeddings,
          },
    ...(config.ropeFreqFactors === undefined ? {} : { rope_freq_factors: config.ropeFreqFactors }),
    max_position_embeddings: config.maxPositionEmbeddings,
    tie_word_embeddings: config.tieWordEmbeddings,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenId,
  };
}

type Fail = (field: string, detail: string) => never;

/** `model_type` must be "llama"; when absent, `architectures` must name LlamaForCausalLM. */
function checkModelType(json: Record<string, unknown>, fail: Fail): void {
  const modelType = json.model_type;
  if (modelType === 'llama') return;
  if (modelType !== undefined) fail('model_type', `unsupported model type ${describeJsonValue(modelType)}; expected "llama"`);
  const arch = json.architectures;
  if (!Array.isArray(arch) || !arch.includes('LlamaForCausalLM')) {
    fail('model_type', 'missing; expected "llama" (or architectures containing "LlamaForCausalLM")');
  }
}

/**
 * `rope_scaling`: null/absent (or `rope_type: "default"`, which means no scaling), or the
 * llama3 scheme with its four parameters. The type is read from `rope_type`, else from the
 * older `type` key.
 */
function parseRopeScaling(v: unknown, fail: Fail): Llama3RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (!isRecord(v)) return fail('rope_scaling', `expected null or an object, found ${describeJsonValue(v)}`);
  const type = v.rope_type ?? v.type;
  if (type === 'default') return null;
  if (type !== 'llama3') {
    return fail('rope_scaling.rope_type', `unsupported rope scaling ${describeJsonValue(type)}; supported: "llama3" (or null for none)`);
  }
  const num = (key: string, integer: boolean): number => {
    const x = v[key];
    const ok = integer ? Number.isSafeInteger(x) && (x as number) > 0 : typeof x === 'number' && Number.isFinite(x) && x > 0;
    if (!ok) return fail(`rope_scaling.${key}`, `expected a positive ${integer ? 'integer' : 'number'}, found ${describeJsonValue(x)}`);
    return x as number;
  };
  const scaling: Llama3RopeScaling = {
    ropeType: 'llama3',
    factor: num('factor', false),
    lowFreqFactor: num('low_freq_factor', false),
    highFreqFactor: num('high_freq_factor', false),
    originalMaxPositionEmbeddings: num('original_max_position_embeddings', true),
  };
  if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
    fail(
      'rope_scaling.high_freq_factor',
      `expected a number greater than low_freq_factor (${scaling.lowFreqFactor}), found ${scaling.highFreqFactor}`,
    );
  }
  return scaling;
}

/**
 * `rope_freq_factors` (this engine's key, written by `configToJson` for a model read from a
 * GGUF file with `rope_freqs`): null/absent, or `half` positive finite numbers.
 */
function parseRopeFreqFactors(v: unknown, half: number, fail: Fail): number[] | null {
  if (v === undefined || v === null) return null;
  const ok = Array.isArray(v) && v.length === half && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0);
  if (!ok)
    return fail('rope_freq_factors', `expected null or a list of ${half} positive numbers (head_dim / 2), found ${describeJsonValue(v)}`);
  return [...(v as number[])];
}

/** A token id: a non-negative integer, or null/absent. */
function parseTokenId(v: unknown, field: string, fail: Fail): number | null {
  if (v === undefined || v === null) return null;
  if (!Number.isSafeInteger(v) || (v as number) < 0)
    return fail(field, `expected a token id (non-negative integer) or null, found ${describeJsonValue(v)}`);
  return v as number;
}

/** `eos_token_id`: a token id, a non-empty list of them, or null/absent. */
function parseEosTokenId(v: unknown, fail: Fail): number | number[] | null {
  if (!Array.isArray(v)) return parseTokenId(v, 'eos_token_id', fail);
  if (v.length === 0 || !v.every((id) => Number.isSafeInteger(id) && id >= 0)) {
    return fail('eos_token_id', `expected a token id, a non-empty list of token ids, or null, found ${describeJsonValue(v)}`);
  }
  return v as number[];
}
