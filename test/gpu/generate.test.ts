/**
 * Generation (src/engine/generate.ts: prefill into a KV cache, then one decode step per token,
 * logits of one row only): greedy output equals the argmax of the tfjs reference's logits
 * recomputed over the whole sequence at every step (f32 and q8 weights, GQA, llama3 RoPE, LoRA),
 * and each step's logits match the reference's last row (rtol 1e-4, atol 1e-4); sampling is
 * reproducible for a seed with softmax's frequencies; stop ids, the token limit and the context
 * length end it. The decode step (kernels/matvec.wgsl for every projection and the lm-head, LoRA on
 * all seven projections fused, recorded once and replayed) gives each chosen token the log-prob
 * the T > 1 path (tiled matmul, fused lm-head) gives it over the whole sequence, within rtol 1e-4,
 * atol 1e-4 (f32, q8, q4; f32 sums in another order), and costs one upload, one submit and one
 * readback per token with no bind group created after the first.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate, sampleToken } from '../../src/engine/generate.ts';
import { GpuLlama } from '../../src/engine/llama.ts';
import { GpuProfiler } from '../../src/engine/profile.ts';
import { dequantize, quantize } from '../../src/model/quant.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import type { LlamaWeights } from '../../src/model/weights.ts';
import { Rng } from '../../src/util/rng.ts';
import { referenceForward } from '../reference/llama-tf.ts';
import { maxViolation, testGpu, type TestGpu } from '../helpers/gpu.ts';
import { randomLora } from '../helpers/lora.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

const weights = makeTinyLlama({
  seed: 31,
  vocabSize: 300,
  hiddenSize: 64,
  intermediateSize: 96,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  tie: false,
  ropeScaling: true,
});
const PROMPT = [5, 17, 250, 3, 99, 42, 7];

/** The weights as the q8 model computes with them (each matrix dequantized). */
function dequantized(w: LlamaWeights): LlamaWeights {
  const c = w.config;
  const d = (m: Float32Array, rows: number, cols: number) => dequantize(quantize(m, rows, cols, 'q8'));
  const [C, F, HD, KVD] = [c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
  return {
    ...w,
    embed: d(w.embed, c.vocabSize, C),
    lmHead: w.lmHead ? d(w.lmHead, c.vocabSize, C) : null,
    layers: w.layers.map((l) => ({
      ...l,
      q: d(l.q, HD, C),
      k: d(l.k, KVD, C),
      v: d(l.v, KVD, C),
      o: d(l.o, C, HD),
      gate: d(l.gate, F, C),
      up: d(l.up, F, C),
      down: d(l.down, C, F),
    })),
  };
}

describe('greedy generation equals the reference argmax, step by step', () => {
  for (const quant of ['f32', 'q8'] as const) {
    it(quant, async () => {
      const lora = randomLora(weights, 4, 77, 0.05);
      const model = GpuLlama.create(g.ops, weights, quant, lora);
      const ref = quant === 'f32' ? weights : dequantized(weights);
      const got = await generate(model, PROMPT, { maxNewTokens: 10, temperature: 0, seed: 0, stopIds: [] });
      model.destroy();
      expect(got.reason).toBe('length');
      expect(got.ids).toHaveLength(10);
      const seq = [...PROMPT];
      for (const id of got.ids) {
        const { logits } = referenceForward(ref, seq, { lora });
        const V = weights.config.vocabSize;
        const last = logits.subarray((seq.length - 1) * V, seq.length * V);
        let best = 0;
        for (let i = 1; i < V; i++) if (last[i] > last[best]) best = i;
        expect(id).toBe(best);
        seq.push(id);
      }
    });
  }
});

it("each step's logits match the reference's last row over the whole sequence (the KV cache holds every earlier position)", async () => {
  const lora = randomLora(weights, 4, 78, 0.05);
  const model = GpuLlama.create(g.ops, weights, 'f32', lora);
  const steps: Float32Array[] = [];
  const out = await generate(model, PROMPT, {
    maxNewTokens: 6,
    temperature: 0.8,
    seed: 5,
    stopIds: [],
    onLogits: (l) => void steps.push(l.slice()),
  });
  model.destroy();
  const V = weights.config.vocabSize;
  const { logits } = referenceForward(weights, [...PROMPT, ...out.ids], { lora });
  expect(steps).toHaveLength(6);
  steps.forEach((got, i) => {
    const n = PROMPT.length + i;
    expect(maxViolation(got, logits.subarray((n - 1) * V, n * V), 1e-4, 1e-4), `step ${i}`).toBeLessThanOrEqual(1);
  });
});

it('sampling is reproducible for a seed and follows the temperature; stop ids end it', async () => {
  const model = GpuLlama.create(g.ops, weights, 'q8');
  const a = await generate(model, PROMPT, { maxNewTokens: 8, temperature: 1, seed: 11, stopIds: [] });
  const b = await generate(model, PROMPT, { maxNewTokens: 8, temperature: 1, seed: 11, stopIds: [] });
  expect(b.ids).toEqual(a.ids);
  const greedy = await generate(model, PROMPT, { maxNewTokens: 3, temperature: 0, seed: 0, stopIds: [] });
  const stopped = await generate(model, PROMPT, { maxNewTokens: 8, temperature: 0, seed: 0, stopIds: [greedy.ids[1]] });
  model.destroy();
  expect(stopped).toEqual({ ids: greedy.ids.slice(0, greedy.ids.indexOf(greedy.ids[1]) + 1), reason: 'stop' });
  // sampleToken: temperature 0 is argmax; a tiny temperature too; temperature 1 draws with softmax's frequencies.
  const logits = Float32Array.from([0, 3, 1, 2.9]);
  const rng = new Rng(1);
  expect(sampleToken(logits, 0, rng)).toBe(1);
  expect(sampleToken(logits, 1e-3, rng)).toBe(1);
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 4000; i++) counts[sampleToken(logits, 1, rng)]++;
  const z = [0, 3, 1, 2.9].map(Math.exp);
  const sum = z.reduce((x, y) => x + y, 0);
  counts.forEach((c, i) => expect(Math.abs(c / 4000 - z[i] / sum)).toBeLessThan(0.03));
});

