/**
 * The trainer with packing (TrainConfig.packing): a step's records in one training pass (their
 * anchors in one more), or in several under a token cap, against one pass per record, over several
 * optimizer steps with LoRA dropout on, for SFT and NLFT (static saliency with anchored negatives,
 * and dynamic saliency).
 *
 * Each record keeps its own dropout masks and loss normalisation when packed, so the two differ
 * only in the order of the gradient sums (test/gpu/packed-train.test.ts bounds one pass's gradients
 * by 1e-4 relative + 1e-5 × max|g|). AdamW then moves each parameter by at most about lr a step
 * whatever the gradient's size, so the bound checked on the adapters after N steps is
 * |packed − separate| ≤ 1e-3 · lr · N (a differing dropout mask or loss weight moves them by
 * about lr · N); the per-step losses and gradient norms agree within 1e-4 relative, the saliency
 * entries report the same visits in the same order, and the packed run records fewer dispatches
 * and submits.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { GpuProfiler } from '../../src/engine/profile.ts';
import { initLora } from '../../src/model/lora.ts';
import type { TrainSample } from '../../src/data/prompt.ts';
import { classifyScores, type NlftSample, nlftMethod, type SaliencyEntry, scoreRecords, staticNlftMethod } from '../../src/nlft/method.ts';
import type { SaliencyOptions } from '../../src/nlft/saliency.ts';
import { DEFAULT_TRAIN, type LossMethod, SFT, type StepMetrics, Trainer, type TrainConfig } from '../../src/train/trainer.ts';
import { Rng } from '../../src/util/rng.ts';
import { type TestGpu, testGpu } from '../helpers/gpu.ts';
import { NLFT_TEST_VOCAB, nlftTestModel, syntheticNlftSamples } from '../helpers/nlft.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

const weights = nlftTestModel(31);
const LORA = { r: 4, alpha: 8, dropout: 0.2, targets: ['q_proj', 'v_proj', 'gate_proj', 'up_proj', 'down_proj'] as const };
const CONFIG: TrainConfig = { ...DEFAULT_TRAIN, epochs: 2, batch: 3, lr: 1e-2, seed: 3 };
/** Thresholds loosened so that a random model has tokens in every class (as in nlft-static.test.ts). */
const OPTS: Partial<SaliencyOptions> = { tauC: 0.004, rho: 1.05, pjMin: 0, delta: 0.6, negatives: 'anchor' };
const text = (id: number) => `<${id}>`;

/** SFT samples of different lengths. */
function sftSamples(n: number): TrainSample[] {
  const rng = new Rng(77);
  const ids = (k: number) => Array.from({ length: k }, () => rng.int(NLFT_TEST_VOCAB));
  return Array.from({ length: n }, (_, i) => ({
    id: `s${i}`,
    index: i + 1,
    promptIds: ids(5 + rng.int(9)),
    responseIds: ids(6 + rng.int(12)),
    truncatedBy: 0,
  }));
}

type Arm = { packing: boolean; passTokens?: number };

/** A run of the trainer: its final adapters, step metrics, saliency entries, and dispatches and submits per step (mean). */
async function run(samples: readonly TrainSample[], arm: Arm, method: (model: GpuLlama, entries: SaliencyEntry[]) => Promise<LossMethod>) {
  const model = GpuLlama.create(g.ops, weights, 'f32', initLora(weights.config, { ...LORA, targets: [...LORA.targets] }, 5));
  const entries: SaliencyEntry[] = [];
  const loss = await method(model, entries);
  const trainer = new Trainer(g, model, samples, { ...CONFIG, packing: arm.packing }, loss, LORA.dropout, arm.passTokens);
  const metrics: StepMetrics[] = [];
  const profiler = GpuProfiler.attach(g.ctx.device, { timestamps: false });
  let counts: { dispatches: number; submits: number };
  try {
    const end = await trainer.run({
      onStep: (m) => {
        metrics.push(m);
        profiler.step();
      },
    });
    expect(end).toEqual({ status: 'done', steps: trainer.totalSteps });
    const r = await profiler.report();
    counts = { dispatches: r.dispatches, submits: r.submits };
  } finally {
    profiler.detach();
  }
  const params = await g.buffers.readF32(model.lora!.params, model.lora!.n);
  trainer.destroy();
  model.destroy();
  return { params, metrics, entries, counts };
}

