import { describe, expect, it } from 'vitest';
import { dequantize, quantize, quantizedBytes, roundHalfAway, type QuantFormat } from '../../src/model/quant.ts';

/** Deterministic pseudo-random weights in [-amp, amp) (LCG), so failures reproduce. */
function randomWeights(n: number, seed: number, amp = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * amp;
  }
  return out;
}

/** Code of element (n, k) read straight from the packed words, per the documented GPU layout. */
function codeAt(data: Uint32Array, cols: number, n: number, k: number, format: 'q8' | 'q4'): number {
  if (format === 'q8') {
    const word = data[n * (cols / 4) + Math.floor(k / 4)];
    const byte = (word >>> (8 * (k % 4))) & 0xff;
    return byte >= 128 ? byte - 256 : byte;
  }
  const word = data[n * (cols / 8) + Math.floor(k / 8)];
  return ((word >>> (4 * (k % 8))) & 0xf) - 8;
}

describe('roundHalfAway', () => {
  it('rounds halves away from zero, unlike Math.round on negatives', () => {
    expect([2.5, -2.5, 0.5, -0.5, 1.4999, -1.4999, 3, -3].map(roundHalfAway)).toEqual([3, -3, 1, -1, 1, -1, 3, -3]);
    expect(Math.round(-2.5)).toBe(-2);
    expect(roundHalfAway(0.49999999999999994)).toBe(0); // floor(x + 0.5) would give 1
  });
});

