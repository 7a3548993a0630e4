/**
 * Block-quantized GGUF tensors (Q2_K to Q6_K; Q4_1, Q5_0, Q5_1): hand-built blocks decode to
 * the values ggml's block formulas give, with the expected values computed here from the codes and scales the block was packed
 * from (packing as ggml's `quantize_row_q4_K_ref` / `quantize_row_q6_K_ref` lay the bytes out, the
 * reverse direction of the decoder); a whole tiny model with K-quant matrices loads through the
 * GGUF loader to the decoded values; and the extra error of re-quantizing the decoded weights to
 * our q8 / q4 is measured.
 */
import { describe, expect, it } from 'vitest';
import { decodeGgufTensor, readGgufTensor, readGgufHeader } from '../../src/model/gguf.ts';
import { ggufRopeRowSource } from '../../src/model/gguf-format.ts';
import { loadModelFolder } from '../../src/model/loader.ts';
import { dequantize, quantize } from '../../src/model/quant.ts';
import { f32ToF16Bits } from '../../src/model/safetensors.ts';
import { Rng } from '../../src/util/rng.ts';
import { ggufBytesSource, kQuantTinyLlama, randomQuantBlocks, tinyLlamaGguf } from '../fixtures/gguf-llama.ts';
import { SMOLLM2_TOKENIZER_DIR } from '../fixtures/tiny-llama.ts';

/** A Q4_K block from d, dmin, 8 six-bit scales and mins, and 256 nibbles (element order). */
function packQ4K(d: number, dmin: number, scales: number[], mins: number[], q: number[]): Uint8Array {
  const block = new Uint8Array(144);
  const view = new DataView(block.buffer);
  view.setUint16(0, f32ToF16Bits(d), true);
  view.setUint16(2, f32ToF16Bits(dmin), true);
  const packed = block.subarray(4, 16);
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      packed[j] = scales[j];
      packed[j + 4] = mins[j];
    } else {
      packed[j + 4] = (scales[j] & 0xf) | ((mins[j] & 0xf) << 4);
      packed[j - 4] |= (scales[j] >> 4) << 6;
      packed[j] |= (mins[j] >> 4) << 6;
    }
  }
  // 64 values at a time: the first 32 in the low nibbles of 32 bytes, the next 32 in their high nibbles.
  for (let e = 0; e < 256; e++) {
    const group = Math.floor(e / 64);
    const within = e % 64;
    block[16 + 32 * group + (within % 32)] |= q[e] << (within < 32 ? 0 : 4);
  }
  return block;
}

/** A Q6_K block from 256 six-bit codes (element order), 16 int8 scales and d. */
function packQ6K(q: number[], scales: number[], d: number): Uint8Array {
  const block = new Uint8Array(210);
  for (let half = 0; half < 2; half++) {
    const L = (i: number) => q[128 * half + i];
    for (let l = 0; l < 32; l++) {
      block[64 * half + l] = (L(l) & 0xf) | ((L(l + 64) & 0xf) << 4);
      block[64 * half + l + 32] = (L(l + 32) & 0xf) | ((L(l + 96) & 0xf) << 4);
      block[128 + 32 * half + l] = (L(l) >> 4) | ((L(l + 32) >> 4) << 2) | ((L(l + 64) >> 4) << 4) | ((L(l + 96) >> 4) << 6);
    }
  }
  scales.forEach((s, i) => {
    block[192 + i] = s & 0xff;
  });
  new DataView(block.buffer).setUint16(208, f32ToF16Bits(d), true);
  return block;
}

/** A Q5_K block: Q4_K's d, dmin, scales and mins, 256 five-bit codes (element order): low nibbles as Q4_K's, fifth bits in qh. */
function packQ5K(d: number, dmin: number, scales: number[], mins: number[], q: number[]): Uint8Array {
  const q4 = packQ4K(
    d,
    dmin,
    scales,
    mins,
    q.map((c) => c & 0xf),
  );
  const block = new Uint8Array(176);
  block.set(q4.subarray(0, 16)); // d, dmin, the 12 packed bytes
  block.set(q4.subarray(16), 48); // the nibbles, after qh
  for (let e = 0; e < 256; e++) block[16 + (e % 32)] |= (q[e] >> 4) << (e >> 5); // sub-block s: bit s
  return block;
}

