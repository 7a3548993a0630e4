/**
 * A bounded GGUF reader (layout: `gguf-format.ts`): header, metadata of every value type
 * (arrays nested up to `GGUF_MAX_ARRAY_DEPTH`), tensor infos, alignment and the data section,
 * read through byte ranges of a `FileSource`, so a multi-GB model file is never read whole; then
 * one tensor's bytes at a time.
 *
 * Written here rather than with `@huggingface/gguf`: that package parses from a URL or a whole
 * buffer it fetches in chunks itself, it does not read through our `FileSource` (a picked
 * `File`, a local folder, the Hub cache), and its length checks do not bound an allocation by
 * the bytes the file really holds. This reader trusts nothing in the file: every count and length
 * is checked against the bytes left before anything is allocated for it (an array of n items
 * needs at least n times the item's smallest encoding), every tensor must lie inside the data
 * section, aligned, without overlapping another, with dimensions whose product is a whole number
 * of its type's blocks; unknown value or tensor types, a wrong magic or version, or a truncated
 * file are a `ModelFormatError` naming the file, the key or tensor, and what was expected.
 */
import { ModelFormatError } from '../errors.ts';
import { decodeToF32, f16BitsToF32 } from './safetensors.ts';
import { GGML_TYPES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VALUE_TYPE, type GgmlTypeName, type GgufValueType } from './gguf-format.ts';
import type { QuantizedMatrix } from './quant.ts';
import type { FileSource } from './source.ts';

/** Deepest nesting of arrays in a metadata value (llama.cpp's own files nest none). */
export const GGUF_MAX_ARRAY_DEPTH = 8;
/** Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`). */
export const GGUF_MAX_DIMS = 4;
/** Longest tensor name in bytes (ggml's `GGML_MAX_NAME` is 64 with the terminator). */
export const GGUF_MAX_NAME_BYTES = 63;
/** Bytes read from the file at once while parsing the header and metadata. */
const CHUNK_BYTES = 1 << 20;

/** An array value: its item type and the items (numbers in a typed array, 64-bit integers as bigints). */
export interface GgufArray {
  itemType: GgufValueType;
  items: ArrayLike<number> | ArrayLike<bigint> | readonly boolean[] | readonly string[] | readonly GgufArray[];
}

/** One metadata value as read: its type and its data. */
export interface GgufEntry {
  type: GgufValueType;
  value: number | bigint | boolean | string | GgufArray;
}

/** One tensor's info, validated against the data section. */
export interface GgufTensorInfo {
  name: string;
  /** Dimensions innermost first, as stored (ggml's `ne`). */
  ne: number[];
  /** Dimensions outermost first (PyTorch's and safetensors' order: the reverse of `ne`). */
  shape: number[];
  type: GgmlTypeName;
  /** Absolute file offsets [begin, end) of the tensor's bytes. */
  begin: number;
  end: number;
}

/** A validated GGUF header. */
export interface GgufHeader {
  file: string;
  fileSize: number;
  version: number;
  /** Metadata in file order. */
  metadata: Map<string, GgufEntry>;
  /** Tensors in file order. */
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
  /** Absolute file offset of the data section. */
  dataStart: number;
}

/** Reads bytes [start, end) of the file being parsed. */
export type GgufRangeReader = (start: number, end: number) => Promise<Uint8Array>;

/** Options of `parseGgufHeader`. */
export interface GgufParseOptions {
  /** Called with the byte size of every buffer the parser allocates for values it decodes (tests count them). */
  onAllocate?: (bytes: number) => void;
}

/** Byte size of each numeric value type, and how a DataView reads it. */
const SCALARS: Partial<Record<GgufValueType, { bytes: number; get: (v: DataView, at: number) => number | bigint }>> = {
  uint8: { bytes: 1, get: (v, at) => v.getUint8(at) },
  int8: { bytes: 1, get: (v, at) => v.getInt8(at) },
  uint16: { bytes: 2, get: (v, at) => v.getUint16(at, true) },
  int16: { bytes: 2, get: (v, at) => v.getInt16(at, true) },
  uint32: { bytes: 4, get: (v, at) => v.getUint32(at, true) },
  int32: { bytes: 4, get: (v, at) => v.getInt32(at, true) },
  float32: { bytes: 4, get: (v, at) => v.getFloat32(at, true) },
  uint64: { bytes: 8, get: (v, at) => v.getBigUint64(at, true) },
  int64: { bytes: 8, get: (v, at) => v.getBigInt64(at, true) },
  float64: { bytes: 8, get: (v, at) => v.getFloat64(at, true) },
};

