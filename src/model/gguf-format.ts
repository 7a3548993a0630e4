/**
 * The GGUF file format (llama.cpp, Ollama, LM Studio): what a writer and a reader share.
 *
 * Layout, version 3, all little-endian (the spec: ggml's `docs/gguf.md`,
 * https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
 *
 * - header: magic `GGUF` (4 bytes), version u32, tensor count u64, metadata count u64;
 * - metadata: key (a GGUF string: u64 byte length + UTF-8, no terminator), value type u32, value;
 *   an array value is its item type u32, item count u64, then the items;
 * - tensor infos: name (GGUF string), dimension count u32, dimensions u64 each (`ne`, innermost
 *   first: the reverse of PyTorch's shape), ggml type u32, offset u64 into the data section (a
 *   multiple of the alignment);
 * - padding to `general.alignment` (default 32), then the data section, each tensor padded to
 *   the alignment.
 *
 * Llama tensors are named as llama.cpp's `llama-arch.cpp` names them (`blk.N.attn_q.weight`, …),
 * and llama.cpp stores the rows of `attn_q`/`attn_k` in another order than Hugging Face does
 * (see `ggufRopeRowSource`).
 */
import type { Projection } from './weights.ts';

/** The first four bytes of every GGUF file, `GGUF` in ASCII. */
export const GGUF_MAGIC = 'GGUF';
/** The version this module writes (and the one llama.cpp has written since 2023). */
export const GGUF_VERSION = 3;
/** Alignment of the data section and of every tensor in it when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types and their codes in the file. */
export const GGUF_VALUE_TYPE = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;
export type GgufValueType = keyof typeof GGUF_VALUE_TYPE;
/** The metadata types whose values are JavaScript numbers (the 64-bit integers are bigints). */
export type GgufNumericType = Exclude<GgufValueType, 'array' | 'string' | 'bool' | 'uint64' | 'int64'>;

/** One metadata value: a scalar of a type, or an array of numbers or strings of one type. */
export type GgufValue =
  | { type: GgufNumericType; value: number }
  | { type: 'uint64' | 'int64'; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; itemType: GgufNumericType; values: ArrayLike<number> }
  | { type: 'array'; itemType: 'string'; values: readonly string[] };

/**
 * Tensor element types (ggml's `enum ggml_type` in `ggml.h`) with their codes, and how many
 * elements one block holds and how many bytes it takes (ggml's `type_traits` in `ggml.c`): Q8_0
 * is an f16 scale and 32 int8; Q4_0 an f16 scale and 32 4-bit values; the K-quants are
 * super-blocks of 256. A reader needs every block size to bound a tensor's bytes, even of types
 * it does not decode; a code not listed here is refused.
 */
export const GGML_TYPES = {
  F32: { code: 0, blockElements: 1, blockBytes: 4 },
  F16: { code: 1, blockElements: 1, blockBytes: 2 },
  Q4_0: { code: 2, blockElements: 32, blockBytes: 18 },
  Q4_1: { code: 3, blockElements: 32, blockBytes: 20 },
  Q5_0: { code: 6, blockElements: 32, blockBytes: 22 },
  Q5_1: { code: 7, blockElements: 32, blockBytes: 24 },
  Q8_0: { code: 8, blockElements: 32, blockBytes: 34 },
  Q8_1: { code: 9, blockElements: 32, blockBytes: 36 },
  Q2_K: { code: 10, blockElements: 256, blockBytes: 84 },
  Q3_K: { code: 11, blockElements: 256, blockBytes: 110 },
  Q4_K: { code: 12, blockElements: 256, blockBytes: 144 },
  Q5_K: { code: 13, blockElements: 256, blockBytes: 176 },
  Q6_K: { code: 14, blockElements: 256, blockBytes: 210 },
  Q8_K: { code: 15, blockElements: 256, blockBytes: 292 },
  I8: { code: 24, blockElements: 1, blockBytes: 1 },
  I16: { code: 25, blockElements: 1, blockBytes: 2 },
  I32: { code: 26, blockElements: 1, blockBytes: 4 },
  I64: { code: 27, blockElements: 1, blockBytes: 8 },
  F64: { code: 28, blockElements: 1, blockBytes: 8 },
  BF16: { code: 30, blockElements: 1, blockBytes: 2 },
} as const;
export type GgmlTypeName = keyof typeof GGML_TYPES;

/** llama.cpp's name of each LoRA-targetable projection, as in `blk.N.<name>.weight`. */
export const GGUF_PROJECTION_NAME: Record<Projection, string> = {
  q_proj: 'attn_q',
  k_proj: 'attn_k',
  v_proj: 'attn_v',
  o_proj: 'attn_output',
  gate_proj: 'ffn_gate',
  up_proj: 'ffn_up',
  down_proj: 'ffn_down',
};

/** `blk.<layer>.<attn_q|…>.weight`: llama.cpp's name of a layer's projection weight. */
export function ggufProjectionTensorName(layer: number, proj: Projection): string {
  return `blk.${layer}.${GGUF_PROJECTION_NAME[proj]}.weight`;
}

/**
 * The row order llama.cpp expects for `attn_q` (heads = attention heads) and `attn_k` (heads =
 * KV heads): for each row of the GGUF tensor, the Hugging Face row it holds.
 *
 * Hugging Face's Llama rotates the two halves of each head (`rotate_half`: dimension i pairs
 * with i + d/2); llama.cpp's `llama` architecture rotates adjacent pairs (2i with 2i + 1). Its
 * converter (`LlamaModel.permute` in llama.cpp's `convert_hf_to_gguf.py`, also applied to the
 * rows of LoRA B by `convert_lora_to_gguf.py`) therefore reorders each head's rows as
 * (2, d/2) → (d/2, 2): GGUF row `h·d + 2i + j` is HF row `h·d + j·d/2 + i`. A writer gathers
 * rows with this map; a reader scatters them back with the same map.
 *
 * @throws RangeError when `rows` is not `heads` heads of an even size
 */
export function ggufRopeRowSource(rows: number, heads: number): Int32Array {
  const d = rows / heads;
  if (!Number.isInteger(d) || d % 2 !== 0) {
    throw new RangeError(`ggufRopeRowSource: ${rows} rows are not ${heads} heads of an even size`);
  }
  const half = d / 2;
  const source = new Int32Array(rows);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) source[h * d + 2 * i + j] = h * d + j * half + i;
    }
  }
  return source;
}
