/**
 * The GGUF writer's bytes, checked field by field against the layout the spec gives (ggml's
 * docs/gguf.md): header, metadata, tensor infos, alignment; and the LoRA adapter file's names,
 * shapes, metadata and q/k row order.
 */
import { describe, expect, it } from 'vitest';
import { ggufAdapterUsage, ggufLoraAdapter, toGgufRopeRows, writeGguf } from '../../src/export/gguf.ts';
import { NlftError } from '../../src/errors.ts';
import { tinyLlamaConfig } from '../../src/model/demo.ts';
import { ggufRopeRowSource } from '../../src/model/gguf-format.ts';
import type { LoraConfig, LoraSet } from '../../src/model/lora.ts';
import { projectionShapes } from '../../src/model/size.ts';

/** Reads the file front to back the way the spec lays it out (only what these tests need). */
class SpecReader {
  private view: DataView;
  at = 0;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u8(): number {
    return this.view.getUint8(this.at++);
  }
  u32(): number {
    const v = this.view.getUint32(this.at, true);
    this.at += 4;
    return v;
  }
  u64(): number {
    const v = Number(this.view.getBigUint64(this.at, true));
    this.at += 8;
    return v;
  }
  f32(): number {
    const v = this.view.getFloat32(this.at, true);
    this.at += 4;
    return v;
  }
  str(): string {
    const n = this.u64();
    const s = new TextDecoder().decode(this.bytes.subarray(this.at, this.at + n));
    this.at += n;
    return s;
  }
}

