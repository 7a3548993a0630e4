/**
 * The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * u64 header length N, N bytes of UTF-8 JSON (`{"<tensor>": {"dtype", "shape",
 * "data_offsets": [begin, end]}, "__metadata__": {…}}`), then the data section, to which
 * the offsets are relative. Values are little endian.
 *
 * Reading never trusts the file: every length and offset is checked against the real file
 * size before anything is allocated, and only the bytes a caller asks for are read.
 */
import { ModelFormatError } from '../errors.ts';
import { describeJsonValue, isRecord } from '../util/json.ts';
import type { FileSource } from './source.ts';

/** The tensor dtypes NLFT Studio reads and writes. */
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };

/** Largest JSON header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** One tensor's entry in a parsed header. */
export interface SafetensorsTensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte offsets [begin, end) relative to the start of the data section. */
  begin: number;
  end: number;
}

/** A validated safetensors header. */
export interface SafetensorsHeader {
  /** Total file size in bytes. */
  fileSize: number;
  /** Absolute file offset of the data section (8 + header length). */
  dataStart: number;
  /** Tensors by name, in header order. */
  tensors: Map<string, SafetensorsTensorInfo>;
  /** `__metadata__`, or an empty map when absent. */
  metadata: Record<string, string>;
}

/** Reads bytes [start, end) of the file being parsed. */
export type RangeReader = (start: number, end: number) => Promise<Uint8Array>;

/** A tensor to write. `data` holds the f32 values, row-major, product(shape) of them. */
export interface SafetensorsTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array;
}

/* ------------------------------------------------------------------------------------ */
/* Scalar conversions                                                                   */
/* ------------------------------------------------------------------------------------ */

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** f32 → IEEE half bits, round to nearest even; overflow → ±Inf, NaN stays NaN. */
export function f32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15; // biased half exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Half subnormal (or zero): value / 2^-24, from the 24-bit significand with its implicit 1.
    if (e < -10) return sign; // below half the smallest subnormal: rounds to ±0
    const sig = mant | 0x800000;
    const shift = 14 - e;
    const halfway = 1 << (shift - 1);
    const rem = sig & ((1 << shift) - 1);
    let h = sig >>> shift;
    if (rem > halfway || (rem === halfway && (h & 1) === 1)) h++; // may carry into the smallest normal
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // a carry may reach the exponent, up to Inf
  return sign | h;
}

/** IEEE half bits → number. */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** f32 → bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN. */
export function f32ToBf16Bits(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0];
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return (bits >>> 16) | 0x40;
  // No overflow past 2^32: only NaN bit patterns are that close to it.
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** bfloat16 bits → number (exact: bf16 is the top half of an f32). */
export function bf16BitsToF32(h: number): number {
  scratchU32[0] = h << 16;
  return scratchF32[0];
}

/* ------------------------------------------------------------------------------------ */
/* Header parsing                                                                       */
/* ------------------------------------------------------------------------------------ */

/**
 * Reads and validates the header of a safetensors file.
 *
 * `input` is either the first bytes of the file (at least 8 + header length; the whole
 * file is fine) or a `RangeReader`; with a reader exactly two reads happen, the 8-byte
 * length prefix and then the header, and the second only after the claimed length was
 * checked against `fileSize` and `MAX_HEADER_BYTES`.
 *
 * @param fileSize the file's real byte size
 * @param fileName used in every error message
 * @throws ModelFormatError naming the file and the tensor or field at fault
 */
