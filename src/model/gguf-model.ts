/**
 * A GGUF model file (llama.cpp, Ollama, LM Studio) as a base model: the `llama.*` keys become a
 * `LlamaConfig`, the tensors under llama.cpp's names our Hugging Face-layout weights (q/k rows
 * put back in Hugging Face's order), and `tokenizer.ggml.*` a `tokenizer.json` and
 * `tokenizer_config.json` for `TextTokenizer` (or the `tokenizer.json` beside the file, when the
 * user put one there). Weights are read one tensor at a time, as from a folder.
 */
import { ModelFormatError } from '../errors.ts';
import { type LlamaConfig, parseLlamaConfig } from './config.ts';
import { type GgufArray, type GgufEntry, type GgufHeader, readGgufHeader, readGgufTensor } from './gguf.ts';
import { ggufRopeRowSource } from './gguf-format.ts';
import { spmTokenizerJson } from './gguf-spm.ts';
import { type LoadedModel, type LoadModelOptions, readJsonFile, TOKENIZER_FILE } from './loader.ts';
import type { QuantizedMatrix } from './quant.ts';
import type { FileSource } from './source.ts';
import { assembleWeights, hfTensorNames, LAYER_TENSOR_NAMES, type LayerWeights, type LlamaWeights, type TensorLookup } from './weights.ts';

/** llama.cpp's name of each per-layer tensor (after `blk.N.`). */
const GGUF_LAYER_NAMES: Record<keyof LayerWeights, string> = {
  inputNorm: 'attn_norm.weight',
  q: 'attn_q.weight',
  k: 'attn_k.weight',
  v: 'attn_v.weight',
  o: 'attn_output.weight',
  postNorm: 'ffn_norm.weight',
  gate: 'ffn_gate.weight',
  up: 'ffn_up.weight',
  down: 'ffn_down.weight',
};

/** The llama.cpp tensor name of a Hugging Face tensor name. */
function ggufName(hfName: string): string {
  if (hfName === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hfName === 'model.norm.weight') return 'output_norm.weight';
  if (hfName === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  const key = m && (Object.keys(LAYER_TENSOR_NAMES) as (keyof LayerWeights)[]).find((k) => LAYER_TENSOR_NAMES[k] === m[2]);
  if (!m || !key) throw new RangeError(`ggufName: no llama.cpp name for ${hfName}`);
  return `blk.${m[1]}.${GGUF_LAYER_NAMES[key]}`;
}

/**
 * Loads a GGUF Llama model from `source` (the file `fileName`, and a `tokenizer.json` beside it
 * when present, which then wins over the file's own vocabulary).
 *
 * @throws ModelFormatError naming the file and the key or tensor at fault
 */
export async function loadGgufModel(source: FileSource, fileName: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
  const header = await readGgufHeader(source, fileName);
  const plain = ggufLlamaConfig(header);
  const ropeFreqFactors = await ggufRopeFreqFactors(source, header, plain.headDim);
  const config: LlamaConfig = ropeFreqFactors === null ? plain : { ...plain, ropeFreqFactors };
  const files = [fileName];
  let tokenizerJson: unknown | null = null;
  if ((await source.size(TOKENIZER_FILE)) !== null) {
    tokenizerJson = await readJsonFile(source, TOKENIZER_FILE);
    files.push(TOKENIZER_FILE);
  }
  const tokenizer = ggufTokenizer(header, config, tokenizerJson === null);
  const storedBlocks = new Map<Float32Array, QuantizedMatrix>();
  const lookup = ggufLookup(source, header, config, storedBlocks, options.onProgress);
  const weights: LlamaWeights = { ...(await assembleWeights(config, lookup)), storedBlocks };
  return {
    config,
    weights,
    tokenizerJson: tokenizerJson ?? tokenizer.json,
    tokenizerConfig: tokenizer.config,
    files,
  };
}

/** The metadata value of `key` when it has one of `types`, else null when absent; another type is an error. */
function entry<T extends GgufEntry['value']>(header: GgufHeader, key: string, types: readonly string[], expected: string): T | null {
  const e = header.metadata.get(key);
  if (e === undefined) return null;
  if (!types.includes(e.type)) throw new ModelFormatError(header.file, key, `expected ${expected}, found a ${e.type}`);
  return e.value as T;
}

const INT_TYPES = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'uint64', 'int64'];
const FLOAT_TYPES = ['float32', 'float64'];

/** An integer-valued key as a number (null when absent). */
function intKey(header: GgufHeader, key: string): number | null {
  const v = entry<number | bigint>(header, key, INT_TYPES, 'an integer');
  return v === null ? null : Number(v);
}

