/**
 * Generation (src/engine/generate.ts: prefill into a KV cache, then one decode step per token,
 * logits of one row only): greedy output equals the argmax of the tfjs reference's logits
 * recomputed over the whole sequence at every step (f32 and q8 weights, GQA, llama3 RoPE, LoRA),
 * and each step's logits match the reference's last row (rtol 1e-4, atol 1e-4); sampling is
 * reproducible for a seed with softmax's frequencies; stop ids, the token limit and the context
 * length end it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate, sampleToken } from '../../src/engine/generate.ts';
import { GpuLlama } from '../../src/engine/llama.ts';
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
