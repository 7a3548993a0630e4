/**
 * Whole-model forward parity: the GPU engine against the tfjs reference (test/reference/llama-tf.ts)
 * on seeded tiny Llamas written to disk in the real HF formats and loaded back through the loader.
 * f32: log-probs within 1e-4 relative (+1e-5 absolute). q8/q4: against the reference run on the
 * dequantized weights, same tolerance. Also: LoRA adapters, and the largest buffer the forward pass
 * allocates stays below tokens x vocab x 4 bytes (no logits buffer).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rm } from 'node:fs/promises';
import { BufferManager } from '../../src/engine/buffers.ts';
import { GpuLlama } from '../../src/engine/llama.ts';
import type { LoraSet } from '../../src/model/lora.ts';
import { Ops } from '../../src/engine/ops.ts';
import { loadModelFolder } from '../../src/model/loader.ts';
import { dequantize, quantize, type QuantFormat } from '../../src/model/quant.ts';
import { tableFormat } from '../../src/model/size.ts';
import type { LlamaWeights } from '../../src/model/weights.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { Rng, fillNormal } from '../../src/util/rng.ts';
import { makeTmpDir, writeTinyLlamaFolder, type TinyLlamaFolderOptions } from '../fixtures/tiny-llama.ts';
import { referenceLogProbs } from '../reference/llama-tf.ts';
import { maxViolation, testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
let tmp: string;
beforeAll(async () => {
  g = await testGpu();
  tmp = await makeTmpDir('forward');
});
afterAll(async () => {
  g?.destroy();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const BASE = { vocabSize: 384, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2 };
const MODELS: Array<[string, TinyLlamaFolderOptions]> = [
  ['GQA, tied, llama3 rope scaling, F32', { ...BASE, seed: 1, tie: true, ropeScaling: true, dtype: 'F32' }],
  ['GQA, untied, BF16, 2 shards', { ...BASE, seed: 2, tie: false, dtype: 'BF16', shards: 2 }],
  [
    'MQA (1 kv head), head_dim 32 != hidden/heads, 3 layers, F16',
    { ...BASE, seed: 3, numLayers: 3, numKvHeads: 1, headDim: 32, tie: false, dtype: 'F16' },
  ],
];

function sequence(seed: number, T: number, V: number): { ids: number[]; rows: number[]; targets: number[] } {
  const rng = new Rng(seed);
  const all = Array.from({ length: T + 1 }, () => rng.int(V));
  return { ids: all.slice(0, T), rows: all.slice(0, T).map((_, i) => i), targets: all.slice(1) };
}

/** The weights the GPU really multiplies by in `quant`: every quantized matrix dequantized. */
function dequantizedWeights(w: LlamaWeights, quant: QuantFormat): LlamaWeights {
  const c = w.config;
  const dq = (m: Float32Array, rows: number, cols: number, f: QuantFormat) => dequantize(quantize(m, rows, cols, f));
  const tf = tableFormat(quant);
  return {
    config: c,
    embed: dq(w.embed, c.vocabSize, c.hiddenSize, tf),
    lmHead: w.lmHead && dq(w.lmHead, c.vocabSize, c.hiddenSize, tf),
    finalNorm: w.finalNorm,
    layers: w.layers.map((l) => {
      const H = c.numHeads * c.headDim,
        KV = c.numKvHeads * c.headDim,
        C = c.hiddenSize,
        F = c.intermediateSize;
      return {
        inputNorm: l.inputNorm,
        postNorm: l.postNorm,
        q: dq(l.q, H, C, quant),
        k: dq(l.k, KV, C, quant),
        v: dq(l.v, KV, C, quant),
        o: dq(l.o, C, H, quant),
        gate: dq(l.gate, F, C, quant),
        up: dq(l.up, F, C, quant),
        down: dq(l.down, C, F, quant),
      };
    }),
  };
}

