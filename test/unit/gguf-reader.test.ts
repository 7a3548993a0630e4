/**
 * The GGUF reader and GGUF models as a base: files from the writer read back value for value;
 * a tiny model written as F32 GGUF loads to the very weights it was written from (q/k rows back
 * in Hugging Face order), with a tokenizer that encodes as the model's tokenizer.json does; Q8_0
 * and Q4_0 blocks decode exactly, and Q8_0 goes into our q8 layout with the file's own codes and
 * scales; a Q8_0 / Q4_0 model keeps its blocks as stored for q8 / q4 uploads (q/k rows moved
 * with the values); hostile headers get errors naming the key or tensor.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ggufLoraAdapter, writeGguf } from '../../src/export/gguf.ts';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { ModelFormatError } from '../../src/errors.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import { decodeGgufTensor, type GgufArray, ggufBlocks, parseGgufHeader } from '../../src/model/gguf.ts';
import { loadModelFolder } from '../../src/model/loader.ts';
import type { LoraConfig, LoraSet } from '../../src/model/lora.ts';
import { dequantize, quantize } from '../../src/model/quant.ts';
import { hfTensorNames, weightAt } from '../../src/model/weights.ts';
import { f16BitsToF32 } from '../../src/model/safetensors.ts';
import { fillNormal, Rng } from '../../src/util/rng.ts';
import { ggmlQuantize, ggufBytesSource, tinyLlamaGguf } from '../fixtures/gguf-llama.ts';
import { SMOLLM2_TOKENIZER_DIR, SMOLLM2_VOCAB } from '../fixtures/tiny-llama.ts';

const parse = (bytes: Uint8Array) => parseGgufHeader(async (s, e) => bytes.subarray(s, e), bytes.length, 'x.gguf');
const tiny = () =>
  makeTinyLlama({
    seed: 5,
    vocabSize: SMOLLM2_VOCAB,
    hiddenSize: 32,
    intermediateSize: 64,
    numLayers: 2,
    numHeads: 2,
    numKvHeads: 1,
    tie: false,
  });

describe('GGUF reader', () => {
  it('reads back every value type the writer writes, and the tensors where they are', async () => {
    const bytes = writeGguf({
      metadata: [
        ['a.u8', { type: 'uint8', value: 200 }],
        ['a.i16', { type: 'int16', value: -300 }],
        ['a.f64', { type: 'float64', value: 0.1 }],
        ['a.u64', { type: 'uint64', value: 2n ** 60n }],
        ['a.i64', { type: 'int64', value: -5n }],
        ['a.bool', { type: 'bool', value: true }],
        ['a.str', { type: 'string', value: 'héllo' }],
        ['a.arr', { type: 'array', itemType: 'int32', values: new Int32Array([1, -2, 3]) }],
        ['a.strs', { type: 'array', itemType: 'string', values: ['x', '', 'zz'] }],
        ['general.alignment', { type: 'uint32', value: 64 }],
      ],
      tensors: [
        { name: 't0', shape: [3, 2], type: 'F32', data: new Float32Array([1, 2, 3, 4, 5, 6]) },
        { name: 't1', shape: [5], type: 'F16', data: new Float32Array([0.5, -1, 2, 3, 4]) },
      ],
    });
    const h = await parse(bytes);
    const v = (k: string) => h.metadata.get(k)?.value;
    expect([v('a.u8'), v('a.i16'), v('a.f64'), v('a.u64'), v('a.i64'), v('a.bool'), v('a.str')]).toEqual([
      200,
      -300,
      0.1,
      2n ** 60n,
      -5n,
      true,
      'héllo',
    ]);
    expect([...((v('a.arr') as GgufArray).items as Int32Array)]).toEqual([1, -2, 3]);
    expect((v('a.strs') as GgufArray).items).toEqual(['x', '', 'zz']);
    expect(h.alignment).toBe(64);
    const t0 = h.tensors.get('t0')!;
    expect([t0.ne, t0.shape, t0.type, t0.begin % 64, t0.end - t0.begin]).toEqual([[2, 3], [3, 2], 'F32', 0, 24]);
    expect([...decodeGgufTensor(bytes.subarray(t0.begin, t0.end), 'F32')]).toEqual([1, 2, 3, 4, 5, 6]);
    const t1 = h.tensors.get('t1')!;
    expect([...decodeGgufTensor(bytes.subarray(t1.begin, t1.end), 'F16')]).toEqual([0.5, -1, 2, 3, 4]);
  });

  it('refuses hostile headers with errors naming the key or tensor', async () => {
    const good = writeGguf({
      metadata: [['k', { type: 'string', value: 'v' }]],
      tensors: [
        { name: 'a', shape: [8], type: 'F32', data: new Float32Array(8) },
        { name: 'b', shape: [8], type: 'F32', data: new Float32Array(8) },
      ],
    });
    const mutate = (f: (v: DataView, b: Uint8Array) => void) => {
      const b = good.slice();
      f(new DataView(b.buffer), b);
      return parse(b);
    };
    const kvStart = 24; // magic, version, two counts
    const valueType = kvStart + 8 + 1; // key "k"
    const tensorA = valueType + 4 + 8 + 1; // string "v"
    const aOffset = tensorA + 8 + 1 + 4 + 8 + 4;
    await expect(mutate((_, b) => b.set([0x47, 0x47, 0x55, 0x47]))).rejects.toThrow(/x\.gguf \(magic\): expected "GGUF"/);
    await expect(mutate((v) => v.setUint32(4, 1, true))).rejects.toThrow(/\(version\): expected GGUF version 2 or 3, found 1/);
    await expect(mutate((v) => v.setBigUint64(8, 2n ** 62n, true))).rejects.toThrow(
      /\(tensor count\): 4611686018427387904 tensors claimed, but the \d+ bytes left hold at most \d+$/,
    );
    await expect(mutate((v) => v.setBigUint64(kvStart, 2n ** 40n, true))).rejects.toThrow(/metadata entry 0 key length/);
    await expect(mutate((v) => v.setUint32(valueType, 13, true))).rejects.toThrow(/x\.gguf \(k\): unknown metadata value type 13/);
    await expect(mutate((v) => v.setUint32(aOffset - 4, 99, true))).rejects.toThrow(/x\.gguf \(a\): unknown ggml tensor type 99/);
    await expect(mutate((v) => v.setBigUint64(aOffset, 16n, true))).rejects.toThrow(
      /\(a\): data offset 16 is not a multiple of the alignment 32/,
    );
    await expect(mutate((v) => v.setBigUint64(aOffset, 32n, true))).rejects.toThrow(/\(b\): its bytes .* overlap a's/);
    await expect(mutate((v) => v.setBigUint64(aOffset, 64n, true))).rejects.toThrow(/\(a\): bytes .* lie past the end/);
    for (let n = 0; n < good.length; n++) await expect(parse(good.subarray(0, n))).rejects.toBeInstanceOf(ModelFormatError);
    await expect(parse(good.subarray(0, good.length - 1))).rejects.toThrow(/\(b\): bytes .* lie past the end/);
  });
});

describe('a GGUF model as a base', () => {
  it('an F32 GGUF loads to the weights it was written from, bit for bit, with an equivalent tokenizer', async () => {
    const weights = tiny();
    const model = await loadModelFolder(ggufBytesSource(tinyLlamaGguf(weights, SMOLLM2_TOKENIZER_DIR)));
    expect(model.config).toEqual(weights.config);
    for (const spec of hfTensorNames(weights.config)) {
      const [a, b] = [weightAt(model.weights, spec.slot)!, weightAt(weights, spec.slot)!];
      expect(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), spec.name).toBe(
        true,
      );
    }
    const ours = TextTokenizer.fromJson(model.tokenizerJson, model.tokenizerConfig);
    const hf = TextTokenizer.fromJson(
      JSON.parse(readFileSync(path.join(SMOLLM2_TOKENIZER_DIR, 'tokenizer.json'), 'utf8')),
      JSON.parse(readFileSync(path.join(SMOLLM2_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8')),
    );
    const text = 'Hello, world! 12345 naïve <|im_start|>user\n  spaces\tand tabs';
    expect(ours.encode(text)).toEqual(hf.encode(text));
    expect(ours.eosTokenIds).toEqual([weights.config.eosTokenId]);
    expect(ours.decode(hf.encode(text))).toBe(text);
  });

  it('Q8_0 and Q4_0 blocks decode exactly, and Q8_0 lands in our q8 layout with the file’s own codes and scales', async () => {
    const rng = new Rng(3);
    const w = fillNormal(new Float32Array(4 * 64), 0.7, rng);
    w[5] = 0; // a block edge case: zeros among the values
    for (const type of ['Q8_0', 'Q4_0'] as const) {
      const blocks = ggmlQuantize(w, type);
      const values = decodeGgufTensor(blocks, type);
      const blockBytes = type === 'Q8_0' ? 34 : 18;
      for (let b = 0; b < 8; b++) {
        const d = f16BitsToF32(blocks[b * blockBytes] | (blocks[b * blockBytes + 1] << 8));
        for (let j = 0; j < 32; j++) {
          const code =
            type === 'Q8_0'
              ? (blocks[b * blockBytes + 2 + j] << 24) >> 24
              : ((blocks[b * blockBytes + 2 + (j % 16)] >> (j < 16 ? 0 : 4)) & 15) - 8;
          expect(values[b * 32 + j]).toBe(code * d);
        }
        expect(Math.max(...values.subarray(b * 32, b * 32 + 32).map(Math.abs))).toBeCloseTo(
          Math.max(...w.subarray(b * 32, b * 32 + 32).map(Math.abs)),
          1,
        );
      }
      if (type === 'Q8_0') {
        const q = quantize(values, 4, 64, 'q8');
        for (let b = 0; b < 8; b++) {
          expect(q.scales![b]).toBe(f16BitsToF32(blocks[b * 34] | (blocks[b * 34 + 1] << 8)));
          for (let j = 0; j < 32; j++)
            expect((q.data[(b * 32 + j) >> 2] << (24 - 8 * (j % 4))) >> 24).toBe((blocks[b * 34 + 2 + j] << 24) >> 24);
        }
      }
    }
  });

  it('keeps Q8_0 and Q4_0 blocks as stored (our q8 / q4 layout), their rows where the values are; re-quantizing Q4_0 would not', async () => {
    const weights = tiny();
    for (const [type, format] of [
      ['Q8_0', 'q8'],
      ['Q4_0', 'q4'],
    ] as const) {
      // One matrix: the blocks in our layout dequantize to the decoded values, bit for bit.
      const w = fillNormal(new Float32Array(4 * 64), 0.7, new Rng(9));
      const values = decodeGgufTensor(ggmlQuantize(w, type), type);
      const blocks = ggufBlocks(ggmlQuantize(w, type), type, 4, 64);
      expect(blocks.format).toBe(format);
      expect(dequantize(blocks)).toEqual(values);
      const again = dequantize(quantize(values, 4, 64, format));
      if (type === 'Q4_0') expect(again).not.toEqual(values); // our q4 scale (absmax/7) is not Q4_0's (max/−8)
      // A whole model: every matrix stored, under the array it decodes to, q/k rows in Hugging Face order.
      const bytes = tinyLlamaGguf(weights, SMOLLM2_TOKENIZER_DIR, type);
      const loaded = (await loadModelFolder(ggufBytesSource(bytes))).weights;
      const stored = loaded.storedBlocks!;
      const matrices = hfTensorNames(loaded.config).filter((spec) => spec.shape.length === 2);
      expect(stored.size).toBe(matrices.length);
      for (const spec of matrices) {
        const array = weightAt(loaded, spec.slot)!;
        const q = stored.get(array)!;
        expect([q.format, q.rows, q.cols]).toEqual([format, ...spec.shape]);
        const back = dequantize(q);
        expect(
          back.findIndex((v, i) => !Object.is(v, array[i])),
          spec.name,
        ).toBe(-1);
      }
    }
  });

  it('refuses an adapter file, another architecture and undecoded tensor types, naming them', async () => {
    const weights = tiny();
    const bytes = tinyLlamaGguf(weights, SMOLLM2_TOKENIZER_DIR);
    const arch = new TextEncoder().encode('llama');
    const at = bytes.findIndex((_, i) => arch.every((c, j) => bytes[i + j] === c));
    const other = bytes.slice();
    other.set(new TextEncoder().encode('qwen2'), at);
    await expect(loadModelFolder(ggufBytesSource(other))).rejects.toThrow(
      /model\.gguf \(general\.architecture\): expected "llama", found "qwen2"/,
    );
    await expect(loadModelFolder(ggufBytesSource(new Uint8Array(10)))).rejects.toBeInstanceOf(ModelFormatError);

    const config: LoraConfig = { r: 4, alpha: 8, dropout: 0, targets: ['v_proj'] };
    const lora: LoraSet = weights.layers.map(() => ({
      v_proj: { A: new Float32Array(4 * 32), B: new Float32Array(16 * 4), r: 4, scale: 2 },
    }));
    await expect(loadModelFolder(ggufBytesSource(ggufLoraAdapter(lora, config, weights.config)))).rejects.toThrow(
      /model\.gguf \(general\.type\): this is a LoRA adapter, not a model/,
    );

    // token_embd stored as I8 (its Q8_0 bytes reinterpreted: a smaller tensor, so the header stays valid).
    const q8 = tinyLlamaGguf(weights, SMOLLM2_TOKENIZER_DIR, 'Q8_0');
    const name = new TextEncoder().encode('token_embd.weight');
    const nameAt = q8.findIndex((_, i) => name.every((c, j) => q8[i + j] === c));
    new DataView(q8.buffer).setUint32(nameAt + name.length + 4 + 2 * 8, 24, true);
    await expect(loadModelFolder(ggufBytesSource(q8))).rejects.toThrow(
      /model\.gguf \(token_embd\.weight\): tensor type I8 is not read yet \(read: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; not the IQ types or integer tensors\): convert/,
    );
  });
});