describe('quantize / dequantize', () => {
  for (const format of ['q8', 'q4'] as const) {
    const qmax = format === 'q8' ? 127 : 7;

    it(`${format}: round-trip error within half a step per block, scale = absmax/${qmax}`, () => {
      const rows = 5;
      const cols = 96;
      const w = randomWeights(rows * cols, 7, 0.3);
      w[3] = -2; // one large-magnitude block
      const q = quantize(w, rows, cols, format);
      expect(q.scales).not.toBeNull();
      const scales = q.scales!;
      expect(scales.length).toBe(rows * (cols / 32));
      const deq = dequantize(q);
      expect(deq.length).toBe(rows * cols);
      for (let n = 0; n < rows; n++) {
        for (let b = 0; b < cols / 32; b++) {
          const block = w.subarray(n * cols + b * 32, n * cols + b * 32 + 32);
          const absmax = Math.max(...Array.from(block, Math.abs));
          const scale = scales[n * (cols / 32) + b];
          expect(scale).toBe(Math.fround(absmax / qmax));
          for (let i = 0; i < 32; i++) {
            const e = n * cols + b * 32 + i;
            expect(Math.abs(w[e] - deq[e])).toBeLessThanOrEqual(scale / 2 + 2e-7 * absmax);
          }
        }
      }
    });

    it(`${format}: the block absmax element is reproduced as ±${qmax} steps`, () => {
      const w = randomWeights(64, 11, 0.5);
      w[5] = 0.9;
      w[40] = -1.3;
      const q = quantize(w, 1, 64, format);
      const data = q.data as Uint32Array;
      expect(codeAt(data, 64, 0, 5, format)).toBe(qmax);
      expect(codeAt(data, 64, 0, 40, format)).toBe(-qmax);
      const deq = dequantize(q);
      expect(deq[5]).toBe(Math.fround(qmax * q.scales![0]));
      expect(deq[40]).toBe(Math.fround(-qmax * q.scales![1]));
    });

    it(`${format}: zero blocks have scale 0, codes 0 and dequantize to exact zeros`, () => {
      const w = new Float32Array(2 * 64);
      w.set(randomWeights(32, 3), 32); // row 0 block 1 non-zero, everything else zero
      const q = quantize(w, 2, 64, format);
      expect(Array.from(q.scales!)).toEqual([0, q.scales![1], 0, 0]);
      expect(q.scales![1]).toBeGreaterThan(0);
      const deq = dequantize(q);
      for (const k of [0, 31, 64, 127]) expect(Object.is(deq[k], 0)).toBe(true);
      for (let k = 0; k < 32; k++) expect(codeAt(q.data as Uint32Array, 64, 1, k, format)).toBe(0);
      if (format === 'q4')
        expect(q.data[(1 * 64) / 8]).toBe(0x88888888); // zero code = nibble 8
      else expect(q.data[64 / 4]).toBe(0);
    });

    it(`${format}: is deterministic and does not modify its input`, () => {
      const w = randomWeights(3 * 64, 5);
      const copy = w.slice();
      const a = quantize(w, 3, 64, format);
      const b = quantize(w, 3, 64, format);
      expect(w).toEqual(copy);
      expect(a.data).toEqual(b.data);
      expect(a.scales).toEqual(b.scales);
      expect(dequantize(a)).toEqual(dequantize(b));
    });
  }

  it('q8: packs exact bytes at the documented positions (hand-built matrix)', () => {
    // Row 0: block 0 has absmax 127 so scale is exactly 1 and codes equal the values.
    // Row 1: block 1 is the negated ramp; other blocks are zero.
    const rows = 2;
    const cols = 64;
    const w = new Float32Array(rows * cols);
    const row0 = [127, -127, 1, -1, 0, 2.5, -2.5, 63.5, -0.5, 0.49, 100, -100];
    row0.forEach((v, k) => (w[k] = v));
    for (let k = 0; k < 32; k++) w[cols + 32 + k] = -(k * 4); // codes -(k*4)*127/124 rounded
    const q = quantize(w, rows, cols, 'q8');
    const data = q.data as Uint32Array;
    expect(data.length).toBe((rows * cols) / 4);
    expect(q.scales![0]).toBe(1);
    expect(q.scales![1]).toBe(0);
    expect(q.scales![2]).toBe(0);
    expect(q.scales![3]).toBe(Math.fround(124 / 127));
    // word 0 = bytes [127, -127, 1, -1] = 0x7f, 0x81, 0x01, 0xff (byte 0 in the low bits)
    expect(data[0]).toBe(0xff01817f);
    // word 1 = [0, 3 (2.5 rounds away), -3, 64 (63.5 rounds away)] = 0x00, 0x03, 0xfd, 0x40
    expect(data[1]).toBe(0x40fd0300);
    // word 2 = [-1 (-0.5 away from zero), 0 (0.49), 100, -100] = 0xff, 0x00, 0x64, 0x9c
    expect(data[2]).toBe(0x9c6400ff);
    for (let i = 3; i < 16 + 8; i++) expect(data[i]).toBe(0);
    for (let k = 0; k < 32; k++) {
      const expected = 0 - Math.min(127, roundHalfAway((k * 4) / Math.fround(124 / 127)));
      expect(codeAt(data, cols, 1, 32 + k, 'q8')).toBe(expected);
    }
    expect(codeAt(data, cols, 1, 63, 'q8')).toBe(-127);
    expect(Array.from(dequantize(q).subarray(0, 12))).toEqual([127, -127, 1, -1, 0, 3, -3, 64, -1, 0, 100, -100]);
  });

  it('q4: packs exact nibbles at the documented positions (hand-built matrix)', () => {
    // Block absmax 7 gives scale exactly 1; stored nibble = code + 8.
    const rows = 2;
    const cols = 32;
    const w = new Float32Array(rows * cols);
    [7, -7, 1, -1, 0, 2.5, -2.5, 3.49, -6.5, 0.5, -0.49, 6].forEach((v, k) => (w[k] = v));
    [-14, 14, 0, 1].forEach((v, k) => (w[cols + 8 + k] = v)); // row 1: absmax 14 → scale 2
    const q = quantize(w, rows, cols, 'q4');
    const data = q.data as Uint32Array;
    expect(data.length).toBe((rows * cols) / 8);
    expect(Array.from(q.scales!)).toEqual([1, 2]);
    // codes [7,-7,1,-1,0,3,-3,3] → nibbles [15,1,9,7,8,11,5,11]; nibble 0 in the low bits
    expect(data[0]).toBe(0xb5b8791f);
    // codes [-7 (-6.5 away from zero), 1 (0.5), 0 (-0.49), 6, 0, 0, 0, 0] → [1,9,8,14,8,8,8,8]
    expect(data[1]).toBe(0x8888e891);
    expect(data[2]).toBe(0x88888888);
    expect(data[3]).toBe(0x88888888);
    expect(data[4]).toBe(0x88888888); // row 1, k 0..7: zeros
    // row 1, k 8..11: codes [-7, 7, 0, 1] (1/2 = 0.5 rounds away to 1) → nibbles [1, 15, 8, 9]
    expect(data[5]).toBe(0x888898f1);
    expect(Array.from(dequantize(q).subarray(cols + 8, cols + 12))).toEqual([-14, 14, 0, 2]);
  });

  it('keeps negative extremes: a block of equal negative values maps to -qmax, never past it', () => {
    for (const [format, qmax] of [
      ['q8', 127],
      ['q4', 7],
    ] as const) {
      const w = new Float32Array(32).fill(-3.75);
      const q = quantize(w, 1, 32, format);
      for (let k = 0; k < 32; k++) expect(codeAt(q.data as Uint32Array, 32, 0, k, format)).toBe(-qmax);
      const deq = dequantize(q);
      expect(deq[0]).toBe(Math.fround(-qmax * q.scales![0]));
      expect(Math.abs(deq[0] + 3.75)).toBeLessThan(1e-6);
    }
  });

  it('f32: data is the input array itself and scales are null', () => {
    const w = randomWeights(3 * 5, 1);
    const q = quantize(w, 3, 5, 'f32');
    expect(q).toEqual({ format: 'f32', rows: 3, cols: 5, data: w, scales: null });
    expect(q.data).toBe(w);
    expect(dequantize(q)).toBe(w);
  });

  it('rejects K that is not a multiple of 32, naming K', () => {
    const w = new Float32Array(2 * 48);
    expect(() => quantize(w, 2, 48, 'q8')).toThrow('quant: q8 needs K (cols, the input dimension) to be a multiple of 32, got K=48');
    expect(() => quantize(w, 2, 48, 'q4')).toThrow('got K=48');
    expect(() => quantizedBytes(2, 48, 'q4')).toThrow('got K=48');
  });

  it('rejects a length mismatch and non-finite weights', () => {
    expect(() => quantize(new Float32Array(63), 2, 32, 'q8')).toThrow('quant: weight has 63 elements, expected rows*cols = 2*32 = 64');
    const w = new Float32Array(64);
    w[40] = NaN;
    expect(() => quantize(w, 2, 32, 'q4')).toThrow('quant: non-finite weight NaN at row 1, col 8');
  });

  it('rejects inconsistent packed data on dequantize', () => {
    const q = quantize(randomWeights(64, 2), 2, 32, 'q8');
    expect(() => dequantize({ ...q, scales: null })).toThrow('quant: q8 matrix needs 2 scales');
    expect(() => dequantize({ ...q, format: 'q4' })).toThrow('quant: q4 matrix data must be a Uint32Array of 8 words');
  });

  it('quantizedBytes = packed codes + 4 bytes per 32-element block', () => {
    const cases: [number, number, QuantFormat, number][] = [
      [576, 576, 'f32', 576 * 576 * 4],
      [576, 576, 'q8', 576 * 576 + 576 * 18 * 4],
      [576, 576, 'q4', (576 * 576) / 2 + 576 * 18 * 4],
      [1536, 576, 'q4', 1536 * 288 + 1536 * 18 * 4],
      [3, 5, 'f32', 60],
    ];
    for (const [rows, cols, format, bytes] of cases) {
      expect(quantizedBytes(rows, cols, format)).toBe(bytes);
      if (format !== 'f32') {
        const q = quantize(new Float32Array(rows * cols), rows, cols, format);
        expect(q.data.byteLength + q.scales!.byteLength).toBe(bytes);
      }
    }
  });
});
