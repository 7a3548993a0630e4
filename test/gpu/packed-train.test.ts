/**
 * Packed training passes (TrainPass.forwardPacked): the records of an optimizer step in one
 * forward/backward pass give each record's scores and the sum of the records' LoRA gradients, as
 * one pass per record does, up to the order of the sums (the weight gradients sum over all the
 * packed rows at once): |packed - separate| <= 1e-4 * |separate| + 1e-5 * max|gradient|; scores
 * within 1e-5 relative. The pass records one pass's dispatches (a third of three passes') in fewer
 * submits. Both attention variants (the shared-memory tiles and the barrier-free rows, whose dk/dv
 * stop at each sequence's end).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { DEFAULT_TUNING, Ops, type Tuning } from '../../src/engine/ops.ts';
import { GpuProfiler, type ProfileReport } from '../../src/engine/profile.ts';
import { lossCoefficients, TrainPass, type TermKind, type TrainSequence } from '../../src/engine/train-pass.ts';
import { initLora } from '../../src/model/lora.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import { Rng } from '../../src/util/rng.ts';
import { TINY_SHAPE } from '../fixtures/tiny-llama.ts';
import { maxViolation, testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

const V = 64;
const weights = makeTinyLlama({ ...TINY_SHAPE, numHeads: 4, numKvHeads: 2, vocabSize: V, seed: 8 });
/** Non-zero B factors, so every adapter's A gets a gradient too. */
const lora = (() => {
  const set = initLora(weights.config, { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'down_proj'] }, 9);
  const rng = new Rng(10);
  for (const layer of set) for (const e of Object.values(layer)) e?.B.forEach((_, i, b) => (b[i] = rng.uniform(-0.3, 0.3)));
  return set;
})();

/** Three records of different lengths, each scoring some of its positions. */
const records: TrainSequence[] = [17, 6, 23].map((n, k) => {
  const rng = new Rng(40 + k);
  const ids = Array.from({ length: n }, () => Math.floor(rng.uniform(0, V)));
  const rows = ids.slice(0, -1).flatMap((_, i) => (i % 3 !== 1 ? [i] : []));
  return { ids, rows, targets: rows.map((r) => ids[r + 1]) };
});

/** Likelihood and unlikelihood terms with varied weights for `n` rows. */
function terms(n: number, salt: number): { kinds: TermKind[]; weights: Float32Array } {
  return {
    kinds: Array.from({ length: n }, (_, i) => ((i + salt) % 4 === 0 ? 'unlikelihood' : 'likelihood')),
    weights: Float32Array.from({ length: n }, (_, i) => 0.05 + 0.01 * ((i * 7 + salt) % 5)),
  };
}

/** Gradients, scores (log q per row, in record order) and the profile of a step done one way. */
async function step(
  attention: Tuning['attention'],
  packed: boolean,
): Promise<{ grads: Float32Array; logp: number[]; profile: ProfileReport }> {
  const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, attention });
  const model = GpuLlama.create(ops, weights, 'f32', lora);
  const profiler = GpuProfiler.attach(g.ctx.device, { timestamps: false });
  const logp: number[] = [];
  try {
    const dropout = { rate: 0, seed: 0 };
    if (packed) {
      const pass = await TrainPass.forwardPacked(model, records, dropout);
      const perRecord = records.map((q, k) => terms(q.rows.length, k));
      const coef = lossCoefficients(
        perRecord.flatMap((t) => t.kinds),
        Float32Array.from(perRecord.flatMap((t) => [...t.weights])),
        pass.scores,
      );
      logp.push(...pass.scores.logp);
      await pass.backward(coef);
    } else {
      for (const [k, q] of records.entries()) {
        const pass = await TrainPass.forward(model, q.ids, q.rows, q.targets, dropout);
        const t = terms(q.rows.length, k);
        logp.push(...pass.scores.logp);
        await pass.backward(lossCoefficients(t.kinds, t.weights, pass.scores));
      }
    }
    profiler.step();
    const grads = await g.buffers.readF32(model.lora!.enableGradients());
    return { grads, logp, profile: await profiler.report() };
  } finally {
    profiler.detach();
    model.destroy();
  }
}

describe.each([DEFAULT_TUNING.attention, { variant: 'rows', WG: 4, RT: 4 } as const])('packed training pass, attention %o', (attention) => {
  it('equals one pass per record: scores, summed gradients; a third of the dispatches', async () => {
    const separate = await step(attention, false);
    const packed = await step(attention, true);
    expect(maxViolation(packed.logp, separate.logp, 1e-5, 1e-6)).toBeLessThanOrEqual(1);
    const scale = separate.grads.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    expect(scale).toBeGreaterThan(0);
    expect(maxViolation(packed.grads, separate.grads, 1e-4, 1e-5 * scale)).toBeLessThanOrEqual(1);
    expect(packed.profile.dispatches * 3).toBe(separate.profile.dispatches);
    expect(packed.profile.submits).toBeLessThan(separate.profile.submits);
  });
});