/** Typed-array constructors for numeric arrays. */
const ARRAYS: Partial<Record<GgufValueType, new (n: number) => ArrayLike<number> | ArrayLike<bigint>>> = {
  uint8: Uint8Array,
  int8: Int8Array,
  uint16: Uint16Array,
  int16: Int16Array,
  uint32: Uint32Array,
  int32: Int32Array,
  float32: Float32Array,
  uint64: BigUint64Array,
  int64: BigInt64Array,
  float64: Float64Array,
};

const VALUE_TYPE_BY_CODE = new Map<number, GgufValueType>(
  Object.entries(GGUF_VALUE_TYPE).map(([name, code]) => [code, name as GgufValueType]),
);
const TENSOR_TYPE_BY_CODE = new Map<number, GgmlTypeName>(Object.entries(GGML_TYPES).map(([name, t]) => [t.code, name as GgmlTypeName]));

/** The fewest bytes one item of a type takes in the file (a string: its length; an array: type and count). */
function minItemBytes(type: GgufValueType): number {
  return type === 'string' ? 8 : type === 'array' ? 12 : type === 'bool' ? 1 : SCALARS[type]!.bytes;
}

/**
 * A forward cursor over the file: bytes come from `read` in chunks of up to `CHUNK_BYTES` (more
 * when one item needs more), and no read goes past `fileSize`.
 */
class Cursor {
  private buf: Uint8Array = new Uint8Array(0);
  private view: DataView = new DataView(this.buf.buffer);
  /** File offset of `buf[0]`. */
  private bufStart = 0;
  /** File offset of the next byte to parse. */
  pos = 0;

  constructor(
    private readonly read: GgufRangeReader,
    readonly fileSize: number,
    readonly fail: (field: string | undefined, detail: string) => never,
  ) {}

  /** Bytes of the file after the cursor. */
  get left(): number {
    return this.fileSize - this.pos;
  }

  /** Makes the next `n` bytes available; `what` names the field for a truncated file. */
  async need(n: number, what: string): Promise<void> {
    if (n > this.left) this.fail(what, `the file ends at byte ${this.fileSize}, ${n} bytes are needed from byte ${this.pos}`);
    if (this.pos + n <= this.bufStart + this.buf.length) return;
    const end = Math.min(this.fileSize, this.pos + Math.max(n, CHUNK_BYTES));
    const bytes = await this.read(this.pos, end);
    if (bytes.length !== end - this.pos) this.fail(what, `reading bytes [${this.pos}, ${end}) gave ${bytes.length} bytes`);
    this.buf = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.bufStart = this.pos;
  }

  /** The next `n` bytes (after `need(n)`), as a view into the buffer. */
  take(n: number): Uint8Array {
    const at = this.pos - this.bufStart;
    this.pos += n;
    return this.buf.subarray(at, at + n);
  }

  /** A scalar of `type` (after `need`). */
  scalar(type: GgufValueType): number | bigint {
    const s = SCALARS[type]!;
    const v = s.get(this.view, this.pos - this.bufStart);
    this.pos += s.bytes;
    return v;
  }

  async u32(what: string): Promise<number> {
    await this.need(4, what);
    return this.scalar('uint32') as number;
  }

  /** A u64 that must be a count or size no larger than `max`. */
  async count(what: string, max: number, unit: string): Promise<number> {
    await this.need(8, what);
    const v = this.scalar('uint64') as bigint;
    if (v > BigInt(max)) this.fail(what, `${v} ${unit} claimed, but the ${this.left} bytes left hold at most ${max}`);
    return Number(v);
  }
}

/**
 * Reads and validates a GGUF file's header, metadata and tensor infos (not the tensor data).
 *
 * @param read reads byte ranges of the file (only ranges inside [0, fileSize) are asked for)
 * @param fileSize the file's real byte size
 * @param fileName named in every error
 * @throws ModelFormatError naming the file and the key or tensor at fault
 */
