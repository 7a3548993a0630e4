import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../../src/errors.ts';
import { configToJson, parseLlamaConfig, type LlamaConfig } from '../../src/model/config.ts';

/** SmolLM2-135M-Instruct's real config.json (copied into test/fixtures with its licence note). */
const smollm2 = JSON.parse(readFileSync(new URL('../fixtures/smollm2-135m-config.json', import.meta.url), 'utf8')) as Record<
  string,
  unknown
>;

/** A Llama-3.2-1B-shaped config (published values). */
const llama32: Record<string, unknown> = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 128256,
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  hidden_act: 'silu',
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  },
  max_position_embeddings: 131072,
  tie_word_embeddings: true,
  attention_bias: false,
  mlp_bias: false,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  torch_dtype: 'bfloat16',
};

const minimal = {
  model_type: 'llama',
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
};

function errorOf(json: unknown, fileName?: string): ModelFormatError {
  try {
    parseLlamaConfig(json, fileName);
  } catch (e) {
    expect(e).toBeInstanceOf(ModelFormatError);
    return e as ModelFormatError;
  }
  throw new Error('expected parseLlamaConfig to throw');
}

const withField = (base: Record<string, unknown>, field: string, value: unknown) => ({ ...base, [field]: value });

describe('parseLlamaConfig: valid configs', () => {
  it('reads SmolLM2-135M-Instruct', () => {
    expect(parseLlamaConfig(smollm2)).toEqual({
      modelType: 'llama',
      vocabSize: 49152,
      hiddenSize: 576,
      intermediateSize: 1536,
      numLayers: 30,
      numHeads: 9,
      numKvHeads: 3,
      headDim: 64,
      rmsNormEps: 1e-5,
      ropeTheta: 100000,
      ropeScaling: null,
      maxPositionEmbeddings: 8192,
      tieWordEmbeddings: true,
      bosTokenId: 1,
      eosTokenId: 2,
    } satisfies LlamaConfig);
  });

  it('reads Llama 3.2 with llama3 rope scaling and a list of EOS ids', () => {
    const config = parseLlamaConfig(llama32);
    expect(config.ropeScaling).toEqual({
      ropeType: 'llama3',
      factor: 32,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
    expect(config).toMatchObject({ headDim: 64, numKvHeads: 8, ropeTheta: 500000, bosTokenId: 128000 });
    expect(config.eosTokenId).toEqual([128001, 128008, 128009]);
  });

  it('accepts the older `type` key, and rope_type "default" as no scaling', () => {
    const { rope_type: _, ...old } = llama32.rope_scaling as Record<string, unknown>;
    expect(parseLlamaConfig(withField(llama32, 'rope_scaling', { ...old, type: 'llama3' })).ropeScaling?.factor).toBe(32);
    expect(parseLlamaConfig(withField(llama32, 'rope_scaling', { rope_type: 'default' })).ropeScaling).toBeNull();
  });

  it('applies the transformers defaults', () => {
    expect(parseLlamaConfig(minimal)).toEqual({
      modelType: 'llama',
      vocabSize: 32,
      hiddenSize: 16,
      intermediateSize: 32,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 4,
      headDim: 4,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      ropeScaling: null,
      maxPositionEmbeddings: 2048,
      tieWordEmbeddings: false,
      bosTokenId: null,
      eosTokenId: null,
    } satisfies LlamaConfig);
  });

  it('accepts a missing model_type when architectures names LlamaForCausalLM', () => {
    const { model_type: _, ...rest } = minimal;
    expect(parseLlamaConfig({ ...rest, architectures: ['LlamaForCausalLM'] }).modelType).toBe('llama');
  });

  it('round-trips through configToJson', () => {
    for (const json of [smollm2, llama32, minimal]) {
      const config = parseLlamaConfig(json);
      expect(parseLlamaConfig(JSON.parse(JSON.stringify(configToJson(config))))).toEqual(config);
    }
    expect(configToJson(parseLlamaConfig(llama32))).toMatchObject({
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    });
  });
});

describe('parseLlamaConfig: errors name the field', () => {
  it('reports a missing required field', () => {
    const { num_hidden_layers: _, ...rest } = minimal;
    expect(errorOf(rest).message).toBe('config.json (num_hidden_layers): missing; expected a positive integer');
    expect(errorOf(rest).field).toBe('num_hidden_layers');
    expect(errorOf(rest, 'models/x/config.json').message).toBe(
      'models/x/config.json (num_hidden_layers): missing; expected a positive integer',
    );
  });

  it('reports wrongly typed numbers with what was found', () => {
    expect(errorOf(withField(minimal, 'hidden_size', '16')).message).toBe(
      'config.json (hidden_size): expected a positive integer, found "16"',
    );
    expect(errorOf(withField(minimal, 'vocab_size', 0)).message).toBe('config.json (vocab_size): expected a positive integer, found 0');
    expect(errorOf(withField(minimal, 'rms_norm_eps', -1)).message).toBe(
      'config.json (rms_norm_eps): expected a positive number, found -1',
    );
  });

  it('rejects other model types and a non-object', () => {
    expect(errorOf(withField(minimal, 'model_type', 'mistral')).message).toBe(
      'config.json (model_type): unsupported model type "mistral"; expected "llama"',
    );
    const { model_type: _, ...rest } = minimal;
    expect(errorOf(rest).message).toBe(
      'config.json (model_type): missing; expected "llama" (or architectures containing "LlamaForCausalLM")',
    );
    expect(errorOf([1]).message).toBe('config.json: expected a JSON object, found [1]');
  });

  it('rejects unsupported rope scaling types', () => {
    for (const type of ['linear', 'dynamic', 'yarn']) {
      expect(errorOf(withField(llama32, 'rope_scaling', { rope_type: type, factor: 2 })).message).toBe(
        `config.json (rope_scaling.rope_type): unsupported rope scaling "${type}"; supported: "llama3" (or null for none)`,
      );
    }
    expect(errorOf(withField(llama32, 'rope_scaling', { type: 'linear', factor: 2 })).field).toBe('rope_scaling.rope_type');
    expect(errorOf(withField(llama32, 'rope_scaling', { factor: 2 })).message).toBe(
      'config.json (rope_scaling.rope_type): unsupported rope scaling nothing; supported: "llama3" (or null for none)',
    );
  });

  it('validates llama3 rope scaling parameters', () => {
    const scaling = llama32.rope_scaling as Record<string, unknown>;
    const { factor: _, ...noFactor } = scaling;
    expect(errorOf(withField(llama32, 'rope_scaling', noFactor)).message).toBe(
      'config.json (rope_scaling.factor): expected a positive number, found nothing',
    );
    expect(errorOf(withField(llama32, 'rope_scaling', { ...scaling, original_max_position_embeddings: 81.5 })).message).toBe(
      'config.json (rope_scaling.original_max_position_embeddings): expected a positive integer, found 81.5',
    );
    expect(errorOf(withField(llama32, 'rope_scaling', { ...scaling, high_freq_factor: 1 })).message).toBe(
      'config.json (rope_scaling.high_freq_factor): expected a number greater than low_freq_factor (1), found 1',
    );
  });

  it('rejects biases and other activations', () => {
    expect(errorOf(withField(minimal, 'attention_bias', true)).message).toBe(
      'config.json (attention_bias): true is not supported; expected false (Llama projections without biases)',
    );
    expect(errorOf(withField(minimal, 'mlp_bias', true)).message).toBe(
      'config.json (mlp_bias): true is not supported; expected false (Llama projections without biases)',
    );
    expect(errorOf(withField(minimal, 'hidden_act', 'gelu')).message).toBe(
      'config.json (hidden_act): unsupported activation "gelu"; expected "silu"',
    );
  });

  it('checks head counts and head_dim', () => {
    expect(errorOf({ ...smollm2, num_key_value_heads: 4 }).message).toBe(
      'config.json (num_key_value_heads): expected a divisor of num_attention_heads (9), found 4',
    );
    expect(errorOf(withField(minimal, 'num_attention_heads', 5)).message).toBe(
      'config.json (head_dim): missing, and hidden_size 16 is not a multiple of num_attention_heads 5',
    );
    expect(errorOf({ ...minimal, num_attention_heads: 5, head_dim: 3 }).message).toBe(
      'config.json (head_dim): expected an even number (rotary embeddings rotate pairs), found 3',
    );
    expect(parseLlamaConfig({ ...minimal, num_attention_heads: 5, head_dim: 6 }).headDim).toBe(6);
  });

  it('checks token ids and flags', () => {
    expect(errorOf(withField(minimal, 'eos_token_id', [])).message).toBe(
      'config.json (eos_token_id): expected a token id, a non-empty list of token ids, or null, found []',
    );
    expect(errorOf(withField(minimal, 'bos_token_id', -1)).message).toBe(
      'config.json (bos_token_id): expected a token id (non-negative integer) or null, found -1',
    );
    expect(errorOf(withField(minimal, 'tie_word_embeddings', 'yes')).message).toBe(
      'config.json (tie_word_embeddings): expected true or false, found "yes"',
    );
  });
});