/** A required positive integer key. */
function positiveKey(header: GgufHeader, key: string, fallback?: number): number {
  const v = intKey(header, key) ?? fallback;
  if (v === undefined) throw new ModelFormatError(header.file, key, 'missing; expected a positive integer');
  if (!Number.isSafeInteger(v) || v <= 0) throw new ModelFormatError(header.file, key, `expected a positive integer, found ${v}`);
  return v;
}

/**
 * A float key (null when absent); a float32 as the shortest decimal that rounds to it (1e-5, not
 * 9.99999974e-6), as a `config.json` would give it.
 */
function floatKey(header: GgufHeader, key: string): number | null {
  const v = entry<number>(header, key, FLOAT_TYPES, 'a float');
  if (v === null || header.metadata.get(key)?.type !== 'float32') return v;
  for (let digits = 1; digits < 9; digits++) {
    const short = Number(v.toPrecision(digits));
    if (Math.fround(short) === v) return short;
  }
  return v;
}

/** A string key (null when absent). */
function stringKey(header: GgufHeader, key: string): string | null {
  return entry<string>(header, key, ['string'], 'a string');
}

/** An array key of one item type (null when absent). */
function arrayKey(header: GgufHeader, key: string, itemTypes: readonly string[], expected: string): GgufArray | null {
  const v = entry<GgufArray>(header, key, ['array'], expected);
  if (v !== null && !itemTypes.includes(v.itemType))
    throw new ModelFormatError(header.file, key, `expected ${expected}, found items of ${v.itemType}`);
  return v;
}

/**
 * The model's `LlamaConfig` from llama.cpp's `llama.*` keys (`llama-arch.cpp`'s LLM_KV names):
 * `embedding_length`, `block_count`, `feed_forward_length`, `attention.head_count(_kv)`,
 * `attention.key_length` (else embedding / heads), `attention.layer_norm_rms_epsilon`,
 * `rope.freq_base`, `context_length`, `vocab_size` (else the token list's length); the
 * embeddings are tied when there is no `output.weight`. The `rope_freqs` tensor, when there is
 * one, is read apart (`ggufRopeFreqFactors`).
 */
export function ggufLlamaConfig(header: GgufHeader): LlamaConfig {
  const fail = (key: string, detail: string): never => {
    throw new ModelFormatError(header.file, key, detail);
  };
  if (stringKey(header, 'general.type') === 'adapter') {
    fail('general.type', 'this is a LoRA adapter, not a model; open the base model it was made for');
  }
  const arch = stringKey(header, 'general.architecture');
  if (arch !== 'llama') fail('general.architecture', `expected "llama", found ${arch === null ? 'nothing' : JSON.stringify(arch)}`);
  const tokens = arrayKey(header, 'tokenizer.ggml.tokens', ['string'], 'a list of token strings');
  const hidden = positiveKey(header, 'llama.embedding_length');
  const heads = positiveKey(header, 'llama.attention.head_count');
  const headDim = positiveKey(header, 'llama.attention.key_length', hidden / heads);
  const rotary = positiveKey(header, 'llama.rope.dimension_count', headDim);
  if (rotary !== headDim)
    fail('llama.rope.dimension_count', `expected ${headDim} (the head size: partial rotary is not supported), found ${rotary}`);
  const scaling = stringKey(header, 'llama.rope.scaling.type');
  if (scaling !== null && scaling !== 'none')
    fail('llama.rope.scaling.type', `unsupported rope scaling ${JSON.stringify(scaling)}; expected none`);
  const eos = intKey(header, 'tokenizer.ggml.eos_token_id');
  const json = {
    model_type: 'llama',
    vocab_size: positiveKey(header, 'llama.vocab_size', tokens?.items.length),
    hidden_size: hidden,
    intermediate_size: positiveKey(header, 'llama.feed_forward_length'),
    num_hidden_layers: positiveKey(header, 'llama.block_count'),
    num_attention_heads: heads,
    num_key_value_heads: positiveKey(header, 'llama.attention.head_count_kv', heads),
    head_dim: headDim,
    rms_norm_eps: floatKey(header, 'llama.attention.layer_norm_rms_epsilon') ?? undefined,
    rope_theta: floatKey(header, 'llama.rope.freq_base') ?? undefined,
    max_position_embeddings: positiveKey(header, 'llama.context_length', 2048),
    tie_word_embeddings: !header.tensors.has('output.weight'),
    bos_token_id: intKey(header, 'tokenizer.ggml.bos_token_id'),
    eos_token_id: eos,
  };
  return parseLlamaConfig(json, `${header.file} (llama.* keys)`);
}

/** The GGUF tensor of Llama 3.1/3.2 rope frequency factors (llama.cpp's `LLM_TENSOR_ROPE_FREQS`). */
const ROPE_FREQS_TENSOR = 'rope_freqs.weight';