export async function parseGgufHeader(
  read: GgufRangeReader,
  fileSize: number,
  fileName: string,
  options: GgufParseOptions = {},
): Promise<GgufHeader> {
  const fail = (field: string | undefined, detail: string): never => {
    throw new ModelFormatError(fileName, field, detail);
  };
  const allocate = (bytes: number) => options.onAllocate?.(bytes);
  const c = new Cursor(read, fileSize, fail);

  await c.need(4, 'magic');
  const magic = c.take(4);
  if (String.fromCharCode(...magic) !== GGUF_MAGIC) {
    fail('magic', `expected "GGUF" in the first 4 bytes, found ${[...magic].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`);
  }
  const version = await c.u32('version');
  if (version !== 2 && version !== 3) {
    const hint = version > 0xffff ? ' (a big-endian file? only little-endian GGUF is read)' : '';
    fail('version', `expected GGUF version 2 or 3, found ${version}${hint}`);
  }
  // Each tensor info takes at least 24 bytes (name length, dimension count, type, offset); each key-value 13.
  const tensorCount = await c.count('tensor count', Math.floor(c.left / 24), 'tensors');
  const kvCount = await c.count('metadata count', Math.floor(c.left / 13), 'metadata entries');

  const metadata = new Map<string, GgufEntry>();
  for (let i = 0; i < kvCount; i++) {
    const key = await readString(c, `metadata entry ${i} key`, allocate);
    if (metadata.has(key)) fail(key, 'the key appears twice');
    const type = await readValueType(c, key);
    metadata.set(key, { type, value: await readValue(c, type, key, 0, allocate) });
  }
  const alignment = alignmentOf(metadata, fail);

  const tensors = new Map<string, GgufTensorInfo>();
  const relative: number[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = await readString(c, `tensor info ${i} name`, allocate);
    if (new TextEncoder().encode(name).length > GGUF_MAX_NAME_BYTES) fail(name, `tensor name longer than ${GGUF_MAX_NAME_BYTES} bytes`);
    if (tensors.has(name)) fail(name, 'two tensors have this name');
    const dims = await c.u32(`${name} dimension count`);
    if (dims < 1 || dims > GGUF_MAX_DIMS) fail(name, `expected 1 to ${GGUF_MAX_DIMS} dimensions, found ${dims}`);
    const ne: number[] = [];
    for (let d = 0; d < dims; d++) ne.push(await c.count(`${name} ne[${d}]`, Number.MAX_SAFE_INTEGER, 'elements'));
    const code = await c.u32(`${name} type`);
    const type =
      TENSOR_TYPE_BY_CODE.get(code) ??
      fail(name, `unknown ggml tensor type ${code}; known: ${[...TENSOR_TYPE_BY_CODE.values()].join(', ')}`);
    await c.need(8, `${name} offset`);
    const offset = c.scalar('uint64') as bigint;
    if (offset % BigInt(alignment) !== 0n) fail(name, `data offset ${offset} is not a multiple of the alignment ${alignment}`);
    if (offset > BigInt(fileSize)) fail(name, `data offset ${offset} lies past the end of the ${fileSize}-byte file`);
    relative.push(Number(offset));
    tensors.set(name, { name, ne, shape: [...ne].reverse(), type, begin: 0, end: tensorBytes(name, ne, type, fileSize, fail) });
  }
  const dataStart = Math.ceil(c.pos / alignment) * alignment;
  placeTensors([...tensors.values()], relative, dataStart, fileSize, fail);
  return { file: fileName, fileSize, version, metadata, tensors, alignment, dataStart };
}

/** Reads and validates the header of `fileName` in `source`, reading only the header's bytes. */
export async function readGgufHeader(source: FileSource, fileName: string, options?: GgufParseOptions): Promise<GgufHeader> {
  const size = await source.size(fileName);
  if (size === null) throw new ModelFormatError(fileName, undefined, `not found in ${source.label}`);
  return parseGgufHeader((start, end) => source.readRange(fileName, start, end), size, fileName, options);
}

