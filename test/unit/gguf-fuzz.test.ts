/**
 * Property-based test of the GGUF reader on hostile input: 12 000 files, each a valid file from
 * the writer (random metadata of every scalar type, string and number arrays, random tensors and
 * alignment) then mutated by a seeded generator (truncated, bytes flipped, a count, length, type
 * code or offset overwritten with a huge, small or random value, or nothing). The reader must
 * return or throw a `NlftError`, nothing else, and never allocate more than 8 bytes per byte of
 * input (it reports every buffer it makes for decoded values to `onAllocate`; an array item's slot
 * counts 8 bytes and takes at least one byte of the file).
 */
import { describe, expect, it } from 'vitest';
import { type GgufTensor, writeGguf } from '../../src/export/gguf.ts';
import { NlftError } from '../../src/errors.ts';
import { parseGgufHeader } from '../../src/model/gguf.ts';
import type { GgufNumericType, GgufValue } from '../../src/model/gguf-format.ts';
import { Rng } from '../../src/util/rng.ts';

const BASE_FILES = 240;
const MUTATIONS_PER_FILE = 50;
const NUMERIC: GgufNumericType[] = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'float64'];

/** A random valid value of a random type. */
function randomValue(rng: Rng): GgufValue {
  const pick = rng.int(7);
  if (pick === 0) return { type: 'string', value: 'ab€'.repeat(rng.int(4)) };
  if (pick === 1) return { type: 'bool', value: rng.int(2) === 1 };
  if (pick === 2) return { type: 'uint64', value: BigInt(rng.uint32()) * 3n };
  if (pick === 3) return { type: 'array', itemType: 'string', values: Array.from({ length: rng.int(5) }, (_, i) => `t${i}`) };
  if (pick === 4) {
    const itemType = NUMERIC[rng.int(4) * 2]; // unsigned types, whose values are the random bytes
    return { type: 'array', itemType, values: Array.from({ length: rng.int(6) }, () => rng.int(200)) };
  }
  const type = NUMERIC[rng.int(NUMERIC.length)];
  return { type, value: type.startsWith('float') ? rng.next() : rng.int(100) } as GgufValue;
}

/** A random valid GGUF file. */
function randomFile(rng: Rng): Uint8Array {
  const metadata: Array<[string, GgufValue]> = Array.from({ length: rng.int(6) }, (_, i) => [`k${i}`, randomValue(rng)]);
  if (rng.int(3) === 0) metadata.push(['general.alignment', { type: 'uint32', value: 2 ** (2 + rng.int(5)) }]);
  const tensors: GgufTensor[] = Array.from({ length: rng.int(4) }, (_, i) => {
    const shape = Array.from({ length: 1 + rng.int(3) }, () => 1 + rng.int(3));
    if (rng.int(3) === 0) {
      shape[shape.length - 1] = 32;
      const blocks = new Uint8Array((shape.reduce((a, b) => a * b, 1) / 32) * 34);
      return { name: `w${i}`, shape, type: 'Q8_0', blocks };
    }
    return { name: `w${i}`, shape, type: rng.int(2) ? 'F32' : 'F16', data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
  });
  return writeGguf({ metadata, tensors });
}

/** A mutated copy of `file`. */
function mutate(file: Uint8Array, rng: Rng): Uint8Array {
  const kind = rng.int(6);
  if (kind === 0) return file.subarray(0, rng.int(file.length));
  const out = file.slice();
  const view = new DataView(out.buffer);
  const at = rng.int(Math.max(1, out.length - 8));
  if (kind === 1) for (let i = 0; i < 1 + rng.int(4); i++) out[rng.int(out.length)] ^= 1 << rng.int(8);
  if (kind === 2) view.setBigUint64(at, [2n ** 64n - 1n, 2n ** 63n, 2n ** 53n, 2n ** 32n, BigInt(out.length)][rng.int(5)], true);
  if (kind === 3) view.setUint32(at, [rng.int(40), 2 ** 32 - 1, 9, 8, 31][rng.int(5)], true);
  if (kind === 4) view.setBigUint64(at, BigInt(rng.int(out.length * 2)), true);
  return out; // kind 5: unchanged
}

describe('GGUF reader under fuzzed input', () => {
  it(`${BASE_FILES * MUTATIONS_PER_FILE} mutated files: only NlftErrors, allocations bounded by the input`, async () => {
    const rng = new Rng(2026);
    const outcomes = { ok: 0, refused: 0 };
    for (let f = 0; f < BASE_FILES; f++) {
      const base = randomFile(rng);
      for (let m = 0; m < MUTATIONS_PER_FILE; m++) {
        const bytes = mutate(base, rng);
        let allocated = 0;
        try {
          await parseGgufHeader(async (s, e) => bytes.subarray(s, e), bytes.length, 'fuzz.gguf', {
            onAllocate: (n) => {
              allocated += n;
            },
          });
          outcomes.ok++;
        } catch (e) {
          if (!(e instanceof NlftError)) throw new Error(`file ${f} mutation ${m}: ${String(e)}`);
          expect(e.message.startsWith('fuzz.gguf')).toBe(true);
          outcomes.refused++;
        }
        expect(allocated).toBeLessThanOrEqual(8 * bytes.length);
      }
    }
    // Both sides of the property are exercised.
    expect(outcomes.ok).toBeGreaterThan(1000);
    expect(outcomes.refused).toBeGreaterThan(1000);
  });
});