/**
 * The values of the file's `rope_freqs.weight` (null when it has none): llama.cpp's converter
 * stores Llama 3.1/3.2's llama3 rope scaling as one divisor per rotary frequency (head size / 2
 * of them, F32), which ggml's rope applies as the `freq_factors` of `ggml_rope_ext`.
 *
 * @throws ModelFormatError naming the tensor when it is not head size / 2 positive finite numbers
 */
async function ggufRopeFreqFactors(source: FileSource, header: GgufHeader, headDim: number): Promise<number[] | null> {
  const info = header.tensors.get(ROPE_FREQS_TENSOR);
  if (info === undefined) return null;
  const half = headDim / 2;
  const fail = (detail: string): never => {
    throw new ModelFormatError(header.file, ROPE_FREQS_TENSOR, detail);
  };
  if (info.shape.length !== 1 || info.shape[0] !== half) {
    fail(`expected ${half} values (one per rotary frequency), found shape [${info.shape.join(', ')}]`);
  }
  const { values } = await readGgufTensor(source, header, ROPE_FREQS_TENSOR);
  const bad = values.findIndex((v) => !Number.isFinite(v) || v <= 0);
  if (bad >= 0) fail(`expected positive finite factors, found ${values[bad]} at index ${bad}`);
  return Array.from(values);
}

/**
 * A `TensorLookup` over the GGUF's tensors under Hugging Face names (shapes are the reverse of
 * `ne`, i.e. [out, in]), putting the rows of `attn_q`/`attn_k` back in Hugging Face's order; the
 * Q8_0 / Q4_0 blocks of each matrix go into `storedBlocks` under the values they decode to.
 */
function ggufLookup(
  source: FileSource,
  header: GgufHeader,
  config: LlamaConfig,
  storedBlocks: Map<Float32Array, QuantizedMatrix>,
  onProgress?: (done: number, total: number) => void,
): TensorLookup {
  let total = 0;
  for (const spec of hfTensorNames(config)) {
    const info = header.tensors.get(ggufName(spec.name));
    if (info) total += info.end - info.begin;
  }
  let done = 0;
  onProgress?.(0, total);
  return {
    source: header.file,
    find: (name) => {
      const info = header.tensors.get(ggufName(name));
      return info === undefined ? null : { file: `${header.file} (${info.name})`, shape: info.shape };
    },
    read: async (name) => {
      const gguf = ggufName(name);
      const info = header.tensors.get(gguf)!;
      const { values, blocks } = await readGgufTensor(source, header, gguf);
      done += info.end - info.begin;
      onProgress?.(done, total);
      const heads = name.endsWith('q_proj.weight') ? config.numHeads : name.endsWith('k_proj.weight') ? config.numKvHeads : null;
      const rows = heads === null ? null : ggufRopeRowSource(values.length / config.hiddenSize, heads);
      const hf = rows ? toHfRows(values, rows) : values;
      if (blocks) {
        const moved = (a: Uint32Array | Float32Array) => (rows ? toHfRows(a, rows) : a);
        storedBlocks.set(hf, { ...blocks, data: moved(blocks.data), scales: blocks.scales && (moved(blocks.scales) as Float32Array) });
      }
      return hf;
    },
  };
}

/** `a`'s rows (of equal length) in Hugging Face's order: file row r goes to row `source[r]`. */
function toHfRows<T extends Float32Array | Uint32Array>(a: T, source: Int32Array): T {
  const len = a.length / source.length;
  const out = new (a.constructor as new (n: number) => T)(a.length);
  source.forEach((from, row) => out.set(a.subarray(row * len, (row + 1) * len), from * len));
  return out;
}

/** llama.cpp's token types (`enum llama_token_type`) that become added tokens: unknown, control, user-defined. */
const TOKEN_TYPE_UNKNOWN = 2;
const TOKEN_TYPE_CONTROL = 3;
const TOKEN_TYPE_USER_DEFINED = 4;

/** Hugging Face pre-tokenizers for llama.cpp's `tokenizer.ggml.pre` names of gpt2-style BPE vocabularies. */
const BYTE_LEVEL = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
const PRE_TOKENIZERS: Record<string, unknown> = {
  default: BYTE_LEVEL,
  gpt2: BYTE_LEVEL,
  smollm: { type: 'Sequence', pretokenizers: [{ type: 'Digits', individual_digits: true }, BYTE_LEVEL] },
  'llama-bpe': {
    type: 'Sequence',
    pretokenizers: [
      {
        type: 'Split',
        pattern: {
          Regex:
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        },
        behavior: 'Isolated',
        invert: false,
      },
      { ...BYTE_LEVEL, use_regex: false },
    ],
  },
};