/** A value type code, known (`key` names the entry in messages). */
async function readValueType(c: Cursor, key: string): Promise<GgufValueType> {
  const code = await c.u32(`${key} value type`);
  return (
    VALUE_TYPE_BY_CODE.get(code) ??
    c.fail(key, `unknown metadata value type ${code}; expected 0 to 12 (uint8 … float64, see the GGUF spec)`)
  );
}

/** A GGUF string: u64 byte length (checked against the bytes left) and UTF-8. */
async function readString(c: Cursor, what: string, allocate: (bytes: number) => void): Promise<string> {
  const n = await c.count(`${what} length`, c.left - 8, 'bytes');
  await c.need(n, what);
  allocate(n);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(c.take(n));
  } catch {
    return c.fail(what, 'not valid UTF-8');
  }
}

/** One value of `type`; arrays nest at most `GGUF_MAX_ARRAY_DEPTH` deep. */
async function readValue(
  c: Cursor,
  type: GgufValueType,
  key: string,
  depth: number,
  allocate: (bytes: number) => void,
): Promise<GgufEntry['value']> {
  if (type === 'string') return readString(c, key, allocate);
  if (type === 'bool') {
    await c.need(1, key);
    const b = c.take(1)[0];
    if (b > 1) c.fail(key, `expected a bool (0 or 1), found ${b}`);
    return b === 1;
  }
  if (type !== 'array') {
    await c.need(SCALARS[type]!.bytes, key);
    return c.scalar(type);
  }
  if (depth >= GGUF_MAX_ARRAY_DEPTH) c.fail(key, `arrays nested deeper than ${GGUF_MAX_ARRAY_DEPTH}`);
  const itemType = await readValueType(c, `${key}[]`);
  const count = await c.count(`${key} item count`, Math.floor((c.left - 8) / minItemBytes(itemType)), 'items');
  const scalar = SCALARS[itemType];
  if (scalar !== undefined) {
    await c.need(count * scalar.bytes, key);
    allocate(count * scalar.bytes);
    const items = new ARRAYS[itemType]!(count) as unknown as Record<number, number | bigint>;
    for (let i = 0; i < count; i++) items[i] = c.scalar(itemType);
    return { itemType, items: items as unknown as ArrayLike<number> };
  }
  // Strings, bools and arrays: the list grows only as items are read, each at least minItemBytes.
  const items: unknown[] = [];
  for (let i = 0; i < count; i++) {
    allocate(8);
    items.push(await readValue(c, itemType, `${key}[${i}]`, depth + 1, allocate));
  }
  return { itemType, items: items as GgufArray['items'] };
}

/** `general.alignment` when present (a uint32 power of two), else 32. */
function alignmentOf(metadata: Map<string, GgufEntry>, fail: (field: string, detail: string) => never): number {
  const entry = metadata.get('general.alignment');
  if (entry === undefined) return GGUF_DEFAULT_ALIGNMENT;
  const v = entry.value;
  if (entry.type !== 'uint32' || typeof v !== 'number' || v === 0 || (v & (v - 1)) !== 0) {
    fail('general.alignment', `expected a uint32 power of two, found ${entry.type} ${String(v)}`);
  }
  return v as number;
}

/** A tensor's byte size from its dimensions and type, checked to fit the file and to be whole blocks. */
function tensorBytes(
  name: string,
  ne: number[],
  type: GgmlTypeName,
  fileSize: number,
  fail: (field: string, detail: string) => never,
): number {
  const { blockElements, blockBytes } = GGML_TYPES[type];
  if (ne[0] % blockElements !== 0) fail(name, `ne[0] = ${ne[0]} is not a multiple of ${type}'s block of ${blockElements}`);
  let bytes = blockBytes * (ne[0] / blockElements);
  for (let d = 1; d < ne.length && bytes > 0; d++) {
    bytes *= ne[d];
    if (bytes > fileSize) break;
  }
  if (ne.includes(0)) bytes = 0;
  if (bytes > fileSize) fail(name, `dimensions [${ne.join(', ')}] of ${type} need more bytes than the ${fileSize}-byte file holds`);
  return bytes;
}

/**
 * Sets each tensor's absolute [begin, end) from its offset (relative to the data section) and
 * checks that all lie inside the file without overlapping.
 */
