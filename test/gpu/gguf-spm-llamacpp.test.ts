/**
 * SentencePiece GGUF vocabularies (`tokenizer.ggml.model` = "llama") against llama.cpp's own
 * tokenizer (node-llama-cpp's CPU binary; no GPU is used): a tiny model whose vocabulary was
 * learnt the way SentencePiece's BPE trainer learns one (`spmTestVocabulary`: 3 special pieces,
 * the 256 byte pieces, ≈ 300 merged pieces, the single characters), loaded by our GGUF loader
 * (`tokenizer.json` built by `src/model/gguf-spm.ts`) and by llama.cpp from the same file, must
 * give the same ids for every text, and decode llama.cpp's ids to the same text.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { getLlama, type Llama, type LlamaModel, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { loadModelFolder } from '../../src/model/loader.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { spmTestVocabulary, spmTinyLlama, spmTokenizerMetadata, tinyLlamaGguf } from '../fixtures/gguf-llama.ts';
import { makeTmpDir } from '../fixtures/tiny-llama.ts';

/** Texts of every kind a SentencePiece tokenizer treats apart. */
const TEXTS = [
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  ' one space at the start',
  '   three spaces at the start',
  'several     spaces    between  words',
  'trailing spaces   ',
  'new\nlines\n\nand a tab\there',
  '\nstarts with a newline',
  'digits 0123456789, 3.14 and 12345',
  'accents: café, naïve, über, Ångström, señor',
  'emoji need byte pieces: 🦙 😀👍🏽 and ✓',
  'CJK: 中文字符 日本語',
  'control bytes \u0001\u0007 and DEL \u007f',
  'THE END? "quotes" (brackets) - dashes; colons:',
  'kaloming qusate phan',
  'x',
  ' ',
  '',
];

/** A literal "▁" is a space to SentencePiece: both sides encode it as one and decode it as " ". */
const LITERAL_MARKER = 'a literal \u2581 piece marker';

let tmp: string;
let llama: Llama;
let model: LlamaModel;
let ours: TextTokenizer;
let vocabSize: number;
let loadedTokenizerJson: unknown;
let loadedTokenizerConfig: unknown;

beforeAll(async () => {
  tmp = await makeTmpDir('gguf-spm');
  const vocabulary = spmTestVocabulary(5);
  vocabSize = vocabulary.tokens.length;
  const weights = spmTinyLlama(3, vocabSize);
  const file = 'spm.gguf';
  await writeFile(path.join(tmp, file), tinyLlamaGguf(weights, spmTokenizerMetadata(vocabulary)));
  const loaded = await loadModelFolder(new FolderSource(tmp, file));
  loadedTokenizerJson = loaded.tokenizerJson;
  loadedTokenizerConfig = loaded.tokenizerConfig;
  ours = TextTokenizer.fromJson(loaded.tokenizerJson, loaded.tokenizerConfig);
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  model = await llama.loadModel({ modelPath: path.join(tmp, file), vocabOnly: true });
});

afterAll(async () => {
  await model?.dispose();
  await llama?.dispose();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('SentencePiece GGUF vocabularies, our tokenizer against llama.cpp on the same file', () => {
  it('the vocabulary is realistic: byte pieces, merged pieces of several characters, texts needing byte fallback', () => {
    expect(vocabSize).toBeGreaterThan(500);
    const lengths = TEXTS.map((t) => ours.encode(t).length);
    const chars = TEXTS.map((t) => Array.from(t).length);
    // merges happen (fewer ids than characters on English text) and byte fallback happens (more on emoji/CJK)
    expect(lengths[1]).toBeLessThan(chars[1] / 2);
    expect(lengths[11]).toBeGreaterThan(chars[11]);
  });

  it('a literal "▁" in the text is a space to both', () => {
    const theirs = [...model.tokenize(LITERAL_MARKER, false)].map(Number);
    expect(ours.encode(LITERAL_MARKER)).toEqual(theirs);
    expect(ours.decode(theirs)).toBe(model.detokenize(theirs as Token[], false));
    expect(ours.decode(theirs)).toBe(LITERAL_MARKER.replace('\u2581', ' '));
  });

  it('merges in the opposite order of scores, or no byte fallback, give other ids (the comparison can fail)', () => {
    const json = loadedTokenizerJson as { model: { merges: unknown[]; byte_fallback: boolean } };
    const variants = [
      { ...json, model: { ...json.model, merges: [...json.model.merges].reverse() } },
      { ...json, model: { ...json.model, byte_fallback: false } },
    ];
    for (const variant of variants) {
      const wrong = TextTokenizer.fromJson(variant, loadedTokenizerConfig);
      const differs = TEXTS.filter((t) => JSON.stringify(wrong.encode(t)) !== JSON.stringify([...model.tokenize(t, false)].map(Number)));
      expect(differs.length).toBeGreaterThan(0);
    }
  });

  for (const text of TEXTS) {
    it(`encodes and decodes ${JSON.stringify(text)} as llama.cpp does`, () => {
      const theirs = [...model.tokenize(text, false)].map(Number);
      expect(ours.encode(text)).toEqual(theirs);
      expect(ours.decode(theirs)).toBe(model.detokenize(theirs as Token[], false));
      expect(ours.decode(theirs)).toBe(text);
    });
  }
});