it('the context length ends generation', async () => {
  const short = makeTinyLlama({
    seed: 32,
    vocabSize: 64,
    hiddenSize: 32,
    intermediateSize: 32,
    numLayers: 1,
    numHeads: 2,
    numKvHeads: 1,
    tie: true,
  });
  short.config.maxPositionEmbeddings = 10;
  const model = GpuLlama.create(g.ops, short, 'f32');
  const r = await generate(model, [1, 2, 3, 4, 5, 6, 7], { maxNewTokens: 20, temperature: 0, seed: 0, stopIds: [] });
  model.destroy();
  expect(r).toMatchObject({ reason: 'context' });
  expect(r.ids).toHaveLength(4); // the prompt fills positions 0-6, new tokens are fed at 7, 8, 9: the 4th is the last
});

/** log softmax(logits)[id], in float64. */
function logSoftmaxAt(logits: Float32Array, id: number): number {
  const m = logits.reduce((a, b) => Math.max(a, b), -Infinity);
  const sum = logits.reduce((a, z) => a + Math.exp(z - m), 0);
  return logits[id] - m - Math.log(sum);
}

describe('decode steps (one row: matvec, recorded once) give the log-probs of the T > 1 path', () => {
  for (const quant of ['f32', 'q8', 'q4'] as const) {
    it(quant, async () => {
      const lora = randomLora(weights, 4, 79, 0.05);
      const model = GpuLlama.create(g.ops, weights, quant, lora);
      const steps: Float32Array[] = [];
      const got = await generate(model, PROMPT, {
        maxNewTokens: 8,
        temperature: 0,
        seed: 0,
        stopIds: [],
        onLogits: (l) => void steps.push(l.slice()),
      });
      const whole = await model.responseLogProbs(PROMPT, got.ids);
      model.destroy();
      const stepwise = got.ids.map((id, i) => logSoftmaxAt(steps[i], id));
      expect(maxViolation(stepwise, whole, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
    });
  }
});

it('a decode step is one upload, one submit and one readback, with no bind group or pipeline created after the first', async () => {
  const model = GpuLlama.create(g.ops, weights, 'q8', randomLora(weights, 4, 80, 0.05));
  const device = g.ctx.device;
  const made = { bindGroups: 0, pipelines: 0 };
  const createBindGroup = device.createBindGroup;
  const createComputePipelineAsync = device.createComputePipelineAsync;
  device.createBindGroup = (d) => {
    made.bindGroups++;
    return createBindGroup.call(device, d);
  };
  device.createComputePipelineAsync = (d) => {
    made.pipelines++;
    return createComputePipelineAsync.call(device, d);
  };
  const profiler = GpuProfiler.attach(device);
  const madeAt: (typeof made)[] = [];
  try {
    await generate(model, PROMPT, {
      maxNewTokens: 6,
      temperature: 0,
      seed: 0,
      stopIds: [],
      onToken: () => {
        profiler.step();
        madeAt.push({ ...made });
      },
    });
  } finally {
    profiler.detach();
    device.createBindGroup = createBindGroup;
    device.createComputePipelineAsync = createComputePipelineAsync;
    model.destroy();
  }
  // Token 1 came from the prefill; the decode step was recorded before token 2.
  expect(madeAt[0].bindGroups).toBeGreaterThan(0);
  expect(madeAt.at(-1)).toEqual(madeAt[1]);
  const r = await profiler.report(1);
  expect(r.steps).toBe(5);
  // Averages over the 5 decode steps.
  for (const n of [r.uploads, r.submits, r.readbacks]) expect(n).toBeCloseTo(1, 9);
  expect(r.readbackBytes).toBeCloseTo(weights.config.vocabSize * 4, 6);
  // Per layer: 2 norms, 7 adapted projections (u, then the base with the adapter fused: 2 each),
  // 2 RoPE, attention (the cache append fused), SwiGLU; then embedding, final norm and lm-head.
  expect(r.dispatches).toBeCloseTo(weights.config.numLayers * (2 + 7 * 2 + 2 + 1 + 1) + 3, 6);
  expect(r.kernels.find((k) => k.kernel === 'matvec')?.calls).toBeCloseTo(weights.config.numLayers * 14 + 1, 6);
});