function placeTensors(
  infos: GgufTensorInfo[],
  offsets: number[],
  dataStart: number,
  fileSize: number,
  fail: (field: string, detail: string) => never,
): void {
  infos.forEach((t, i) => {
    const size = t.end;
    t.begin = dataStart + offsets[i];
    t.end = t.begin + size;
    if (t.end > fileSize) {
      fail(t.name, `bytes [${t.begin}, ${t.end}) lie past the end of the ${fileSize}-byte file (data section from byte ${dataStart})`);
    }
  });
  const byStart = [...infos].sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    const [a, b] = [byStart[i - 1], byStart[i]];
    if (b.begin < a.end) fail(b.name, `its bytes [${b.begin}, ${b.end}) overlap ${a.name}'s [${a.begin}, ${a.end})`);
  }
}

/* ------------------------------------------------------------------------------------ */
/* Tensor data                                                                          */
/* ------------------------------------------------------------------------------------ */

/** The tensor types whose values this reader decodes. */
export const GGUF_DECODED_TYPES = [
  'F32',
  'F16',
  'BF16',
  'Q8_0',
  'Q4_0',
  'Q4_1',
  'Q5_0',
  'Q5_1',
  'Q2_K',
  'Q3_K',
  'Q4_K',
  'Q5_K',
  'Q6_K',
] as const satisfies readonly GgmlTypeName[];
export type GgufDecodedType = (typeof GGUF_DECODED_TYPES)[number];

/**
 * Reads one tensor (only its own bytes): its values as f32, row-major in `shape` order (quantized
 * blocks expanded exactly as ggml's reference `dequantize_row_*` compute them, see
 * `decodeGgufTensor`), and for a Q8_0 or Q4_0 matrix its blocks in our q8/q4 layout as stored
 * (`ggufBlocks`). The other block types (Q4_1, Q5_0, Q5_1 and the K-quants) have no such layout
 * here: the loader re-quantizes their decoded values to the run's q8/q4 like any f32 weight.
 *
 * @throws ModelFormatError naming the tensor when it is absent or of a type not decoded here
 */
export async function readGgufTensor(
  source: FileSource,
  header: GgufHeader,
  name: string,
): Promise<{ values: Float32Array; blocks: QuantizedMatrix | null }> {
  const info = header.tensors.get(name);
  if (info === undefined) throw new ModelFormatError(header.file, name, 'tensor not found in this file');
  const { type } = info;
  if (!isDecodedType(type)) {
    throw new ModelFormatError(
      header.file,
      name,
      `tensor type ${type} is not read yet (read: ${GGUF_DECODED_TYPES.join(', ')}; not the IQ types or integer tensors): convert the model to Q8_0, Q4_K_M, Q5_K_M or F16 with llama.cpp's llama-quantize`,
    );
  }
  const bytes = await source.readRange(header.file, info.begin, info.end);
  const [rows, cols] = info.shape;
  const blocks = info.shape.length === 2 && (type === 'Q8_0' || type === 'Q4_0') ? ggufBlocks(bytes, type, rows, cols) : null;
  return { values: decodeGgufTensor(bytes, type), blocks };
}

/**
 * Q8_0 / Q4_0 blocks of a [rows, cols] matrix as our q8 / q4 matrix (src/model/quant.ts), as they
 * are: both formats are blocks of 32 along the input with one scale, Q8_0's codes are our int8
 * codes, and Q4_0's nibble (value (nibble − 8) · d) is our stored q4 nibble (code + 8); the f16
 * scale is widened to f32. So `dequantize` of the result equals `decodeGgufTensor` bit for bit,
 * and an upload in that format keeps the file's weights without re-quantizing them.
 */
