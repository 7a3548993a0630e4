/**
 * The two kinds of GGUF file that were refused before: Llama 3.1/3.2 files with a `rope_freqs`
 * tensor (their llama3 rope scaling as one divisor per frequency) and SentencePiece vocabularies
 * (`tokenizer.ggml.model` = "llama"). Their agreement with llama.cpp itself is checked in
 * test/gpu/gguf-llamacpp.test.ts and test/gpu/gguf-spm-llamacpp.test.ts; here: what the loader
 * makes of them, and the errors of malformed ones.
 */
import { describe, expect, it } from 'vitest';
import { configToJson, parseLlamaConfig } from '../../src/model/config.ts';
import { SPM_SPACE, spmMerges } from '../../src/model/gguf-spm.ts';
import { loadModelFolder } from '../../src/model/loader.ts';
import { ropeInvFreq } from '../../src/model/rope.ts';
import type { LlamaWeights } from '../../src/model/weights.ts';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import {
  ggufBytesSource,
  spmTestVocabulary,
  spmTinyLlama,
  spmTokenizerMetadata,
  tinyLlamaGguf,
  type GgufTokenizerMetadata,
} from '../fixtures/gguf-llama.ts';
import { Rng } from '../../src/util/rng.ts';

const vocabulary = spmTestVocabulary(5);
const spm = spmTokenizerMetadata(vocabulary);

/** A tiny model in the test SentencePiece vocabulary; `factors` as its rope_freqs. */
function tinyModel(factors?: number[]): LlamaWeights {
  const w = spmTinyLlama(9, vocabulary.tokens.length);
  return factors === undefined ? w : { ...w, config: { ...w.config, ropeFreqFactors: factors } };
}

/** Seeded factors in [1, 8] for head size 16 (8 frequencies), the first one 1 as in Llama 3.1. */
function seededFactors(seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: 8 }, (_, i) => (i === 0 ? 1 : Math.fround(rng.uniform(1, 8))));
}

describe('Llama 3.1/3.2 GGUF files: rope_freqs', () => {
  it('load with their factors, and the inverse frequencies are base^(-2i/d) / factor[i]', async () => {
    const factors = seededFactors(4);
    const loaded = await loadModelFolder(ggufBytesSource(tinyLlamaGguf(tinyModel(factors), spm)));
    expect(loaded.config.ropeFreqFactors).toEqual(factors);
    const inv = ropeInvFreq(loaded.config);
    const d = loaded.config.headDim;
    expect(d).toBe(16);
    for (let i = 0; i < d / 2; i++) expect(inv[i] / (500000 ** (-(2 * i) / d) / factors[i])).toBeCloseTo(1, 14);
    // the weights are untouched by the extra tensor
    expect(loaded.weights.embed).toEqual(tinyModel().embed);
    const plain = await loadModelFolder(ggufBytesSource(tinyLlamaGguf(tinyModel(), spm)));
    expect(plain.config.ropeFreqFactors).toBeUndefined();
    expect(ropeInvFreq(plain.config)[7]).toBeCloseTo(inv[7] * factors[7], 20);
  });

  it('survive config.json: configToJson writes rope_freq_factors and parseLlamaConfig reads them back', () => {
    const config = tinyModel(seededFactors(4)).config;
    expect(parseLlamaConfig(configToJson(config))).toEqual(config);
    expect(configToJson(tinyModel().config)).not.toHaveProperty('rope_freq_factors');
    const json = configToJson(config);
    expect(() => parseLlamaConfig({ ...json, rope_freq_factors: [1, 2] })).toThrow(
      'config.json (rope_freq_factors): expected null or a list of 8 positive numbers (head_dim / 2), found [1,2]',
    );
    expect(() => parseLlamaConfig({ ...json, rope_freq_factors: [1, 2, 3, 4, 5, 6, 7, 0] })).toThrow(/rope_freq_factors/);
    const llama3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 };
    expect(() => parseLlamaConfig({ ...json, rope_scaling: llama3 })).toThrow(
      'config.json (rope_freq_factors): expected either rope_scaling or rope_freq_factors, found both',
    );
  });

  it('refuses a rope_freqs tensor of the wrong length or with a factor that is not positive, naming it', async () => {
    const bytes = tinyLlamaGguf(tinyModel([1, 2, 3, 4, 5, 6, 7, -8]), spm);
    await expect(loadModelFolder(ggufBytesSource(bytes))).rejects.toThrow(
      'model.gguf (rope_freqs.weight): expected positive finite factors, found -8 at index 7',
    );
    await expect(loadModelFolder(ggufBytesSource(tinyLlamaGguf(tinyModel([1, 2, 3, 4]), spm)))).rejects.toThrow(
      'model.gguf (rope_freqs.weight): expected 8 values (one per rotary frequency), found shape [4]',
    );
  });
});

