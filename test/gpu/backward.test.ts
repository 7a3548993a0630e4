/**
 * Gradient parity of the whole model: LoRA gradients from the engine's backward pass against
 * tfjs-core autodiff of the reference model (test/reference/llama-tf.ts) for the loss
 *   L = sum_r w_r * (-log q_r)  [likelihood rows]  +  sum_r w_r * (-log(1 - q_r))  [unlikelihood rows]
 * with mixed per-row weights, LoRA on all seven projections, several layers, GQA, tied and untied
 * embeddings (f32 base). Tolerance: 1e-3 relative, plus 1e-4 of the largest gradient absolute.
 * Dropout is checked by central finite differences of the engine's own loss (same masks).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import type { LoraSet } from '../../src/model/lora.ts';
import { lossCoefficients, lossValue, TrainPass, type TermKind } from '../../src/engine/train-pass.ts';
import { makeTinyLlama, type TinyLlamaOptions } from '../../src/model/demo.ts';
import type { LlamaWeights } from '../../src/model/weights.ts';
import { Rng } from '../../src/util/rng.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';
import { gradientsRegistered } from '../reference/llama-tf.ts';
import { referenceLoraGrads } from '../reference/lora-grads.ts';
import { maxViolation, testGpu, type TestGpu } from '../helpers/gpu.ts';
import { flatten, randomLora } from '../helpers/lora.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

interface Case {
  ids: number[];
  rows: number[];
  targets: number[];
  kinds: TermKind[];
  weights: Float32Array;
}

function makeCase(V: number, seed: number): Case {
  const rng = new Rng(seed);
  const T = 13;
  const all = Array.from({ length: T + 1 }, () => rng.int(V));
  const rows = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  return {
    ids: all.slice(0, T),
    rows,
    targets: rows.map((r) => all[r + 1]),
    kinds: rows.map((_, i) => (i % 3 === 1 ? 'unlikelihood' : 'likelihood')),
    weights: Float32Array.from(rows, (_, i) => 0.2 + 0.15 * i),
  };
}

async function engineGrads(
  weights: LlamaWeights,
  lora: LoraSet,
  c: Case,
  dropout = { rate: 0, seed: 0 },
  recompute = false,
): Promise<{ grads: LoraSet; loss: number; peak: number }> {
  const model = GpuLlama.create(g.ops, weights, 'f32', lora);
  g.buffers.resetPeak();
  try {
    const pass = await TrainPass.forward(model, c.ids, c.rows, c.targets, dropout, recompute);
    const loss = lossValue(c.kinds, c.weights, pass.scores);
    await pass.backward(lossCoefficients(c.kinds, c.weights, pass.scores));
    return { grads: await model.lora!.readGrads(), loss, peak: g.buffers.peak };
  } finally {
    model.destroy();
  }
}

const BASE: TinyLlamaOptions = {
  seed: 1,
  vocabSize: 200,
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  tie: true,
};

describe.skipIf(skipOutsideCi(!gradientsRegistered))('LoRA gradients vs tfjs autodiff', () => {
  requirePrerequisite(gradientsRegistered, 'the tfjs gradient registrations');
  for (const [name, opts] of [
    ['3 layers, GQA, tied, llama3 rope', { ...BASE, ropeScaling: true }],
    [
      '2 layers, MHA, untied, head_dim 16 x 4 heads = 64 != hidden',
      { ...BASE, seed: 2, numLayers: 2, numKvHeads: 4, headDim: 16, tie: false },
    ],
  ] as const) {
    it(name, async () => {
      const weights = makeTinyLlama(opts);
      const lora = randomLora(weights, 4, 10 + opts.seed);
      const c = makeCase(opts.vocabSize, 20 + opts.seed);
      const ref = referenceLoraGrads(weights, lora, c);
      const got = await engineGrads(weights, lora, c);
      expect(got.loss).toBeCloseTo(ref.loss, 3);
      const a = flatten(got.grads);
      const b = flatten(ref.grads);
      const scale = Math.max(...b.map(Math.abs));
      expect(scale).toBeGreaterThan(0);
      expect(maxViolation(a, b, 1e-3, 1e-4 * scale)).toBeLessThanOrEqual(1);
    });
  }
  // The backward stops at the lowest adapter (decoder-layer.ts `layerBackward`): each subset makes its
  // lowest adapted layer take another shortcut, and layer 0 is skipped whole in the first.
  for (const [name, subset] of [
    ['layer 0 none; layer 1 down only (no dF); layer 2 q, up', [[], ['down_proj'], ['q_proj', 'up_proj']]],
    ['layer 0 gate only (no dXn); layer 2 o', [['gate_proj'], [], ['o_proj']]],
    ['layer 0 o only (no attention backward); layer 1 k', [['o_proj'], ['k_proj'], []]],
    ['layer 0 v, down (attention backward, no dXn)', [['v_proj', 'down_proj'], [], []]],
  ] as const) {
    it(`only some projections adapted: ${name}`, async () => {
      const weights = makeTinyLlama(BASE);
      const all = randomLora(weights, 4, 31);
      const lora: LoraSet = all.map((layer, i) => Object.fromEntries(subset[i].map((p) => [p, layer[p]])));
      const c = makeCase(BASE.vocabSize, 32);
      const ref = referenceLoraGrads(weights, lora, c);
      const got = await engineGrads(weights, lora, c);
      expect(got.loss).toBeCloseTo(ref.loss, 3);
      const a = flatten(got.grads);
      const b = flatten(ref.grads);
      expect(a.length).toBe(b.length);
      const scale = Math.max(...b.map(Math.abs));
      expect(scale).toBeGreaterThan(0);
      expect(maxViolation(a, b, 1e-3, 1e-4 * scale)).toBeLessThanOrEqual(1);
    });
  }
});

it('dropout: gradients match central differences of the engine loss with the same masks', async () => {
  const weights = makeTinyLlama({ ...BASE, numLayers: 2 });
  const lora = randomLora(weights, 4, 3);
  const c = makeCase(BASE.vocabSize, 4);
  const dropout = { rate: 0.3, seed: 99 };
  const base = await engineGrads(weights, lora, c, dropout);
  const again = await engineGrads(weights, lora, c, dropout);
  expect(flatten(again.grads)).toEqual(flatten(base.grads)); // reproducible from the seed
  const h = 1e-2;
  for (const [layer, proj, which, idx] of [
    [0, 'gate_proj', 'A', 5],
    [1, 'q_proj', 'B', 7],
    [0, 'down_proj', 'A', 40],
  ] as const) {
    const bump = (d: number) => {
      const l = lora.map((x) =>
        Object.fromEntries(Object.entries(x).map(([p, f]) => [p, { ...f!, A: f!.A.slice(), B: f!.B.slice() }])),
      ) as LoraSet;
      l[layer][proj]![which][idx] += d;
      return l;
    };
    const plus = (await engineGrads(weights, bump(h), c, dropout)).loss;
    const minus = (await engineGrads(weights, bump(-h), c, dropout)).loss;
    const fd = (plus - minus) / (2 * h);
    const an = base.grads[layer][proj]![which][idx];
    expect(Math.abs(fd - an)).toBeLessThan(2e-2 * Math.max(1, Math.abs(an)));
  }
});

it('recomputing layers in the backward pass gives bit-identical gradients with less memory', async () => {
  const weights = makeTinyLlama({ ...BASE, numLayers: 4 });
  const lora = randomLora(weights, 4, 5);
  const c = makeCase(BASE.vocabSize, 6);
  const dropout = { rate: 0.1, seed: 3 };
  const kept = await engineGrads(weights, lora, c, dropout, false);
  const recomputed = await engineGrads(weights, lora, c, dropout, true);
  expect(flatten(recomputed.grads)).toEqual(flatten(kept.grads));
  expect(recomputed.loss).toBe(kept.loss);
  expect(recomputed.peak).toBeLessThan(kept.peak);
});