export function ggufBlocks(bytes: Uint8Array, type: 'Q8_0' | 'Q4_0', rows: number, cols: number): QuantizedMatrix {
  const { blockBytes } = GGML_TYPES[type];
  const blocks = (rows * cols) / 32;
  const scales = new Float32Array(blocks);
  const bits = type === 'Q8_0' ? 8 : 4;
  const data = new Uint32Array((rows * cols * bits) / 32);
  for (let b = 0; b < blocks; b++) {
    const at = b * blockBytes;
    scales[b] = f16BitsToF32(bytes[at] | (bytes[at + 1] << 8));
    for (let j = 0; j < 32; j++) {
      const e = b * 32 + j;
      const code = type === 'Q8_0' ? bytes[at + 2 + j] : (bytes[at + 2 + (j % 16)] >> (j < 16 ? 0 : 4)) & 0xf;
      data[Math.floor((e * bits) / 32)] |= code << ((e * bits) % 32);
    }
  }
  return { format: type === 'Q8_0' ? 'q8' : 'q4', rows, cols, data, scales };
}

function isDecodedType(type: GgmlTypeName): type is GgufDecodedType {
  return (GGUF_DECODED_TYPES as readonly string[]).includes(type);
}

/**
 * Decodes little-endian tensor bytes of a type in `GGUF_DECODED_TYPES` to f32, block by block as
 * ggml's reference dequantizers (`dequantize_row_q8_0`, `_q4_0`, `_q4_1`, `_q5_0`, `_q5_1`,
 * `_q2_K`, `_q3_K`, `_q4_K`, `_q5_K`, `_q6_K` in ggml's `src/ggml-quants.c`; block structs in `src/ggml-common.h`)
 * compute them, every product, sum and difference rounded to f32 as their float arithmetic is.
 */
export function decodeGgufTensor(bytes: Uint8Array, type: GgufDecodedType): Float32Array {
  if (type === 'F32' || type === 'F16' || type === 'BF16') return decodeToF32(bytes, type);
  const { blockBytes, blockElements } = GGML_TYPES[type];
  const blocks = bytes.length / blockBytes;
  const out = new Float32Array(blocks * blockElements);
  const decodeBlock = BLOCK_DECODERS[type];
  for (let b = 0; b < blocks; b++) {
    decodeBlock(bytes.subarray(b * blockBytes, (b + 1) * blockBytes), out.subarray(b * blockElements, (b + 1) * blockElements));
  }
  return out;
}

/** Writes one block's values (`out` holds exactly its elements). */
type BlockDecoder = (block: Uint8Array, out: Float32Array) => void;

/** The f16 at byte `at` of a block, widened to f32. */
const f16At = (block: Uint8Array, at: number): number => f16BitsToF32(block[at] | (block[at + 1] << 8));

const BLOCK_DECODERS: Record<Exclude<GgufDecodedType, 'F32' | 'F16' | 'BF16'>, BlockDecoder> = {
  // block_q8_0 (34 bytes): f16 d, then 32 int8 codes; value = code · d.
  Q8_0: (block, out) => {
    const d = f16At(block, 0);
    for (let j = 0; j < 32; j++) out[j] = ((block[2 + j] << 24) >> 24) * d;
  },
  // block_q4_0 (18 bytes): f16 d, then 16 bytes; element j is the low nibble of byte j, element
  // j + 16 its high nibble; value = (nibble − 8) · d.
  Q4_0: (block, out) => {
    const d = f16At(block, 0);
    for (let j = 0; j < 16; j++) {
      out[j] = ((block[2 + j] & 0x0f) - 8) * d;
      out[j + 16] = ((block[2 + j] >> 4) - 8) * d;
    }
  },
  // block_q4_1 (20 bytes): f16 d, f16 m, then 16 bytes of nibbles as Q4_0's; value = nibble · d + m.
  Q4_1: (block, out) => {
    const f = Math.fround;
    const [d, m] = [f16At(block, 0), f16At(block, 2)];
    for (let j = 0; j < 16; j++) {
      out[j] = f(f((block[4 + j] & 0x0f) * d) + m);
      out[j + 16] = f(f((block[4 + j] >> 4) * d) + m);
    }
  },
  // block_q5_0 (22 bytes): f16 d, 4 bytes qh, 16 bytes of nibbles as Q4_0's; the code's fifth bit
  // is bit e of qh (little-endian u32) for element e; value = (code − 16) · d.
  Q5_0: (block, out) => {
    const d = f16At(block, 0);
    for (let e = 0; e < 32; e++) out[e] = (q5Code(block, 2, 6, e) - 16) * d;
  },
  // block_q5_1 (24 bytes): f16 d, f16 m, 4 bytes qh, 16 bytes of nibbles; codes as Q5_0's;
  // value = code · d + m.
  Q5_1: (block, out) => {
    const f = Math.fround;
    const [d, m] = [f16At(block, 0), f16At(block, 2)];
    for (let e = 0; e < 32; e++) out[e] = f(f(q5Code(block, 4, 8, e) * d) + m);
  },
  Q2_K: decodeQ2KBlock,
  Q3_K: decodeQ3KBlock,
  Q4_K: (block, out) => decodeScaleMinKBlock(block, out, false),
  Q5_K: (block, out) => decodeScaleMinKBlock(block, out, true),
  Q6_K: decodeQ6KBlock,
};