describe('writeGguf', () => {
  const bytes = writeGguf({
    metadata: [
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['t.alpha', { type: 'float32', value: 1.5 }],
      ['t.flag', { type: 'bool', value: true }],
      ['t.words', { type: 'array', itemType: 'string', values: ['a', 'bé'] }],
      ['t.ints', { type: 'array', itemType: 'int32', values: [-1, 7] }],
    ],
    tensors: [
      { name: 'x', shape: [2, 3], type: 'F32', data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
      { name: 'h', shape: [3], type: 'F16', data: Float32Array.from([1, -2, 65504]) },
    ],
  });

  it('writes the header, every key-value and the tensor infos in the spec layout', () => {
    const r = new SpecReader(bytes);
    expect(String.fromCharCode(r.u8(), r.u8(), r.u8(), r.u8())).toBe('GGUF');
    expect(r.u32()).toBe(3); // version
    expect(r.u64()).toBe(2); // tensors
    expect(r.u64()).toBe(5); // key-values
    expect([r.str(), r.u32(), r.str()]).toEqual(['general.architecture', 8, 'llama']);
    expect([r.str(), r.u32(), r.f32()]).toEqual(['t.alpha', 6, 1.5]);
    expect([r.str(), r.u32(), r.u8()]).toEqual(['t.flag', 7, 1]);
    expect([r.str(), r.u32(), r.u32(), r.u64(), r.str(), r.str()]).toEqual(['t.words', 9, 8, 2, 'a', 'bé']);
    expect([r.str(), r.u32(), r.u32(), r.u64(), r.u32() | 0, r.u32()]).toEqual(['t.ints', 9, 5, 2, -1, 7]);
    // Tensor infos: name, n_dims, ne (innermost first: PyTorch [2, 3] is ne (3, 2)), type, offset.
    expect([r.str(), r.u32(), r.u64(), r.u64(), r.u32(), r.u64()]).toEqual(['x', 2, 3, 2, 0, 0]);
    expect([r.str(), r.u32(), r.u64(), r.u32(), r.u64()]).toEqual(['h', 1, 3, 1, 32]); // 24 bytes of x, aligned up to 32

    // Zero padding up to the default alignment of 32, then the data section.
    const dataStart = Math.ceil(r.at / 32) * 32;
    expect(bytes.subarray(r.at, dataStart).every((b) => b === 0)).toBe(true);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    expect(Array.from({ length: 6 }, (_, i) => view.getFloat32(dataStart + 4 * i, true))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from({ length: 3 }, (_, i) => view.getUint16(dataStart + 32 + 2 * i, true))).toEqual([0x3c00, 0xc000, 0x7bff]);
    expect(bytes.length % 32).toBe(0);
  });

  it('honours general.alignment and refuses a data length that is not the shape', () => {
    const aligned = writeGguf({
      metadata: [['general.alignment', { type: 'uint32', value: 64 }]],
      tensors: [
        { name: 'a', shape: [1], type: 'F32', data: Float32Array.of(1) },
        { name: 'b', shape: [1], type: 'F32', data: Float32Array.of(2) },
      ],
    });
    const r = new SpecReader(aligned);
    r.at = 24; // after magic, version and the two counts
    expect([r.str(), r.u32(), r.u32()]).toEqual(['general.alignment', 4, 64]);
    expect([r.str(), r.u32(), r.u64(), r.u32(), r.u64()]).toEqual(['a', 1, 1, 0, 0]);
    expect([r.str(), r.u32(), r.u64(), r.u32(), r.u64()]).toEqual(['b', 1, 1, 0, 64]);
    const dataStart = Math.ceil(r.at / 64) * 64;
    expect(new DataView(aligned.buffer).getFloat32(dataStart + 64, true)).toBe(2);
    expect(() => writeGguf({ metadata: [], tensors: [{ name: 'z', shape: [2, 2], type: 'F32', data: new Float32Array(3) }] })).toThrow(
      'writeGguf: tensor z has 3 values, its shape [2, 2] holds 4',
    );
    expect(() => writeGguf({ metadata: [['general.alignment', { type: 'uint32', value: 24 }]], tensors: [] })).toThrow(/power of two/);
    expect(() => writeGguf({ metadata: [['k', { type: 'uint8', value: 256 }]], tensors: [] })).toThrow('writeGguf: 256 is not a uint8');
  });
});

describe("llama.cpp's q/k row order", () => {
  it('interleaves the two halves of each head: GGUF row h·d + 2i + j holds HF row h·d + j·d/2 + i', () => {
    expect(Array.from(ggufRopeRowSource(4, 1))).toEqual([0, 2, 1, 3]);
    expect(Array.from(ggufRopeRowSource(12, 2))).toEqual([0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]);
    expect(() => ggufRopeRowSource(6, 2)).toThrow('6 rows are not 2 heads of an even size');
    expect(Array.from(toGgufRopeRows(Float32Array.from([0, 1, 10, 11, 20, 21, 30, 31]), 2, 1))).toEqual([0, 1, 20, 21, 10, 11, 30, 31]);
  });
});

describe('ggufLoraAdapter', () => {
  const model = tinyLlamaConfig({
    seed: 0,
    vocabSize: 16,
    hiddenSize: 8,
    intermediateSize: 12,
    numLayers: 2,
    numHeads: 2,
    numKvHeads: 1,
    tie: true,
  });
  const config: LoraConfig = { r: 4, alpha: 6, dropout: 0, targets: ['q_proj', 'v_proj', 'down_proj'] };
  const shapes = projectionShapes(model);
  let counter = 0;
  const factors = (p: 'q_proj' | 'v_proj' | 'down_proj') => ({
    A: Float32Array.from({ length: config.r * shapes[p][1] }, () => counter++),
    B: Float32Array.from({ length: shapes[p][0] * config.r }, () => counter++),
    r: config.r,
    scale: config.alpha / config.r,
  });
  const lora: LoraSet = [0, 1].map(() => ({ q_proj: factors('q_proj'), v_proj: factors('v_proj'), down_proj: factors('down_proj') }));

  it("writes the metadata llama.cpp's loader checks and each factor with its shape, B of q in llama.cpp's row order", () => {
    const bytes = ggufLoraAdapter(lora, config, model);
    const r = new SpecReader(bytes);
    r.at = 8;
    expect([r.u64(), r.u64()]).toEqual([12, 4]); // 2 layers × 3 projections × (A, B); 4 key-values
    const kv: Record<string, unknown> = {};
    for (let i = 0; i < 4; i++) {
      const key = r.str();
      const type = r.u32();
      kv[key] = type === 8 ? r.str() : type === 6 ? r.f32() : `type ${type}`;
    }
    expect(kv).toEqual({ 'general.architecture': 'llama', 'general.type': 'adapter', 'adapter.type': 'lora', 'adapter.lora.alpha': 6 });
    const infos: Array<{ name: string; ne: number[]; type: number; offset: number }> = [];
    for (let i = 0; i < 12; i++) {
      const name = r.str();
      const ne = Array.from({ length: r.u32() }, () => r.u64());
      infos.push({ name, ne, type: r.u32(), offset: r.u64() });
    }
    // A [r, in] → ne (in, r); B [out, r] → ne (r, out); F32 (type 0).
    expect(infos.slice(0, 6).map((t) => [t.name, t.ne, t.type])).toEqual([
      ['blk.0.attn_q.weight.lora_a', [8, 4], 0],
      ['blk.0.attn_q.weight.lora_b', [4, 8], 0],
      ['blk.0.attn_v.weight.lora_a', [8, 4], 0],
      ['blk.0.attn_v.weight.lora_b', [4, 4], 0],
      ['blk.0.ffn_down.weight.lora_a', [12, 4], 0],
      ['blk.0.ffn_down.weight.lora_b', [4, 8], 0],
    ]);
    const dataStart = Math.ceil(r.at / 32) * 32;
    const tensorData = (i: number) => {
      const n = infos[i].ne[0] * infos[i].ne[1];
      return new Float32Array(bytes.slice(dataStart + infos[i].offset, dataStart + infos[i].offset + 4 * n).buffer);
    };
    const q = lora[0].q_proj;
    const v = lora[0].v_proj;
    if (q === undefined || v === undefined) throw new Error('fixture');
    expect(tensorData(0)).toEqual(q.A);
    // q: 2 heads of 4 rows; each head's rows 0,1,2,3 are written as 0,2,1,3.
    const rowsOfB = (B: Float32Array, order: number[]) =>
      Float32Array.from(order.flatMap((row) => Array.from(B.subarray(row * 4, row * 4 + 4))));
    expect(tensorData(1)).toEqual(rowsOfB(q.B, [0, 2, 1, 3, 4, 6, 5, 7]));
    expect(tensorData(3)).toEqual(v.B); // v keeps its rows
  });

  it('names the layer and projection of an adapter that does not fit the config or the model', () => {
    const expectError = (set: LoraSet, c: LoraConfig, message: string) => {
      let caught: unknown;
      try {
        ggufLoraAdapter(set, c, model);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(NlftError);
      expect((caught as NlftError).message).toBe(`GGUF adapter export: ${message}`);
    };
    expectError([lora[0]], config, 'the adapter has 1 layers, the model 2');
    expectError(lora, { ...config, targets: ['q_proj', 'v_proj'] }, 'layer 0 has down_proj, which is not in the targets (q_proj, v_proj)');
    expectError(lora, { ...config, targets: [...config.targets, 'up_proj'] }, 'layer 0 lacks up_proj, which is in the targets');
    expectError(lora, { ...config, alpha: 8 }, 'layer 0 q_proj: scale 1.5, but alpha / r = 2');
    const short = [{ ...lora[0], v_proj: { ...factors('v_proj'), B: new Float32Array(3) } }, lora[1]];
    expectError(short, config, 'layer 0 v_proj: expected A [4, 8] and B [4, 4], found rank 4 with 32 and 3 values');
  });
});

it('ggufAdapterUsage: an Ollama Modelfile and a llama.cpp command for the adapter', () => {
  const { modelfile, llamaCpp } = ggufAdapterUsage('HuggingFaceTB/SmolLM2-135M');
  expect(modelfile).toBe(
    '# the base must be the same model (HuggingFaceTB/SmolLM2-135M) in GGUF\nFROM ./SmolLM2-135M.gguf\nADAPTER ./adapter.gguf\n',
  );
  expect(llamaCpp).toBe('llama-cli -m SmolLM2-135M.gguf --lora adapter.gguf');
});