/** A Q2_K block from d, dmin, 16 four-bit scales and mins, and 256 two-bit codes (element order). */
function packQ2K(d: number, dmin: number, scales: number[], mins: number[], q: number[]): Uint8Array {
  const block = new Uint8Array(84);
  for (let s = 0; s < 16; s++) block[s] = scales[s] | (mins[s] << 4);
  for (let e = 0; e < 256; e++) {
    const [h, j, p, l] = [e >> 7, (e >> 5) & 3, (e >> 4) & 1, e & 15];
    block[16 + 32 * h + 16 * p + l] |= q[e] << (2 * j);
  }
  const view = new DataView(block.buffer);
  view.setUint16(80, f32ToF16Bits(d), true);
  view.setUint16(82, f32ToF16Bits(dmin), true);
  return block;
}

/** A Q3_K block from d, 16 six-bit scales (0…63, used as scale − 32) and 256 three-bit codes c (value c − 4). */
function packQ3K(d: number, scales: number[], q: number[]): Uint8Array {
  const block = new Uint8Array(110);
  for (let e = 0; e < 256; e++) {
    const [h, j, p, l] = [e >> 7, (e >> 5) & 3, (e >> 4) & 1, e & 15];
    block[32 + 32 * h + 16 * p + l] |= (q[e] & 3) << (2 * j);
    block[16 * p + l] |= (q[e] >> 2) << (4 * h + j);
  }
  // Scale s: low 4 bits in the low (s < 8) or high nibble of byte s mod 8, top 2 bits in byte 8 + s mod 4.
  for (let s = 0; s < 16; s++) {
    block[96 + (s & 7)] |= (scales[s] & 0xf) << (s < 8 ? 0 : 4);
    block[96 + 8 + (s & 3)] |= (scales[s] >> 4) << (2 * (s >> 2));
  }
  new DataView(block.buffer).setUint16(108, f32ToF16Bits(d), true);
  return block;
}

/** A Q4_1 / Q5_0 / Q5_1 block from its f16 fields and 32 codes (4 bits for Q4_1, 5 for the others). */
function packLegacy(type: 'Q4_1' | 'Q5_0' | 'Q5_1', d: number, m: number, q: number[]): Uint8Array {
  const withM = type !== 'Q5_0';
  const qh = withM ? 4 : 2; // Q5_x: a little-endian u32 of fifth bits
  const qs = type === 'Q4_1' ? 4 : qh + 4;
  const block = new Uint8Array(qs + 16);
  const view = new DataView(block.buffer);
  view.setUint16(0, f32ToF16Bits(d), true);
  if (withM) view.setUint16(2, f32ToF16Bits(m), true);
  for (let e = 0; e < 32; e++) {
    block[qs + (e % 16)] |= (q[e] & 0xf) << (e < 16 ? 0 : 4);
    if (type !== 'Q4_1') block[qh + (e >> 3)] |= (q[e] >> 4) << (e & 7);
  }
  return block;
}