/**
 * The 5-bit code of element e (0…31) of a Q5_0/Q5_1 block whose qh (a little-endian u32) starts
 * at byte `qh` and its 16 nibble bytes at `qs`: element j < 16 has the low nibble of byte j,
 * element j + 16 its high nibble; bit e of qh is the code's fifth bit.
 */
function q5Code(block: Uint8Array, qh: number, qs: number, e: number): number {
  const nibble = (block[qs + (e % 16)] >> (e < 16 ? 0 : 4)) & 0xf;
  const high = (block[qh + (e >> 3)] >> (e & 7)) & 1;
  return nibble | (high << 4);
}

/**
 * block_q2_K (84 bytes, 256 values in 16 sub-blocks of 16): 16 bytes of sub-block scales (low
 * nibble) and mins (high nibble), 64 bytes of 2-bit codes, f16 d, f16 dmin. Value e = 128h + 32j +
 * 16p + l (h, p < 2, j < 4, l < 16) is bits 2j, 2j+1 of byte 16 + 32h + 16p + l, in sub-block
 * 8h + 2j + p; its value (d · scale) · code − (dmin · min), each step rounded to f32.
 */
function decodeQ2KBlock(block: Uint8Array, out: Float32Array): void {
  const f = Math.fround;
  const d = f16At(block, 80);
  const dmin = f16At(block, 82);
  for (let e = 0; e < 256; e++) {
    const [h, j, p, l] = [e >> 7, (e >> 5) & 3, (e >> 4) & 1, e & 15];
    const sc = block[8 * h + 2 * j + p];
    const code = (block[16 + 32 * h + 16 * p + l] >> (2 * j)) & 3;
    out[e] = f(f(f(d * (sc & 0xf)) * code) - f(dmin * (sc >> 4)));
  }
}

/**
 * block_q3_K (110 bytes, 256 values in 16 sub-blocks of 16): 32 bytes `hmask`, 64 bytes of 2-bit
 * codes, 12 bytes of 6-bit sub-block scales, f16 d. Value e = 128h + 32j + 16p + l takes its low
 * 2 bits from bits 2j, 2j+1 of byte 32 + 32h + 16p + l and its third bit from bit 4h + j of
 * hmask[16p + l]; with the 3-bit code c its value is (d · (scale − 32)) · (c − 4), scale that of
 * sub-block 8h + 2j + p (`q3KScale`), each product rounded to f32.
 */
function decodeQ3KBlock(block: Uint8Array, out: Float32Array): void {
  const f = Math.fround;
  const d = f16At(block, 108);
  const scales = block.subarray(96, 108);
  for (let e = 0; e < 256; e++) {
    const [h, j, p, l] = [e >> 7, (e >> 5) & 3, (e >> 4) & 1, e & 15];
    const low = (block[32 + 32 * h + 16 * p + l] >> (2 * j)) & 3;
    const high = (block[16 * p + l] >> (4 * h + j)) & 1;
    out[e] = f(f(d * (q3KScale(scales, 8 * h + 2 * j + p) - 32)) * ((low | (high << 2)) - 4));
  }
}

/**
 * The 6-bit scale of Q3_K sub-block s (0…15) from its 12 packed bytes: its low 4 bits are the low
 * (s < 8) or high (s ≥ 8) nibble of byte s mod 8, its top 2 bits bits 2g, 2g+1 of byte 8 + s mod 4,
 * g = s div 4.
 */