describe.each(MODELS)('%s', (_name, opts) => {
  let weights: LlamaWeights;
  beforeAll(async () => {
    const dir = `${tmp}/m${opts.seed}`;
    await writeTinyLlamaFolder(dir, opts);
    weights = (await loadModelFolder(new FolderSource(dir))).weights; // as stored (F16/BF16-rounded)
  });

  for (const quant of ['f32', 'q8', 'q4'] as const) {
    it(`${quant}: log-probs match the reference (T=37, all positions)`, async () => {
      const T = 37;
      const { ids, rows, targets } = sequence(10 + opts.seed, T, weights.config.vocabSize);
      const llama = GpuLlama.create(g.ops, weights, quant);
      g.buffers.resetPeak();
      const got = await llama.score(ids, rows, targets);
      const largest = g.buffers.largest;
      const ref = referenceLogProbs(quant === 'f32' ? weights : dequantizedWeights(weights, quant), ids, targets);
      expect(maxViolation(got.logp, ref, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
      // No tokens x vocab buffer: the largest allocation of the pass is far below it.
      expect(largest).toBeLessThan(T * weights.config.vocabSize * 4);
      llama.destroy();
    });
  }

  it('scores a subset of positions in any order (the rows the caller asks for)', async () => {
    const T = 20;
    const { ids, targets } = sequence(99, T, weights.config.vocabSize);
    const rows = [19, 3, 7, 7, 0];
    const tg = rows.map((r) => targets[r]);
    const llama = GpuLlama.create(g.ops, weights, 'f32');
    const got = await llama.score(ids, rows, tg);
    const ref = referenceLogProbs(weights, ids, targets);
    expect(
      maxViolation(
        got.logp,
        rows.map((r) => ref[r]),
        1e-4,
        1e-5,
      ),
    ).toBeLessThanOrEqual(1);
    llama.destroy();
  });
});

it('LoRA on all seven projections matches the reference with the same adapters', async () => {
  const dir = `${tmp}/lora`;
  await writeTinyLlamaFolder(dir, { ...BASE, seed: 5, tie: true, dtype: 'F32' });
  const weights = (await loadModelFolder(new FolderSource(dir))).weights;
  const c = weights.config;
  const rng = new Rng(77);
  const r = 8;
  const H = c.numHeads * c.headDim,
    KV = c.numKvHeads * c.headDim,
    C = c.hiddenSize,
    F = c.intermediateSize;
  const shapes = {
    q_proj: [H, C],
    k_proj: [KV, C],
    v_proj: [KV, C],
    o_proj: [C, H],
    gate_proj: [F, C],
    up_proj: [F, C],
    down_proj: [C, F],
  } as const;
  const lora: LoraSet = weights.layers.map(() =>
    Object.fromEntries(
      Object.entries(shapes).map(([p, [n, k]]) => [
        p,
        { A: fillNormal(new Float32Array(r * k), 0.2, rng), B: fillNormal(new Float32Array(n * r), 0.2, rng), r, scale: 2 },
      ]),
    ),
  );
  const { ids, rows, targets } = sequence(5, 29, c.vocabSize);
  const llama = GpuLlama.create(g.ops, weights, 'f32', lora);
  const got = await llama.score(ids, rows, targets);
  const ref = referenceLogProbs(weights, ids, targets, { lora });
  const plain = referenceLogProbs(weights, ids, targets);
  expect(maxViolation(got.logp, ref, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
  expect(maxViolation(got.logp, plain, 1e-4, 1e-5)).toBeGreaterThan(1); // the adapters really act
  llama.destroy();
});

it('refuses a model over the memory budget with the numbers, and frees what it had uploaded', async () => {
  const dir = `${tmp}/budget`;
  await writeTinyLlamaFolder(dir, { ...BASE, seed: 7, tie: true, dtype: 'F32' });
  const weights = (await loadModelFolder(new FolderSource(dir))).weights;
  const buffers = new BufferManager(g.ctx.device, 150_000);
  const ops = new Ops(g.ctx.device, g.pipelines, buffers);
  expect(() => GpuLlama.create(ops, weights, 'f32')).toThrow(
    /^buffer "layers\.\d\.\w+" \(\d+\.\d KiB\) would take GPU memory to \d+\.\d KiB, over the budget of 146\.5 KiB$/,
  );
  expect(buffers.current).toBe(0);
});

it('rejects out-of-vocabulary ids and positions with clear messages', async () => {
  const dir = `${tmp}/bad`;
  await writeTinyLlamaFolder(dir, { ...BASE, seed: 6, tie: true, dtype: 'F32' });
  const weights = (await loadModelFolder(new FolderSource(dir))).weights;
  const llama = GpuLlama.create(g.ops, weights, 'q8');
  await expect(llama.score([1, 384], [0], [2])).rejects.toThrow('token id 384 is outside the vocabulary [0, 384)');
  await expect(llama.score([1, 2], [2], [2])).rejects.toThrow('position 2 is outside the sequence [0, 2)');
  await expect(llama.responseLogProbs([], [5])).rejects.toThrow('the prompt has no tokens');
  llama.destroy();
});
