import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../../src/errors.ts';
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  readTensorF32,
  writeSafetensors,
  type SafetensorsHeader,
} from '../../src/model/safetensors.ts';
import { Rng } from '../../src/util/rng.ts';
import { MemorySource } from '../helpers/fuzz.ts';

/** A file from a raw header text and data; `claimed` overrides the length prefix. */
function rawFile(headerText: string, dataBytes = 0, claimed?: bigint): Uint8Array {
  const json = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, claimed ?? BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

/** Parses `file` through a recording reader; returns the header or the error, and the reads. */
async function parseRecorded(file: Uint8Array, fileSize = file.length) {
  const source = new MemorySource({ 'x.safetensors': file });
  const reader = (start: number, end: number) => source.readRange('x.safetensors', start, end);
  try {
    return { header: await parseSafetensorsHeader(reader, fileSize, 'x.safetensors'), reads: source.reads };
  } catch (error) {
    return { error: error as Error, reads: source.reads };
  }
}

async function expectHeaderError(file: Uint8Array, message: string, fileSize = file.length) {
  const { error, reads } = await parseRecorded(file, fileSize);
  expect(error).toBeInstanceOf(ModelFormatError);
  expect(error!.message).toBe(message);
  return reads;
}

const f16 = (x: number) => f16BitsToF32(f32ToF16Bits(x));
const bf16 = (x: number) => bf16BitsToF32(f32ToBf16Bits(x));

describe('f16 conversion', () => {
  it('encodes exact values and specials', () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(0)).toBe(0x0000);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16Bits(2 ** -14)).toBe(0x0400); // smallest normal
    const nan = f32ToF16Bits(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
    expect(f16BitsToF32(nan)).toBeNaN();
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
  });

  it('rounds to nearest, ties to even', () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even (down)
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above the tie
    expect(f32ToF16Bits(65519)).toBe(0x7bff); // below the tie with 65536
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // tie → even = 2^16 = overflow to Inf
    expect(f32ToF16Bits(1e6)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // subnormal tie → even (zero)
    expect(f32ToF16Bits(-(2 ** -25))).toBe(0x8000);
    expect(f32ToF16Bits(2 ** -25 * 1.5)).toBe(0x0001);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 → 2
    expect(f32ToF16Bits(1023.5 * 2 ** -24)).toBe(0x0400); // largest subnormal tie carries into the smallest normal
    expect(f32ToF16Bits(2 ** -30)).toBe(0x0000);
  });

  it('round-trips every non-NaN half exactly', () => {
    for (let h = 0; h < 65536; h++) {
      const x = f16BitsToF32(h);
      if (Number.isNaN(x)) continue;
      expect(f32ToF16Bits(x)).toBe(h);
    }
  });

  it('picks the nearest half for random values', () => {
    const rng = new Rng(1);
    for (let i = 0; i < 20000; i++) {
      const x = Math.fround(rng.uniform(-1, 1) * 2 ** rng.uniform(-26, 15.9)); // |x| < 61200: never overflows
      const h = f32ToF16Bits(x);
      const err = Math.abs(f16BitsToF32(h) - x);
      for (const neighbour of [h - 1, h + 1]) {
        if ((neighbour & 0x7fff) >= 0x7c00 || neighbour < 0 || (neighbour & 0x8000) !== (h & 0x8000)) continue;
        expect(err).toBeLessThanOrEqual(Math.abs(f16BitsToF32(neighbour) - x));
      }
    }
  });
});