function q3KScale(packed: Uint8Array, s: number): number {
  const low = (packed[s & 7] >> (s < 8 ? 0 : 4)) & 0xf;
  return low | (((packed[8 + (s & 3)] >> (2 * (s >> 2))) & 3) << 4);
}

/**
 * block_q4_K (144 bytes) and block_q5_K (176 bytes), 256 values in 8 sub-blocks of 32: f16 d,
 * f16 dmin, 12 bytes of 6-bit sub-block scales and mins (`q4KScaleMin`), Q5_K's 32 bytes qh, then
 * 128 bytes of nibbles. The nibbles come in 4 runs of 32 bytes; run r gives sub-block 2r its low
 * nibbles and sub-block 2r + 1 its high ones; with `fifthBits` (Q5_K) value l of sub-block s adds
 * 16 · (bit s of qh[l]) to its nibble. Value of code q in sub-block s: (d · scale_s) · q −
 * (dmin · min_s), each step rounded to f32.
 */
function decodeScaleMinKBlock(block: Uint8Array, out: Float32Array, fifthBits: boolean): void {
  const f = Math.fround;
  const d = f16At(block, 0);
  const dmin = f16At(block, 2);
  const packed = block.subarray(4, 16);
  const nibbles = fifthBits ? 48 : 16;
  for (let s = 0; s < 8; s++) {
    const [scale, min] = q4KScaleMin(packed, s);
    const step = f(d * scale);
    const offset = f(dmin * min);
    const run = nibbles + 32 * (s >> 1);
    const shift = (s & 1) * 4;
    for (let l = 0; l < 32; l++) {
      const high = fifthBits ? ((block[16 + l] >> s) & 1) << 4 : 0;
      out[32 * s + l] = f(f(step * (((block[run + l] >> shift) & 0xf) | high)) - offset);
    }
  }
}

/**
 * The 6-bit scale and min of Q4_K (and Q5_K) sub-block `s` from the 12 packed bytes (ggml's
 * `get_scale_min_k4`): sub-blocks 0–3 keep theirs in the low 6 bits of bytes s (scale) and s + 4
 * (min); sub-blocks 4–7 take their low 4 bits from byte s + 4 (scale: low nibble, min: high
 * nibble) and their top 2 bits from the spare top bits of bytes s − 4 (scale) and s (min).
 */
function q4KScaleMin(packed: Uint8Array, s: number): [scale: number, min: number] {
  if (s < 4) return [packed[s] & 63, packed[s + 4] & 63];
  return [(packed[s + 4] & 0xf) | ((packed[s - 4] >> 6) << 4), (packed[s + 4] >> 4) | ((packed[s] >> 6) << 4)];
}

/**
 * block_q6_K (210 bytes, 256 values in 16 sub-blocks of 16): 128 bytes `ql` (low 4 bits), 64
 * bytes `qh` (high 2 bits), 16 int8 sub-block scales, f16 d. Each half h of 128 values uses ql
 * bytes 64h…64h+63, qh bytes 32h…32h+31 and scales 8h…8h+7; within it, for l < 32, value
 * l + 32k (k = 0…3) takes its low 4 bits from ql[l + 32·(k & 1)] (low nibble for k < 2, high
 * for k ≥ 2) and its high 2 bits from bits 2k, 2k+1 of qh[l]; the code q (0…63) gives
 * (d · scale) · (q − 32), with scale = scales[8h + 2k + l / 16 (integer)], each product rounded to f32.
 */
function decodeQ6KBlock(block: Uint8Array, out: Float32Array): void {
  const f = Math.fround;
  const d = f16At(block, 208);
  for (let h = 0; h < 2; h++) {
    for (let k = 0; k < 4; k++) {
      for (let l = 0; l < 32; l++) {
        const low = (block[64 * h + l + 32 * (k & 1)] >> (k < 2 ? 0 : 4)) & 0xf;
        const high = (block[128 + 32 * h + l] >> (2 * k)) & 3;
        const scale = (block[192 + 8 * h + 2 * k + (l >> 4)] << 24) >> 24;
        out[128 * h + 32 * k + l] = f(f(d * scale) * ((low | (high << 4)) - 32));
      }
    }
  }
}