describe('K-quant GGUF blocks', () => {
  it('Q4_K: value = d·scale·q − dmin·min per sub-block of 32, the 6-bit scales and mins unpacked', () => {
    // d and dmin are exact in f16 and every product below exact in f32, so the expected values need no rounding.
    const d = 0.5;
    const dmin = 0.25;
    const scales = [1, 63, 17, 40, 33, 2, 59, 48]; // sub-blocks 4–7 need their top 2 bits from the spare bits
    const mins = [0, 5, 63, 12, 61, 36, 3, 50];
    const q = Array.from({ length: 256 }, (_, e) => (e * 5 + 3 * (e >> 5)) % 16); // a low nibble never equals its high one
    const values = decodeGgufTensor(packQ4K(d, dmin, scales, mins, q), 'Q4_K');
    expect(values.length).toBe(256);
    const expected = q.map((code, e) => d * scales[e >> 5] * code - dmin * mins[e >> 5]);
    expect([...values]).toEqual(expected);
    // Two blocks in a row decode independently.
    const two = new Uint8Array(288);
    two.set(packQ4K(1, 0, scales, mins, q));
    two.set(packQ4K(d, dmin, scales, mins, q), 144);
    const both = decodeGgufTensor(two, 'Q4_K');
    expect([...both.subarray(0, 256)]).toEqual(q.map((code, e) => scales[e >> 5] * code));
    expect([...both.subarray(256)]).toEqual(expected);
  });

  it('Q5_K: value = d·scale·q − dmin·min per sub-block of 32, q a nibble plus 16 times bit s of qh', () => {
    const d = 0.5;
    const dmin = 0.25;
    const scales = [1, 63, 17, 40, 33, 2, 59, 48];
    const mins = [0, 5, 63, 12, 61, 36, 3, 50];
    const q = Array.from({ length: 256 }, (_, e) => (e * 7 + 5 * (e >> 5)) % 32);
    const values = decodeGgufTensor(packQ5K(d, dmin, scales, mins, q), 'Q5_K');
    expect([...values]).toEqual(q.map((code, e) => d * scales[e >> 5] * code - dmin * mins[e >> 5]));
    // The fifth bits matter: without them every code loses 16.
    const low = packQ5K(d, dmin, scales, mins, q);
    low.fill(0, 16, 48);
    expect([...decodeGgufTensor(low, 'Q5_K')]).toEqual(q.map((code, e) => d * scales[e >> 5] * (code & 15) - dmin * mins[e >> 5]));
  });

  it('Q2_K: value = d·scale·q − dmin·min per sub-block of 16, 2-bit codes, 4-bit scales and mins', () => {
    const scales = Array.from({ length: 16 }, (_, s) => (s * 7 + 3) % 16);
    const mins = Array.from({ length: 16 }, (_, s) => (s * 5 + 1) % 16);
    const q = Array.from({ length: 256 }, (_, e) => (e * 3 + (e >> 4)) % 4);
    const values = decodeGgufTensor(packQ2K(0.5, 0.25, scales, mins, q), 'Q2_K');
    expect([...values]).toEqual(q.map((c, e) => 0.5 * scales[e >> 4] * c - 0.25 * mins[e >> 4]));
  });

  it('Q3_K: value = d·(scale − 32)·(c − 4) per sub-block of 16, the third bit from hmask, 6-bit scales unpacked', () => {
    const scales = Array.from({ length: 16 }, (_, s) => (s * 23 + 5) % 64); // every sub-block's top bits differ
    const q = Array.from({ length: 256 }, (_, e) => (e * 5 + 3 * (e >> 4)) % 8);
    const values = decodeGgufTensor(packQ3K(0.125, scales, q), 'Q3_K');
    expect([...values]).toEqual(q.map((c, e) => 0.125 * (scales[e >> 4] - 32) * (c - 4)));
  });

  it('Q4_1, Q5_0, Q5_1: value = q·d + m (Q5_0: (q − 16)·d), the fifth bits from qh', () => {
    const q5 = Array.from({ length: 32 }, (_, e) => (e * 13 + 7) % 32);
    const q4 = q5.map((c) => c & 15);
    // d and m exact in f16, every product and sum exact in f32.
    expect([...decodeGgufTensor(packLegacy('Q4_1', 0.25, -1.5, q4), 'Q4_1')]).toEqual(q4.map((c) => c * 0.25 - 1.5));
    expect([...decodeGgufTensor(packLegacy('Q5_0', 0.125, 0, q5), 'Q5_0')]).toEqual(q5.map((c) => (c - 16) * 0.125));
    expect([...decodeGgufTensor(packLegacy('Q5_1', 0.0625, -1, q5), 'Q5_1')]).toEqual(q5.map((c) => c * 0.0625 - 1));
    // Two Q5_1 blocks in a row decode independently.
    const two = new Uint8Array(48);
    two.set(packLegacy('Q5_1', 1, 0, q5));
    two.set(packLegacy('Q5_1', 0.0625, -1, q5), 24);
    const both = decodeGgufTensor(two, 'Q5_1');
    expect([...both.subarray(0, 32)]).toEqual(q5);
    expect([...both.subarray(32)]).toEqual(q5.map((c) => c * 0.0625 - 1));
  });

  it('Q6_K: value = d·scale·(q − 32) per sub-block of 16, the 6-bit codes split over ql and qh', () => {
    const d = 0.125;
    const scales = [1, -1, 127, -128, 7, -33, 64, 0, 5, 100, -7, 19, -64, 2, 3, -2];
    const q = Array.from({ length: 256 }, (_, e) => (e * 37 + 11) % 64);
    q[0] = 0;
    q[255] = 63;
    const values = decodeGgufTensor(packQ6K(q, scales, d), 'Q6_K');
    expect([...values]).toEqual(q.map((code, e) => d * scales[e >> 4] * (code - 32)));
  });

  it('Q6_K rounds d·scale·(q − 32) to f32 as ggml does (product of d·scale first)', () => {
    const d = 0.0001; // not exact in f16: the stored d is its nearest f16
    const block = packQ6K(
      Array.from({ length: 256 }, (_, e) => e % 64),
      Array.from({ length: 16 }, (_, i) => 100 - 13 * i),
      d,
    );
    const stored = decodeGgufTensor(block.subarray(208, 210), 'F16')[0];
    const values = decodeGgufTensor(block, 'Q6_K');
    for (let e = 0; e < 256; e++) {
      expect(values[e]).toBe(Math.fround(Math.fround(stored * (100 - 13 * (e >> 4))) * ((e % 64) - 32)));
    }
  });

  it('a model whose matrices are Q4_K and Q6_K loads to the decoded values (q/k rows in Hugging Face order); re-quantizing them to q8 adds a small error', async () => {
    const weights = kQuantTinyLlama(4);
    const raw = randomQuantBlocks(weights.config, (name) => (name.includes('ffn') ? 'Q6_K' : 'Q4_K'), new Rng(12));
    const source = ggufBytesSource(tinyLlamaGguf(weights, SMOLLM2_TOKENIZER_DIR, 'F32', raw));
    const loaded = (await loadModelFolder(source)).weights;
    const header = await readGgufHeader(source, 'model.gguf');
    const layer = loaded.layers[0];
    const C = weights.config.hiddenSize;
    expect(header.tensors.get('blk.0.attn_q.weight')!.type).toBe('Q4_K');
    expect(header.tensors.get('blk.0.ffn_up.weight')!.type).toBe('Q6_K');
    expect(layer.up).toEqual(decodeGgufTensor(raw.get('blk.0.ffn_up.weight')!.blocks, 'Q6_K'));
    expect(layer.v).toEqual((await readGgufTensor(source, header, 'blk.0.attn_v.weight')).values);
    // attn_q's rows come back from llama.cpp's order: GGUF row r is Hugging Face row source[r].
    const q = decodeGgufTensor(raw.get('blk.0.attn_q.weight')!.blocks, 'Q4_K');
    const rows = ggufRopeRowSource(C, weights.config.numHeads);
    rows.forEach((from, r) => {
      expect(layer.q.subarray(from * C, (from + 1) * C)).toEqual(q.subarray(r * C, (r + 1) * C));
    });
    expect(Math.max(...layer.q.map(Math.abs))).toBeLessThan(0.15); // weights of a model's usual size

    // The extra error of our formats: RMS(round trip − decoded) / RMS(decoded), over all matrices.
    const relative = (format: 'q8' | 'q4') => {
      let err = 0;
      let sum = 0;
      for (const w of [layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down]) {
        const cols = w === layer.down ? weights.config.intermediateSize : C;
        const back = dequantize(quantize(w, w.length / cols, cols, format));
        w.forEach((v, i) => {
          err += (back[i] - v) ** 2;
          sum += v * v;
        });
      }
      return Math.sqrt(err / sum);
    };
    const [q8, q4] = [relative('q8'), relative('q4')];
    console.log(`K-quant weights re-quantized: q8 relative RMS error ${q8.toExponential(2)}, q4 ${q4.toExponential(2)}`);
    expect(q8).toBeGreaterThan(0);
    expect(q8).toBeLessThan(0.01);
    expect(q4).toBeGreaterThan(5 * q8);
  });
});
