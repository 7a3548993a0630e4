/**
 * GGUF writing (see `src/model/gguf-format.ts` for the layout), and LoRA adapters as GGUF for
 * llama.cpp (`--lora`) and Ollama (`ADAPTER`).
 *
 * The adapter file is what llama.cpp's own `convert_lora_to_gguf.py` writes and what its loader
 * (`llama_adapter_lora_init_impl` in `src/llama-adapter.cpp`) checks: `general.type` = `adapter`,
 * `general.architecture` = the base's (`llama`), `adapter.type` = `lora`, `adapter.lora.alpha`
 * (f32; llama.cpp scales the branch by alpha / rank, the rank read from B); per adapted weight
 * `blk.N.<attn_q|…>.weight.lora_a` with ne = (in, r) (PEFT's A, [r, in]) and `….lora_b` with
 * ne = (r, out) (PEFT's B, [out, r]), so that A's ne[0] and B's ne[1] equal the base weight's
 * ne; and B of `attn_q`/`attn_k` with its rows in llama.cpp's order (`ggufRopeRowSource`).
 */
import { NlftError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import {
  GGML_TYPES,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VALUE_TYPE,
  GGUF_VERSION,
  type GgmlTypeName,
  type GgufNumericType,
  type GgufValue,
  ggufProjectionTensorName,
  ggufRopeRowSource,
} from '../model/gguf-format.ts';
import { type LoraConfig, type LoraSet, validateLoraConfig } from '../model/lora.ts';
import { f32ToF16Bits } from '../model/safetensors.ts';
import { projectionShapes } from '../model/size.ts';
import { PROJECTIONS, type Projection } from '../model/weights.ts';

/**
 * A tensor to write: f32 values stored as F32 or F16, or blocks of a quantized type already
 * encoded as ggml stores them (test fixtures write models of each block type the reader decodes this way).
 */
export type GgufTensor = {
  name: string;
  /** Row-major shape, outermost first, as PyTorch and safetensors give it; the file stores it reversed (ne). */
  shape: readonly number[];
} & (
  | { type: Extract<GgmlTypeName, 'F32' | 'F16'>; data: Float32Array }
  | {
      type: Extract<GgmlTypeName, 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K'>;
      blocks: Uint8Array;
    }
);

/** What a GGUF file holds: metadata in order, then tensors in order. */
export interface GgufContents {
  metadata: ReadonlyArray<readonly [string, GgufValue]>;
  tensors: readonly GgufTensor[];
}

/** `general.alignment` when the metadata sets it (a uint32 power of two), else the default 32. */
function alignmentOf(metadata: GgufContents['metadata']): number {
  const entry = metadata.find(([key]) => key === 'general.alignment');
  if (entry === undefined) return GGUF_DEFAULT_ALIGNMENT;
  const v = entry[1];
  if (v.type !== 'uint32' || v.value <= 0 || (v.value & (v.value - 1)) !== 0) {
    throw new RangeError(`writeGguf: general.alignment must be a uint32 power of two, found ${JSON.stringify(v)}`);
  }
  return v.value;
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * Serialises `contents` as a GGUF v3 file: header, metadata, tensor infos, zero padding to the
 * alignment, then each tensor's data (little-endian) padded to the alignment.
 *
 * @throws RangeError for a tensor whose data length is not the product of its shape, or a
 *   malformed `general.alignment`
 */
export function writeGguf(contents: GgufContents): Uint8Array {
  const alignment = alignmentOf(contents.metadata);
  const out = new ByteWriter();
  out.bytes(new TextEncoder().encode(GGUF_MAGIC));
  out.u32(GGUF_VERSION);
  out.u64(BigInt(contents.tensors.length));
  out.u64(BigInt(contents.metadata.length));
  for (const [key, value] of contents.metadata) {
    out.string(key);
    out.u32(GGUF_VALUE_TYPE[value.type]);
    writeValue(out, value);
  }
  let offset = 0;
  for (const t of contents.tensors) {
    const { blockElements, blockBytes } = GGML_TYPES[t.type];
    const count = t.shape.reduce((a, b) => a * b, 1);
    const given = 'data' in t ? t.data.length : (t.blocks.length / blockBytes) * blockElements;
    if (count !== given) {
      throw new RangeError(`writeGguf: tensor ${t.name} has ${given} values, its shape [${t.shape.join(', ')}] holds ${count}`);
    }
    out.string(t.name);
    out.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) out.u64(BigInt(t.shape[i]));
    out.u32(GGML_TYPES[t.type].code);
    out.u64(BigInt(offset));
    offset = alignUp(offset + (count / blockElements) * blockBytes, alignment);
  }
  // The data section starts aligned, and each tensor at its offset: every one before it padded to the alignment.
  for (const t of contents.tensors) {
    out.pad(alignment);
    if ('blocks' in t) out.bytes(t.blocks);
    else if (t.type === 'F32') for (const v of t.data) out.numeric('float32', v);
    else for (const v of t.data) out.numeric('uint16', f32ToF16Bits(v));
  }
  out.pad(alignment);
  return out.finish();
}

/** A value's payload (its type code is already written). */
function writeValue(out: ByteWriter, v: GgufValue): void {
  switch (v.type) {
    case 'array':
      out.u32(GGUF_VALUE_TYPE[v.itemType]);
      out.u64(BigInt(v.values.length));
      if (v.itemType === 'string') for (const s of v.values) out.string(s);
      else for (let i = 0; i < v.values.length; i++) writeScalar(out, v.itemType, v.values[i]);
      return;
    case 'string':
      out.string(v.value);
      return;
    case 'bool':
      out.numeric('uint8', v.value ? 1 : 0);
      return;
    case 'uint64':
      out.u64(v.value);
      return;
    case 'int64':
      out.i64(v.value);
      return;
    default:
      writeScalar(out, v.type, v.value);
  }
}

/** The numeric scalar types: bytes, the range an integer type holds, and the DataView setter. */
const NUMERIC: Record<
  GgufNumericType,
  { bytes: number; range: [number, number] | null; set: (v: DataView, at: number, x: number) => void }
> = {
  uint8: { bytes: 1, range: [0, 2 ** 8], set: (v, at, x) => v.setUint8(at, x) },
  int8: { bytes: 1, range: [-(2 ** 7), 2 ** 7], set: (v, at, x) => v.setInt8(at, x) },
  uint16: { bytes: 2, range: [0, 2 ** 16], set: (v, at, x) => v.setUint16(at, x, true) },
  int16: { bytes: 2, range: [-(2 ** 15), 2 ** 15], set: (v, at, x) => v.setInt16(at, x, true) },
  uint32: { bytes: 4, range: [0, 2 ** 32], set: (v, at, x) => v.setUint32(at, x, true) },
  int32: { bytes: 4, range: [-(2 ** 31), 2 ** 31], set: (v, at, x) => v.setInt32(at, x, true) },
  float32: { bytes: 4, range: null, set: (v, at, x) => v.setFloat32(at, x, true) },
  float64: { bytes: 8, range: null, set: (v, at, x) => v.setFloat64(at, x, true) },
};

function writeScalar(out: ByteWriter, type: GgufNumericType, x: number): void {
  const { range } = NUMERIC[type];
  if (range !== null && !(Number.isInteger(x) && x >= range[0] && x < range[1])) throw new RangeError(`writeGguf: ${x} is not a ${type}`);
  out.numeric(type, x);
}

/** A growable little-endian byte buffer. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  /** Grows the buffer for `n` more bytes and returns where they start. */
  private reserve(n: number): number {
    if (this.length + n > this.buf.length) {
      const grown = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
      this.view = new DataView(grown.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  bytes(b: Uint8Array): void {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
  }
  numeric(type: GgufNumericType, x: number): void {
    const { bytes, set } = NUMERIC[type];
    const at = this.reserve(bytes); // first: reserving may replace the view
    set(this.view, at, x);
  }
  u32(x: number): void {
    this.numeric('uint32', x);
  }
  u64(x: bigint): void {
    const at = this.reserve(8);
    this.view.setBigUint64(at, x, true);
  }
  i64(x: bigint): void {
    const at = this.reserve(8);
    this.view.setBigInt64(at, x, true);
  }
  /** A GGUF string: u64 byte length, then UTF-8 without a terminator. */
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(BigInt(b.length));
    this.bytes(b);
  }
  /** Zero bytes up to the next multiple of `alignment`. */
  pad(alignment: number): void {
    this.reserve(alignUp(this.length, alignment) - this.length);
  }
  finish(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/* ------------------------------------------------------------------------------------ */
/* LoRA adapters                                                                        */
/* ------------------------------------------------------------------------------------ */

/** The adapter's file name beside the PEFT files. */
export const GGUF_ADAPTER_FILE = 'adapter.gguf';

/**
 * A copy of `matrix` (row-major, `cols` wide) with its rows in llama.cpp's order for a rotary
 * projection of `heads` heads (`ggufRopeRowSource`): the base weight of `attn_q`/`attn_k`, or
 * the B factor of a LoRA on it.
 */
export function toGgufRopeRows(matrix: Float32Array, cols: number, heads: number): Float32Array {
  const source = ggufRopeRowSource(matrix.length / cols, heads);
  const out = new Float32Array(matrix.length);
  source.forEach((from, row) => out.set(matrix.subarray(from * cols, (from + 1) * cols), row * cols));
  return out;
}

/** Heads whose rows llama.cpp reorders for a projection (q: attention heads, k: KV heads), else null. */
function ropeHeads(proj: Projection, model: LlamaConfig): number | null {
  return proj === 'q_proj' ? model.numHeads : proj === 'k_proj' ? model.numKvHeads : null;
}

/**
 * A LoRA adapter as a GGUF file llama.cpp and Ollama load on top of the base model converted to
 * GGUF: F32 factors of every targeted projection, layer by layer in `PROJECTIONS` order, A then
 * B (see the module comment for names, shapes and the q/k row order).
 *
 * @throws NlftError (`lora-shape`) naming the layer and projection when `lora` does not match
 *   the config and the model (targets, rank, shapes, scale alpha / r)
 */
export function ggufLoraAdapter(lora: LoraSet, c: LoraConfig, model: LlamaConfig): Uint8Array {
  validateLoraConfig(c);
  const fail = (detail: string): never => {
    throw new NlftError(`GGUF adapter export: ${detail}`, 'lora-shape');
  };
  if (lora.length !== model.numLayers) fail(`the adapter has ${lora.length} layers, the model ${model.numLayers}`);
  const shapes = projectionShapes(model);
  const tensors: GgufTensor[] = [];
  lora.forEach((layer, i) => {
    for (const p of PROJECTIONS) {
      const f = layer[p];
      if (f === undefined) {
        if (c.targets.includes(p)) fail(`layer ${i} lacks ${p}, which is in the targets`);
        continue;
      }
      if (!c.targets.includes(p)) fail(`layer ${i} has ${p}, which is not in the targets (${c.targets.join(', ')})`);
      const [out, inFeatures] = shapes[p];
      if (f.r !== c.r || f.A.length !== c.r * inFeatures || f.B.length !== out * c.r) {
        fail(
          `layer ${i} ${p}: expected A [${c.r}, ${inFeatures}] and B [${out}, ${c.r}], found rank ${f.r} with ${f.A.length} and ${f.B.length} values`,
        );
      }
      if (Math.abs(f.scale - c.alpha / c.r) > 1e-6 * (c.alpha / c.r))
        fail(`layer ${i} ${p}: scale ${f.scale}, but alpha / r = ${c.alpha / c.r}`);
      const name = ggufProjectionTensorName(i, p);
      tensors.push({ name: `${name}.lora_a`, shape: [c.r, inFeatures], type: 'F32', data: f.A });
      const heads = ropeHeads(p, model);
      const B = heads === null ? f.B : toGgufRopeRows(f.B, c.r, heads);
      tensors.push({ name: `${name}.lora_b`, shape: [out, c.r], type: 'F32', data: B });
    }
  });
  return writeGguf({
    metadata: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['general.type', { type: 'string', value: 'adapter' }],
      ['adapter.type', { type: 'string', value: 'lora' }],
      ['adapter.lora.alpha', { type: 'float32', value: c.alpha }],
    ],
    tensors,
  });
}

/** The last component of a path or Hub id (`org/name@rev` → `name`). */
function lastComponent(spec: string): string {
  return (
    spec
      .replace(/[/\\]+$/, '')
      .split(/[/\\]/)
      .pop()
      ?.replace(/@.*$/, '') ?? ''
  );
}

/**
 * How to run the base model with the adapter in Ollama and llama.cpp: a ready `Modelfile` (to
 * put beside the adapter) and a `llama-cli` line. The base is named after `base` (the model the
 * adapter was trained on; it must be that same model in GGUF, e.g. converted with llama.cpp's
 * `convert_hf_to_gguf.py`).
 */
export function ggufAdapterUsage(base: string, adapterPath = GGUF_ADAPTER_FILE): { modelfile: string; llamaCpp: string } {
  const name = lastComponent(base) || 'base';
  const baseFile = name.endsWith('.gguf') ? name : `${name}.gguf`;
  return {
    modelfile: `# the base must be the same model (${base}) in GGUF\nFROM ./${baseFile}\nADAPTER ./${lastComponent(adapterPath)}\n`,
    llamaCpp: `llama-cli -m ${baseFile} --lora ${adapterPath}`,
  };
}