describe('bf16 conversion', () => {
  it('encodes exact values, specials and rounds to nearest even', () => {
    expect(f32ToBf16Bits(1)).toBe(0x3f80);
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even (down)
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    expect(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(f32ToBf16Bits(3.4028234663852886e38)).toBe(0x7f80); // f32 max rounds to Inf
    expect(f32ToBf16Bits(-3.4028234663852886e38)).toBe(0xff80);
    expect(bf16BitsToF32(f32ToBf16Bits(NaN))).toBeNaN();
    expect(bf16BitsToF32(f32ToBf16Bits(-NaN))).toBeNaN();
    expect(bf16BitsToF32(0xc040)).toBe(-3);
  });

  it('round-trips every non-NaN bf16 exactly', () => {
    for (let h = 0; h < 65536; h++) {
      const x = bf16BitsToF32(h);
      if (Number.isNaN(x)) continue;
      expect(f32ToBf16Bits(x)).toBe(h);
    }
  });
});

describe('writeSafetensors', () => {
  it('writes the real layout: u64 length, space-padded JSON, contiguous data in order', () => {
    const bytes = writeSafetensors(
      [
        { name: 'a', dtype: 'F16', shape: [3], data: new Float32Array([1, 2, 3]) },
        { name: 'b', dtype: 'F32', shape: [1, 2], data: new Float32Array([0.5, -0.25]) },
      ],
      { format: 'pt' },
    );
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const headerLength = Number(view.getBigUint64(0, true));
    expect(headerLength % 8).toBe(0);
    expect(bytes.length).toBe(8 + headerLength + 6 + 8);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
    expect(text.trimEnd().length).toBeGreaterThan(headerLength - 8);
    expect(text.slice(text.trimEnd().length)).toMatch(/^ *$/);
    expect(JSON.parse(text)).toEqual({
      __metadata__: { format: 'pt' },
      a: { dtype: 'F16', shape: [3], data_offsets: [0, 6] },
      b: { dtype: 'F32', shape: [1, 2], data_offsets: [6, 14] },
    });
    const data = 8 + headerLength;
    expect(view.getUint16(data, true)).toBe(0x3c00);
    expect(view.getUint16(data + 4, true)).toBe(0x4200);
    expect(view.getFloat32(data + 6, true)).toBe(0.5);
    expect(view.getFloat32(data + 10, true)).toBe(-0.25);
  });

  it('rejects data that does not match the shape, and duplicate names', () => {
    expect(() => writeSafetensors([{ name: 'a', dtype: 'F32', shape: [2, 2], data: new Float32Array(3) }])).toThrow(
      'writeSafetensors: a: shape [2, 2] needs 4 values, got 3',
    );
    const t = { name: 'a', dtype: 'F32' as const, shape: [1], data: new Float32Array(1) };
    expect(() => writeSafetensors([t, t])).toThrow('writeSafetensors: duplicate or reserved tensor name "a"');
  });
});

describe('safetensors round trip', () => {
  const specials = [0, -0, 1, -1, 0.1, 1e-8, -3.5e-6, 65504, 70000, 1e30, Infinity, -Infinity, NaN, 1.401298464324817e-45];
  const rng = new Rng(7);
  const random = Float32Array.from({ length: 2 * 3 * 5 }, () => rng.normal() * 3);
  const values = new Float32Array([...specials, ...random]);

  async function roundTrip() {
    // Odd element counts put later tensors at unaligned offsets (F16/BF16 first, then F32).
    const tensors = [
      { name: 'half', dtype: 'F16' as const, shape: [values.length], data: values },
      { name: 'odd', dtype: 'BF16' as const, shape: [3], data: new Float32Array([1.5, -2.25, 3e-3]) },
      { name: 'brain', dtype: 'BF16' as const, shape: [values.length], data: values },
      { name: 'full', dtype: 'F32' as const, shape: [values.length], data: values },
      { name: 'matrix', dtype: 'F32' as const, shape: [2, 3, 5], data: random },
      { name: 'empty', dtype: 'F16' as const, shape: [0, 4], data: new Float32Array(0) },
    ];
    const file = writeSafetensors(tensors, { note: 'round trip' });
    const source = new MemorySource({ 'm.safetensors': file });
    const header = await readSafetensorsHeader(source, 'm.safetensors');
    return { file, source, header };
  }

  it('parses the header it wrote, reading only the length and the header', async () => {
    const { file, source, header } = await roundTrip();
    expect(source.reads).toEqual([
      ['m.safetensors', 0, 8],
      ['m.safetensors', 8, header.dataStart],
    ]);
    expect(header.fileSize).toBe(file.length);
    expect(header.metadata).toEqual({ note: 'round trip' });
    expect([...header.tensors.keys()]).toEqual(['half', 'odd', 'brain', 'full', 'matrix', 'empty']);
    expect(header.tensors.get('matrix')).toMatchObject({ dtype: 'F32', shape: [2, 3, 5] });
    // The same header from the file's bytes instead of a reader.
    const fromBytes = await parseSafetensorsHeader(file, file.length, 'm.safetensors');
    expect(fromBytes).toEqual(header);
  });

  it('reads F32 exactly, F16/BF16 as their rounded values, at unaligned offsets', async () => {
    const { source, header } = await roundTrip();
    const full = header.tensors.get('full')!;
    expect((header.dataStart + full.begin) % 4).not.toBe(0); // the case under test
    const expectSame = (got: Float32Array, want: number[]) => {
      expect(got.length).toBe(want.length);
      got.forEach((g, i) => expect(Object.is(g, want[i]) || (Number.isNaN(g) && Number.isNaN(want[i]))).toBe(true));
    };
    source.reads.length = 0;
    expectSame(await readTensorF32(source, 'm.safetensors', header, 'full'), [...values]);
    expect(source.reads).toEqual([['m.safetensors', header.dataStart + full.begin, header.dataStart + full.end]]);
    expectSame(await readTensorF32(source, 'm.safetensors', header, 'matrix'), [...random]);
    expectSame(await readTensorF32(source, 'm.safetensors', header, 'half'), [...values].map(f16));
    expectSame(await readTensorF32(source, 'm.safetensors', header, 'brain'), [...values].map(bf16));
    expectSame(await readTensorF32(source, 'm.safetensors', header, 'odd'), [1.5, -2.25, bf16(3e-3)]);
    expect((await readTensorF32(source, 'm.safetensors', header, 'empty')).length).toBe(0);
    // Spot values of the rounding: 70000 overflows f16; 0.1 is inexact in both.
    expect(f16(70000)).toBe(Infinity);
    expect(f16(0.1)).toBe(0.0999755859375);
    expect(bf16(0.1)).toBe(0.10009765625);
  });

  it('names the file and tensor when a tensor is not in the header', async () => {
    const { source, header } = await roundTrip();
    await expect(readTensorF32(source, 'm.safetensors', header, 'nope')).rejects.toThrow(
      'm.safetensors (nope): tensor not found in this file',
    );
  });
});

describe('hostile safetensors headers', () => {
  it('rejects a file shorter than the length prefix without reading', async () => {
    const reads = await expectHeaderError(
      new Uint8Array(5),
      'x.safetensors (header): file is 5 bytes, shorter than the 8-byte header length',
    );
    expect(reads).toEqual([]);
  });

  it('rejects a header length beyond the file before reading it', async () => {
    const file = rawFile('{}', 4096 - 10, 1_000_000n);
    expect(file.length).toBe(4096);
    const reads = await expectHeaderError(
      file,
      'x.safetensors (header): header claims 1000000 bytes but the file has only 4096 (8-byte length + header + data)',
    );
    expect(reads).toEqual([['x.safetensors', 0, 8]]);
  });

  it('rejects a u64 length beyond 2^53 exactly', async () => {
    const reads = await expectHeaderError(
      rawFile('{}', 0, 0xffff_ffff_ffff_ffffn),
      'x.safetensors (header): header claims 18446744073709551615 bytes but the file has only 10 (8-byte length + header + data)',
    );
    expect(reads).toEqual([['x.safetensors', 0, 8]]);
  });

  it('rejects a header over 100 MiB even in a huge file, reading only 8 bytes', async () => {
    const prefix = rawFile('', 0, 200_000_000n);
    const reads = await expectHeaderError(
      prefix,
      'x.safetensors (header): header claims 200000000 bytes, more than the 104857600-byte (100 MiB) limit',
      1e12, // a claimed 1 TB file; only the 8-byte prefix exists in memory
    );
    expect(reads).toEqual([['x.safetensors', 0, 8]]);
  });

  it('rejects a header that is not JSON, naming the parse error', async () => {
    const text = '{"w": {"dtype": "F32",';
    let parseMessage = '';
    try {
      JSON.parse(text);
    } catch (e) {
      parseMessage = (e as Error).message;
    }
    await expectHeaderError(rawFile(text), `x.safetensors (header): not valid JSON: ${parseMessage}`);
  });

  it('rejects a header that is not UTF-8 or not an object', async () => {
    const file = rawFile('{"a":1}');
    file[10] = 0xff;
    await expectHeaderError(file, 'x.safetensors (header): not valid UTF-8');
    await expectHeaderError(rawFile('[1,2]'), 'x.safetensors (header): expected a JSON object, found [1,2]');
    await expectHeaderError(rawFile('null'), 'x.safetensors (header): expected a JSON object, found null');
  });

  it('rejects data_offsets past the end of the data', async () => {
    await expectHeaderError(
      rawFile('{"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}', 16),
      'x.safetensors (w): data_offsets: expected [begin, end] with 0 <= begin <= end <= 16 (the data size), found [0,32]',
    );
    await expectHeaderError(
      rawFile('{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}', 16),
      'x.safetensors (w): data_offsets: expected [begin, end] with 0 <= begin <= end <= 16 (the data size), found [8,4]',
    );
    await expectHeaderError(
      rawFile('{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}', 16),
      'x.safetensors (w): data_offsets: expected [begin, end] with 0 <= begin <= end <= 16 (the data size), found [-4,0]',
    );
    await expectHeaderError(
      rawFile('{"w":{"dtype":"F32","shape":[1]}}', 16),
      'x.safetensors (w): data_offsets: expected [begin, end] with 0 <= begin <= end <= 16 (the data size), found nothing',
    );
  });

  it('rejects offsets whose span does not match shape × dtype size', async () => {
    await expectHeaderError(
      rawFile('{"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,16]}}', 16),
      'x.safetensors (w): data_offsets span 16 bytes but shape [2, 3] of BF16 needs 12',
    );
    await expectHeaderError(
      rawFile('{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,16]}}', 16),
      'x.safetensors (w): data_offsets span 16 bytes but shape [1000000, 1000000] of F32 needs 4000000000000',
    );
  });

  it('rejects unsupported or missing dtypes and bad shapes, naming the tensor', async () => {
    await expectHeaderError(
      rawFile('{"model.embed_tokens.weight":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}', 4),
      'x.safetensors (model.embed_tokens.weight): unsupported dtype "I8"; supported: F32, F16, BF16',
    );
    await expectHeaderError(
      rawFile('{"w":{"dtype":"toString","shape":[1],"data_offsets":[0,4]}}', 4),
      'x.safetensors (w): unsupported dtype "toString"; supported: F32, F16, BF16',
    );
    await expectHeaderError(
      rawFile('{"w":{"shape":[1],"data_offsets":[0,4]}}', 4),
      'x.safetensors (w): dtype: expected "F32", "F16" or "BF16", found nothing',
    );
    await expectHeaderError(
      rawFile('{"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]}}', 4),
      'x.safetensors (w): shape: expected an array of non-negative integers, found [2,-1]',
    );
    await expectHeaderError(
      rawFile('{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}', 4),
      'x.safetensors (w): shape: expected an array of non-negative integers, found [1.5]',
    );
    await expectHeaderError(
      rawFile('{"w":[1,2,3]}', 4),
      'x.safetensors (w): expected an object with dtype, shape and data_offsets, found [1,2,3]',
    );
  });

  it('accepts a string __metadata__ and rejects any other', async () => {
    const ok = await parseRecorded(rawFile('{"__metadata__":{"format":"pt"}}'));
    expect((ok.header as SafetensorsHeader).metadata).toEqual({ format: 'pt' });
    expect(ok.header!.tensors.size).toBe(0);
    await expectHeaderError(
      rawFile('{"__metadata__":{"total":12}}'),
      'x.safetensors (__metadata__): expected a map of strings, found 12 at key "total"',
    );
    await expectHeaderError(rawFile('{"__metadata__":"pt"}'), 'x.safetensors (__metadata__): expected a map of strings, found "pt"');
  });
});
