/**
 * The training-memory estimate (src/engine/memory.ts) against the buffer manager's measured peak
 * of a real training step, with and without layer recomputation: within 10% (uniform buffers and
 * rounding make up the difference), and never below the measurement by more than that; the same
 * for a packed no-grad scoring pass, and the token limit derived from it keeps a pass within its budget.
 * An NLFT step (its side views scored no-grad in passes sized as the session sizes them, then the
 * weighted base pass, backward and AdamW) with all seven projections adapted: the estimate is an
 * upper bound of its measured peak, part by part, within 10% in all (bench/memory.ts, the same at the Llama-3.2-1B shape).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { keptLogitRows, keptRowStep } from '../../src/engine/lm-head.ts';
import { DEFAULT_TUNING } from '../../src/engine/ops.ts';
import { estimateScoreBytes, estimateTrainBytes, scoreBatchTokens } from '../../src/engine/memory.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import { initLora, type LoraConfig } from '../../src/model/lora.ts';
import { PROJECTIONS } from '../../src/model/weights.ts';
import { type NlftSample, nlftMethod } from '../../src/nlft/method.ts';
import { planMemory, scorePassTokens } from '../../src/session/train.ts';
import { Trainer, DEFAULT_TRAIN, type StepMetrics } from '../../src/train/trainer.ts';
import { Rng } from '../../src/util/rng.ts';
import { testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

// 5000 words, 57 rows: the two-pass lm-head backward; 6000 words, 40 rows: SFT's lm-head keeps the rows' logits (lm-head.ts keptLogitRows).
for (const [recompute, vocab, response] of [
  [false, 5000, 57],
  [true, 5000, 57],
  [false, 6000, 40],
] as const) {
  it(`estimate matches the measured peak of a training step (${recompute ? 'recompute' : 'keep activations'}, vocabulary ${vocab}, ${response} rows)`, async () => {
    expect(keptLogitRows(response, 40 + response - 1, vocab, keptRowStep(DEFAULT_TUNING))).toBe(vocab === 6000 ? response : 0);
    const weights = makeTinyLlama({
      seed: 4,
      vocabSize: vocab,
      hiddenSize: 64,
      intermediateSize: 128,
      numLayers: 4,
      numHeads: 4,
      numKvHeads: 2,
      tie: true,
    });
    const lora = { r: 8, alpha: 16, dropout: 0.1, targets: ['q_proj', 'o_proj', 'gate_proj', 'down_proj'] as const };
    const loraCfg = { ...lora, targets: [...lora.targets] };
    const rng = new Rng(1);
    const sample = {
      id: 'a',
      index: 1,
      promptIds: Array.from({ length: 40 }, () => rng.int(vocab)),
      responseIds: Array.from({ length: response }, () => rng.int(vocab)),
      truncatedBy: 0,
    };
    const before = g.buffers.current;
    const model = GpuLlama.create(g.ops, weights, 'q8', initLora(weights.config, loraCfg, 2));
    const trainer = new Trainer(g, model, [sample], { ...DEFAULT_TRAIN, epochs: 1, batch: 1, recompute }, undefined, 0.1);
    let peak = 0;
    await trainer.run({ onStep: (m) => void (peak = m.peakBytes) });
    const est = estimateTrainBytes(weights.config, 'q8', loraCfg, 40 + response - 1, response, recompute);
    const measured = peak - before;
    expect(est.total / measured).toBeGreaterThan(0.9);
    expect(est.total / measured).toBeLessThan(1.1);
    trainer.destroy();
    model.destroy();
  });
}

it('scoring estimate matches the measured peak of a packed no-grad pass, and its token limit keeps within a budget', async () => {
  const weights = makeTinyLlama({
    seed: 5,
    vocabSize: 5000,
    hiddenSize: 64,
    intermediateSize: 128,
    numLayers: 3,
    numHeads: 4,
    numKvHeads: 2,
    tie: true,
  });
  const loraCfg = { r: 8, alpha: 16, dropout: 0, targets: ['q_proj', 'gate_proj'] as ('q_proj' | 'gate_proj')[] };
  const model = GpuLlama.create(g.ops, weights, 'q8', initLora(weights.config, loraCfg, 3));
  const rng = new Rng(2);
  const seq = (n: number) => {
    const ids = Array.from({ length: n }, () => rng.int(5000));
    return { ids, rows: ids.slice(1).map((_, i) => i), targets: ids.slice(1) };
  };
  const measure = async (lengths: number[]) => {
    const before = g.buffers.current;
    g.buffers.resetPeak();
    await model.scoreBatch(lengths.map(seq));
    return g.buffers.peak - before;
  };
  const lengths = [60, 33, 91, 12];
  const T = lengths.reduce((a, n) => a + n, 0);
  const est = estimateScoreBytes(weights.config, loraCfg, T, T - lengths.length);
  const measured = await measure(lengths);
  expect(est / measured).toBeGreaterThan(0.9);
  expect(est / measured).toBeLessThan(1.1);
  // A 200 KiB activation budget: the limit's worth of tokens (all scored) fits in it.
  const limit = scoreBatchTokens(weights.config, loraCfg, 200 * 1024, g.ctx.device.limits.maxStorageBufferBindingSize);
  expect(limit).toBeGreaterThan(10);
  expect(await measure([limit + 1])).toBeLessThanOrEqual(200 * 1024 * 1.1);
  model.destroy();
});

for (const recompute of [false, true]) {
  it(`estimate bounds the measured peak of an NLFT step, all seven projections adapted (${recompute ? 'recompute' : 'keep activations'})`, async () => {
    const weights = makeTinyLlama({
      seed: 6,
      vocabSize: 3000,
      hiddenSize: 64,
      intermediateSize: 160,
      numLayers: 3,
      numHeads: 4,
      numKvHeads: 2,
      tie: true,
      ropeScaling: true,
    });
    const c = weights.config;
    const lora: LoraConfig = { r: 8, alpha: 8, dropout: 0.05, targets: [...PROJECTIONS] };
    const rng = new Rng(7);
    const ids = (n: number) => Array.from({ length: n }, () => rng.int(c.vocabSize));
    // A negative record: base prompt 30, standard and judge prompts longer (40, 36), response 50.
    const sample: NlftSample = {
      id: 'neg',
      index: 1,
      polarity: 'negative',
      promptIds: ids(30),
      standardIds: ids(40),
      judgeIds: ids(36),
      responseIds: ids(50),
      truncatedBy: 0,
      anchor: null,
    };
    const plan = planMemory(c, 'q4', lora, [sample], recompute, null);
    const before = g.buffers.current;
    const model = GpuLlama.create(g.ops, weights, 'q4');
    const modelBytes = g.buffers.current - before;
    model.setLora(initLora(c, lora, 1));
    const viewTokens = scorePassTokens(c, lora, null, plan.estimate.activations, g.ctx.device.limits.maxStorageBufferBindingSize);
    const entries: number[] = [];
    const method = nlftMethod(model, { tokenText: String, maxBatchTokens: viewTokens, onEntry: (e) => void entries.push(e.tokens.length) });
    const trainer = new Trainer(
      g,
      model,
      [sample],
      { ...DEFAULT_TRAIN, epochs: 1, batch: 1, recompute },
      method,
      lora.dropout,
      plan.passTokens,
    );
    const fixed = g.buffers.current - before;
    let step: StepMetrics | null = null;
    await trainer.run({ onStep: (m) => void (step = m) });
    expect(entries).toEqual([50]); // the record was weighted from its three views
    const measured = (step as StepMetrics | null)!.peakBytes - before;
    const est = estimateTrainBytes(c, 'q4', lora, 79, 50, recompute);
    expect(plan.estimate).toEqual(est);
    expect(est.model).toBe(modelBytes);
    expect(est.model + est.lora).toBeGreaterThanOrEqual(fixed);
    expect(est.activations).toBeGreaterThanOrEqual(measured - fixed);
    expect(est.total / measured).toBeGreaterThanOrEqual(1);
    expect(est.total / measured).toBeLessThan(1.1);
    trainer.destroy();
    model.destroy();
  });
}