export async function parseSafetensorsHeader(
  input: Uint8Array | RangeReader,
  fileSize: number,
  fileName: string,
): Promise<SafetensorsHeader> {
  const read: RangeReader = typeof input === 'function' ? input : async (start, end) => sliceChecked(input, start, end, fileName);
  if (fileSize < 8) {
    throw new ModelFormatError(fileName, 'header', `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  }
  const prefix = await read(0, 8);
  const claimed = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (claimed > BigInt(fileSize - 8)) {
    throw new ModelFormatError(
      fileName,
      'header',
      `header claims ${claimed} bytes but the file has only ${fileSize} (8-byte length + header + data)`,
    );
  }
  const headerLength = Number(claimed);
  if (headerLength > MAX_HEADER_BYTES) {
    throw new ModelFormatError(
      fileName,
      'header',
      `header claims ${headerLength} bytes, more than the ${MAX_HEADER_BYTES}-byte (100 MiB) limit`,
    );
  }
  const json = parseHeaderJson(await read(8, 8 + headerLength), fileName);
  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') metadata = parseMetadata(entry, fileName);
    else tensors.set(name, parseTensorEntry(name, entry, dataSize, fileName));
  }
  return { fileSize, dataStart, tensors, metadata };
}

/** Reads and validates the header of `fileName` in `source`, reading only the header bytes. */
export async function readSafetensorsHeader(source: FileSource, fileName: string): Promise<SafetensorsHeader> {
  const size = await source.size(fileName);
  if (size === null) throw new ModelFormatError(fileName, undefined, `not found in ${source.label}`);
  return parseSafetensorsHeader((start, end) => source.readRange(fileName, start, end), size, fileName);
}

/** `bytes[start, end)` of an in-memory file prefix, or an error when the prefix is too short. */
function sliceChecked(bytes: Uint8Array, start: number, end: number, fileName: string): Uint8Array {
  if (end > bytes.length) {
    throw new ModelFormatError(fileName, 'header', `needs bytes up to ${end} but only ${bytes.length} were given`);
  }
  return bytes.subarray(start, end);
}

/** Decodes the header bytes as a UTF-8 JSON object. */
function parseHeaderJson(bytes: Uint8Array, fileName: string): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ModelFormatError(fileName, 'header', 'not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ModelFormatError(fileName, 'header', `not valid JSON: ${(e as Error).message}`);
  }
  if (!isRecord(value)) {
    throw new ModelFormatError(fileName, 'header', `expected a JSON object, found ${describeJsonValue(value)}`);
  }
  return value;
}

/** Validates `__metadata__`: a map of strings. */
function parseMetadata(entry: unknown, fileName: string): Record<string, string> {
  if (!isRecord(entry)) {
    throw new ModelFormatError(fileName, '__metadata__', `expected a map of strings, found ${describeJsonValue(entry)}`);
  }
  for (const [key, value] of Object.entries(entry)) {
    if (typeof value !== 'string') {
      throw new ModelFormatError(
        fileName,
        '__metadata__',
        `expected a map of strings, found ${describeJsonValue(value)} at key ${JSON.stringify(key)}`,
      );
    }
  }
  return entry as Record<string, string>;
}

/** Validates one tensor entry against the data section size. */
function parseTensorEntry(name: string, entry: unknown, dataSize: number, fileName: string): SafetensorsTensorInfo {
  if (!isRecord(entry)) {
    throw new ModelFormatError(fileName, name, `expected an object with dtype, shape and data_offsets, found ${describeJsonValue(entry)}`);
  }
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== 'string') {
    throw new ModelFormatError(fileName, name, `dtype: expected "F32", "F16" or "BF16", found ${describeJsonValue(dtype)}`);
  }
  if (!Object.hasOwn(DTYPE_BYTES, dtype)) {
    throw new ModelFormatError(fileName, name, `unsupported dtype "${dtype}"; supported: F32, F16, BF16`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new ModelFormatError(fileName, name, `shape: expected an array of non-negative integers, found ${describeJsonValue(shape)}`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o)) ||
    !(0 <= offsets[0] && offsets[0] <= offsets[1] && offsets[1] <= dataSize)
  ) {
    throw new ModelFormatError(
      fileName,
      name,
      `data_offsets: expected [begin, end] with 0 <= begin <= end <= ${dataSize} (the data size), found ${describeJsonValue(offsets)}`,
    );
  }
  const [begin, end] = offsets as [number, number];
  const typed = dtype as SafetensorsDtype;
  const needed = shape.reduce((a: number, d: number) => a * d, 1) * DTYPE_BYTES[typed];
  if (end - begin !== needed) {
    throw new ModelFormatError(
      fileName,
      name,
      `data_offsets span ${end - begin} bytes but shape ${formatShape(shape)} of ${typed} needs ${needed}`,
    );
  }
  return { dtype: typed, shape: shape as number[], begin, end };
}

/* ------------------------------------------------------------------------------------ */
/* Tensor data                                                                          */
/* ------------------------------------------------------------------------------------ */

/** The typed-array fast paths below reinterpret bytes in host order, which must be little endian. */
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function assertLittleEndianHost(): void {
  if (!HOST_IS_LITTLE_ENDIAN) throw new Error('safetensors: big-endian hosts are not supported');
}

/** All 65536 half values as f32, built on first use. */
let f16Table: Float32Array | null = null;

function getF16Table(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32(h);
  }
  return f16Table;
}

/**
 * Reads one tensor and converts it to f32. Only the tensor's own bytes are read; the data
 * may sit at any (also unaligned) file offset.
 *
 * @throws ModelFormatError when the header has no tensor of that name
 */
export async function readTensorF32(
  source: FileSource,
  fileName: string,
  header: SafetensorsHeader,
  tensorName: string,
): Promise<Float32Array> {
  const info = header.tensors.get(tensorName);
  if (info === undefined) throw new ModelFormatError(fileName, tensorName, 'tensor not found in this file');
  const bytes = await source.readRange(fileName, header.dataStart + info.begin, header.dataStart + info.end);
  return decodeToF32(bytes, info.dtype);
}

/** Converts little-endian F32/F16/BF16 bytes to a fresh Float32Array. */
export function decodeToF32(bytes: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  assertLittleEndianHost();
  // A copy starts at offset 0 of its own buffer, so typed views over it are aligned.
  if (dtype === 'F32') return new Float32Array(bytes.slice().buffer);
  const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
  const out = new Float32Array(halves.length);
  if (dtype === 'BF16') {
    const outBits = new Uint32Array(out.buffer);
    for (let i = 0; i < halves.length; i++) outBits[i] = halves[i] << 16;
  } else {
    const table = getF16Table();
    for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
  }
  return out;
}

/** Encodes f32 values as little-endian bytes of `dtype`. */
function encodeFromF32(data: Float32Array, dtype: SafetensorsDtype): Uint8Array {
  assertLittleEndianHost();
  if (dtype === 'F32') return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const halves = new Uint16Array(data.length);
  const convert = dtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
  for (let i = 0; i < data.length; i++) halves[i] = convert(data[i]);
  return new Uint8Array(halves.buffer);
}

/**
 * Serialises tensors as a safetensors file: the 8-byte length, the JSON header padded with
 * spaces to a multiple of 8 bytes, then the tensors' data in the given order, contiguous.
 * F16 and BF16 are rounded to nearest even.
 *
 * @throws RangeError on a duplicate name, a bad shape, or data whose length is not product(shape)
 */
export function writeSafetensors(tensors: SafetensorsTensor[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) {
      throw new RangeError(`writeSafetensors: duplicate or reserved tensor name "${t.name}"`);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new RangeError(`writeSafetensors: ${t.name}: bad shape ${formatShape(t.shape)}`);
    }
    const count = t.shape.reduce((a, d) => a * d, 1);
    if (t.data.length !== count) {
      throw new RangeError(`writeSafetensors: ${t.name}: shape ${formatShape(t.shape)} needs ${count} values, got ${t.data.length}`);
    }
    const size = count * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let pos = 8 + headerLength;
  for (const t of tensors) {
    const bytes = encodeFromF32(t.data, t.dtype);
    out.set(bytes, pos);
    pos += bytes.length;
  }
  return out;
}

/* ------------------------------------------------------------------------------------ */
/* Helpers                                                                              */
/* ------------------------------------------------------------------------------------ */

/** `[64, 128]` */
function formatShape(shape: readonly unknown[]): string {
  return `[${shape.join(', ')}]`;
}
