/**
 * Property-based test of the GGUF reader on hostile input (the shared harness, test/helpers/fuzz.ts):
 * 12 000 files, each a valid file from the writer (random metadata of every scalar type, string and
 * number arrays, random tensors and alignment) then mutated by the harness (truncated, bits
 * flipped, a count, length, type code or offset overwritten with a huge, small or random value,
 * invalid UTF-8 spliced in, a span duplicated, or nothing). The reader must return or throw a
 * `NlftError`, nothing else, and never ask for more than 8 bytes per byte of input (it reports
 * every buffer it makes for decoded values to `onAllocate`; an array item's slot counts 8 bytes and
 * takes at least one byte of the file).
 */
import { describe, expect, it } from 'vitest';
import { type GgufTensor, writeGguf } from '../../src/export/gguf.ts';
import { parseGgufHeader } from '../../src/model/gguf.ts';
import type { GgufNumericType, GgufValue } from '../../src/model/gguf-format.ts';
import type { Rng } from '../../src/util/rng.ts';
import { fuzz, mutateBytes } from '../helpers/fuzz.ts';

const CASES = 12_000;
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

describe('GGUF reader under fuzzed input', () => {
  it(`${CASES} mutated files: only NlftErrors, allocations bounded by the input`, async () => {
    const outcomes = await fuzz({
      name: 'GGUF file',
      seed: 2026,
      cases: CASES,
      valid: randomFile,
      mutate: mutateBytes,
      size: (bytes) => bytes.length,
      mentions: 'fuzz.gguf',
      async parse(bytes) {
        let allocated = 0;
        const header = await parseGgufHeader(async (s, e) => bytes.subarray(s, e), bytes.length, 'fuzz.gguf', {
          onAllocate: (n) => {
            allocated += n;
          },
        });
        if (allocated > 8 * bytes.length) throw new Error(`the reader asked for ${allocated} bytes for a ${bytes.length}-byte file`);
        return header;
      },
    });
    // Both sides of the property are exercised.
    expect(outcomes.ok).toBeGreaterThan(1000);
    expect(outcomes.refused).toBeGreaterThan(1000);
  });
});