describe('SentencePiece GGUF vocabularies', () => {
  it('become a BPE tokenizer.json with byte fallback, score-ordered merges and the ▁ normalizer and decoders', async () => {
    const loaded = await loadModelFolder(ggufBytesSource(tinyLlamaGguf(tinyModel(), spm)));
    const json = loaded.tokenizerJson as {
      normalizer: unknown;
      decoder: { decoders: Array<{ type: string }> };
      model: { byte_fallback: boolean; unk_token: string; vocab: Record<string, number>; merges: Array<[string, string]> };
      added_tokens: Array<{ id: number; special: boolean }>;
    };
    expect(json.model.byte_fallback).toBe(true);
    expect(json.model.unk_token).toBe('<unk>');
    expect(Object.keys(json.model.vocab)).toHaveLength(vocabulary.tokens.length);
    expect(json.added_tokens.map((t) => [t.id, t.special])).toEqual([
      [0, true],
      [1, true],
      [2, true],
    ]);
    expect(json.decoder.decoders.map((d) => d.type)).toEqual(['Replace', 'ByteFallback', 'Fuse', 'Strip']);
    // every merge joins two pieces into a piece, highest score first
    const score = (piece: string) => vocabulary.scores[json.model.vocab[piece]];
    const joined = json.model.merges.map(([a, b]) => score(a + b));
    expect(joined.every((s, i) => i === 0 || s <= joined[i - 1])).toBe(true);
    expect(json.model.merges.length).toBeGreaterThan(300);
    const tokenizer = TextTokenizer.fromJson(loaded.tokenizerJson, loaded.tokenizerConfig);
    const ids = tokenizer.encode('Hello world');
    expect(vocabulary.tokens[ids[0]].startsWith(SPM_SPACE)).toBe(true);
    expect(tokenizer.decode(ids)).toBe('Hello world');
    // each token's text keeps its own space (decoding it alone would strip it, as the whole text's first)
    const text = 'The quick brown fox jumps over  the lazy dog.';
    const pieces = tokenizer.encode(text).map((id) => tokenizer.tokenText(id));
    expect(pieces.join('')).toBe(` ${text}`);
    expect(pieces.filter((p) => p.startsWith(' ')).length).toBeGreaterThan(5);
    expect(tokenizer.bosTokenId).toBe(1);
    expect(tokenizer.eosTokenIds).toEqual([2]);
  });

  it('spmMerges lists every split into two pieces, ordered by the joined piece’s score', () => {
    expect(spmMerges(['a', 'b', 'c', 'ab', 'abc', 'bc'], [-3, -4, -5, -1, 0, -2])).toEqual([
      ['a', 'bc'],
      ['ab', 'c'],
      ['a', 'b'],
      ['b', 'c'],
    ]);
  });

  it('add_space_prefix false: no ▁ in front of the text, none stripped when decoding', async () => {
    const noPrefix: GgufTokenizerMetadata = [...spm, ['tokenizer.ggml.add_space_prefix', { type: 'bool', value: false }]];
    const loaded = await loadModelFolder(ggufBytesSource(tinyLlamaGguf(tinyModel(), noPrefix)));
    const tokenizer = TextTokenizer.fromJson(loaded.tokenizerJson, loaded.tokenizerConfig);
    const ids = tokenizer.encode('Hello world');
    expect(vocabulary.tokens[ids[0]].startsWith(SPM_SPACE)).toBe(false);
    expect(tokenizer.decode(ids)).toBe('Hello world');
    expect(tokenizer.decode(tokenizer.encode(' x'))).toBe(' x');
  });

  it('refuses a vocabulary without scores, or with lists of another length than the tokens, naming the key', async () => {
    const without = spm.filter(([k]) => k !== 'tokenizer.ggml.scores');
    await expect(loadModelFolder(ggufBytesSource(tinyLlamaGguf(tinyModel(), without)))).rejects.toThrow(
      "model.gguf (tokenizer.ggml.scores): missing, or put the model's tokenizer.json beside the .gguf file",
    );
    const shortScores: GgufTokenizerMetadata = spm.map(([k, v]) =>
      k === 'tokenizer.ggml.scores' ? [k, { type: 'array', itemType: 'float32', values: vocabulary.scores.subarray(1) }] : [k, v],
    );
    await expect(loadModelFolder(ggufBytesSource(tinyLlamaGguf(tinyModel(), shortScores)))).rejects.toThrow(
      `model.gguf (tokenizer.ggml.scores): expected ${vocabulary.tokens.length} items (one per token), found ${vocabulary.tokens.length - 1}`,
    );
    const other: GgufTokenizerMetadata = spm.map(([k, v]) =>
      k === 'tokenizer.ggml.model' ? [k, { type: 'string', value: 'bert' }] : [k, v],
    );
    await expect(loadModelFolder(ggufBytesSource(tinyLlamaGguf(tinyModel(), other)))).rejects.toThrow(
      'model.gguf (tokenizer.ggml.model): expected "gpt2" (a byte-level BPE vocabulary) or "llama" (SentencePiece), found "bert"',
    );
  });
});
