/**
 * Round trips of a packed SFT step (docs/architecture.md §3c): the forward's submit with its
 * scores' readback, then one submit for the backward, the AdamW step and the copy of the gradient
 * norm; one upload for the pass's inputs, one for the loss coefficients, one for the AdamW
 * uniform; and, from the third step of a run whose steps have the same shape, no bind group
 * created (from the second pass of a shape on, the buffer manager recycles the pass's buffers and
 * the bind groups over them are kept). Recycled buffers keep what their last pass left in them, which no pass may read: a
 * run whose recycled buffers are destroyed after every step (so every step gets new, zeroed ones)
 * ends with the same losses, gradient norms and adapters, bit for bit, with activations kept per
 * layer and with each layer recomputed in the backward (checkpointed).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { TrainSample } from '../../src/data/prompt.ts';
import { GpuLlama } from '../../src/engine/llama.ts';
import { GpuProfiler, type ProfileReport } from '../../src/engine/profile.ts';
import { initLora, type LoraConfig } from '../../src/model/lora.ts';
import { DEFAULT_TRAIN, SFT, type StepMetrics, Trainer } from '../../src/train/trainer.ts';
import { Rng } from '../../src/util/rng.ts';
import { type TestGpu, testGpu } from '../helpers/gpu.ts';
import { NLFT_TEST_VOCAB, nlftTestModel } from '../helpers/nlft.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

const weights = nlftTestModel(41);
const LORA: LoraConfig = { r: 4, alpha: 8, dropout: 0.2, targets: ['q_proj', 'v_proj', 'down_proj'] };

/** Four records of one shape (prompt 7, response 9 tokens), so that every step of batch 2 packs the same T and rows. */
function samples(): TrainSample[] {
  const rng = new Rng(5);
  const ids = (k: number) => Array.from({ length: k }, () => rng.int(NLFT_TEST_VOCAB));
  return Array.from({ length: 4 }, (_, i) => ({ id: `r${i}`, index: i + 1, promptIds: ids(7), responseIds: ids(9), truncatedBy: 0 }));
}

/** A run of 4 steps; with `flush`, the recycled buffers (and their bind groups) are destroyed after every step. */
async function run(
  flush: boolean,
  recompute: boolean,
): Promise<{ params: Float32Array; metrics: StepMetrics[]; perStep: ProfileReport[] }> {
  const model = GpuLlama.create(g.ops, weights, 'f32', initLora(weights.config, LORA, 7));
  const trainer = new Trainer(
    g,
    model,
    samples(),
    { ...DEFAULT_TRAIN, epochs: 2, batch: 2, lr: 1e-2, seed: 2, recompute },
    SFT,
    LORA.dropout,
  );
  const metrics: StepMetrics[] = [];
  const perStep: ProfileReport[] = [];
  const profiler = GpuProfiler.attach(g.ctx.device, { timestamps: false });
  try {
    const end = await trainer.run({
      onStep: async (m) => {
        metrics.push(m);
        profiler.step();
        perStep.push(await profiler.report(m.step - 1)); // this step alone
        if (flush) g.buffers.flushPool();
      },
    });
    expect(end).toEqual({ status: 'done', steps: 4 });
  } finally {
    profiler.detach();
  }
  const params = await g.buffers.readF32(model.lora!.params, model.lora!.n);
  trainer.destroy();
  model.destroy();
  return { params, metrics, perStep };
}

it.each([false, true])(
  'a packed SFT step (recompute %s): two submits, three uploads, two readbacks, no bind group created after the second step',
  async (recompute) => {
    const kept = await run(false, recompute);
    for (const s of kept.perStep.slice(0, 2)) expect(s.bindGroups).toBeGreaterThan(0);
    for (const s of kept.perStep.slice(1)) {
      expect([s.submits, s.uploads, s.readbacks]).toEqual([2, 3, 2]);
      expect(s.dispatches).toBe(kept.perStep[0].dispatches);
    }
    for (const s of kept.perStep.slice(2)) expect(s.bindGroups).toBe(0);
    // Every step's losses and gradient norm as a run over new buffers every step, and its adapters bit for bit.
    const fresh = await run(true, recompute);
    for (const s of fresh.perStep.slice(1)) expect(s.bindGroups).toBeGreaterThan(0);
    expect(fresh.metrics.map((m) => [m.loss, m.gradNorm])).toEqual(kept.metrics.map((m) => [m.loss, m.gradNorm]));
    expect(Math.max(...kept.params.map(Math.abs))).toBeGreaterThan(0);
    expect(fresh.params).toEqual(kept.params);
  },
);