/**
 * `tokenizer.json` and `tokenizer_config.json` objects from `tokenizer.ggml.*`: a gpt2-style BPE
 * (`model = gpt2`: tokens, merges, token types) or a SentencePiece vocabulary (`model = llama`:
 * tokens, scores, token types, `gguf-spm.ts`), unknown, control and user-defined tokens as added
 * tokens; the bos/eos tokens and `tokenizer.chat_template`. With `needVocab` false (a
 * tokenizer.json is beside the file) only the config is built.
 */
function ggufTokenizer(header: GgufHeader, config: LlamaConfig, needVocab: boolean): { json: unknown | null; config: unknown } {
  const tokens = arrayKey(header, 'tokenizer.ggml.tokens', ['string'], 'a list of token strings')?.items as string[] | undefined;
  const text = (key: string, id: number | null): string | null => {
    if (id === null) return null;
    if (tokens === undefined || id >= tokens.length)
      throw new ModelFormatError(header.file, key, `token id ${id} is not in tokenizer.ggml.tokens`);
    return tokens[id];
  };
  const tokenizerConfig = {
    bos_token: text('tokenizer.ggml.bos_token_id', config.bosTokenId),
    eos_token: text('tokenizer.ggml.eos_token_id', typeof config.eosTokenId === 'number' ? config.eosTokenId : null),
    chat_template: stringKey(header, 'tokenizer.chat_template'),
  };
  if (!needVocab) return { json: null, config: tokenizerConfig };
  const model = stringKey(header, 'tokenizer.ggml.model');
  const beside = `, or put the model's ${TOKENIZER_FILE} beside the .gguf file`;
  if (model !== 'gpt2' && model !== 'llama') {
    throw new ModelFormatError(
      header.file,
      'tokenizer.ggml.model',
      `expected "gpt2" (a byte-level BPE vocabulary) or "llama" (SentencePiece), found ${JSON.stringify(model)}${beside}`,
    );
  }
  if (tokens === undefined) throw new ModelFormatError(header.file, 'tokenizer.ggml.tokens', `missing${beside}`);
  const types = arrayKey(header, 'tokenizer.ggml.token_type', INT_TYPES, 'a list of token types')?.items as ArrayLike<number> | undefined;
  const listOfAll = (key: string, list: { items: ArrayLike<unknown> } | null): void => {
    if (list !== null && list.items.length !== tokens.length)
      throw new ModelFormatError(header.file, key, `expected ${tokens.length} items (one per token), found ${list.items.length}`);
  };
  listOfAll('tokenizer.ggml.token_type', types === undefined ? null : { items: types });
  const addedTokens: unknown[] = [];
  tokens.forEach((content, id) => {
    const type = types?.[id];
    if (type === TOKEN_TYPE_UNKNOWN || type === TOKEN_TYPE_CONTROL || type === TOKEN_TYPE_USER_DEFINED) {
      const special = type !== TOKEN_TYPE_USER_DEFINED;
      addedTokens.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
    }
  });
  if (model === 'llama') {
    const scores = arrayKey(header, 'tokenizer.ggml.scores', FLOAT_TYPES, 'a list of token scores');
    if (scores === null) throw new ModelFormatError(header.file, 'tokenizer.ggml.scores', `missing${beside}`);
    listOfAll('tokenizer.ggml.scores', scores);
    const unknownId = intKey(header, 'tokenizer.ggml.unknown_token_id');
    text('tokenizer.ggml.unknown_token_id', unknownId);
    const addSpacePrefix = entry<boolean>(header, 'tokenizer.ggml.add_space_prefix', ['bool'], 'true or false') ?? true;
    const json = spmTokenizerJson({ tokens, scores: scores.items as ArrayLike<number>, unknownId, addSpacePrefix, addedTokens });
    return { json, config: tokenizerConfig };
  }
  const merges = arrayKey(header, 'tokenizer.ggml.merges', ['string'], 'a list of merges') ?? null;
  if (merges === null) throw new ModelFormatError(header.file, 'tokenizer.ggml.merges', `missing${beside}`);
  const pre = stringKey(header, 'tokenizer.ggml.pre') ?? 'default';
  const preTokenizer = PRE_TOKENIZERS[pre];
  if (preTokenizer === undefined) {
    throw new ModelFormatError(
      header.file,
      'tokenizer.ggml.pre',
      `pre-tokenizer ${JSON.stringify(pre)} is not known here (known: ${Object.keys(PRE_TOKENIZERS).join(', ')})${beside}`,
    );
  }
  const vocab: Record<string, number> = {};
  tokens.forEach((t, id) => {
    vocab[t] = id;
  });
  const json = {
    version: '1.0',
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, fuse_unk: false, byte_fallback: false, vocab, merges: merges.items },
  };
  return { json, config: tokenizerConfig };
}