/** The packed arms against one pass per record, within the bounds the header states. */
async function comparePacking(samples: readonly TrainSample[], method: (model: GpuLlama, entries: SaliencyEntry[]) => Promise<LossMethod>) {
  const separate = await run(samples, { packing: false }, method);
  const steps = separate.metrics.length;
  expect(steps).toBeGreaterThanOrEqual(3);
  const maxStep = Math.max(...separate.params.map(Math.abs));
  expect(maxStep).toBeGreaterThan(0);
  // All of a step's records in one pass; then a cap of 60 tokens (one or two records a pass).
  let whole: Awaited<ReturnType<typeof run>> | null = null;
  for (const arm of [{ packing: true }, { packing: true, passTokens: 60 }]) {
    const packed = await run(samples, arm, method);
    let worst = 0;
    packed.params.forEach((p, i) => (worst = Math.max(worst, Math.abs(p - separate.params[i]))));
    expect(worst).toBeLessThanOrEqual(1e-3 * CONFIG.lr * steps);
    expect(packed.metrics.map((m) => [m.step, m.tokens, m.samples])).toEqual(separate.metrics.map((m) => [m.step, m.tokens, m.samples]));
    packed.metrics.forEach((m, i) => {
      expect(Math.abs(m.loss - separate.metrics[i].loss)).toBeLessThanOrEqual(1e-4 * separate.metrics[i].loss);
      expect(Math.abs(m.gradNorm - separate.metrics[i].gradNorm)).toBeLessThanOrEqual(1e-4 * separate.metrics[i].gradNorm);
    });
    expect(packed.entries.map((e) => [e.id, e.step, e.anchor !== undefined])).toEqual(
      separate.entries.map((e) => [e.id, e.step, e.anchor !== undefined]),
    );
    const peak = (r: typeof packed) => Math.max(...r.metrics.map((m) => m.peakBytes));
    if (!whole) {
      // Batch 3: about a third of the training passes' dispatches (NLFT's no-grad views are packed either way), in
      // fewer submits; all of a step's activations held at once.
      expect(packed.counts.dispatches).toBeLessThan(0.6 * separate.counts.dispatches);
      expect(packed.counts.submits).toBeLessThan(separate.counts.submits);
      expect(peak(packed)).toBeGreaterThan(peak(separate));
      whole = packed;
    } else expect(peak(packed)).toBeLessThan(peak(whole)); // the cap splits a step into smaller passes
  }
}

it('SFT: packed steps train the adapters one pass per record does (dropout on), with fewer dispatches and submits', async () => {
  await comparePacking(sftSamples(7), async () => SFT);
});

describe('NLFT', () => {
  let samples: NlftSample[];
  beforeAll(() => {
    samples = [...syntheticNlftSamples(13), ...syntheticNlftSamples(14).map((s) => ({ ...s, id: `${s.id}b`, index: s.index + 4 }))];
  });

  it('static saliency with anchored negatives: packed as one pass per record, the anchors packed too', async () => {
    await comparePacking(samples, async (model, entries) => {
      const cached = await scoreRecords(model, samples, { anchors: true });
      const { results } = classifyScores(samples, cached, OPTS, text);
      expect(results.some((r) => r.anchor)).toBe(true);
      const fixed = new Map(samples.map((s, i) => [s as TrainSample, { scores: cached.records[i], result: results[i] }]));
      return staticNlftMethod(fixed, { tokenText: text, onEntry: (e) => void entries.push(e) });
    });
  });

  it('dynamic saliency: the base views packed, each record weighted from its own scores and hidden states', async () => {
    await comparePacking(samples, async (model, entries) =>
      nlftMethod(model, { saliency: OPTS, tokenText: text, onEntry: (e) => void entries.push(e) }),
    );
  });
});
