/**
 * NLFT on the engine, end to end on a seeded tiny model and synthetic records (random token ids for
 * the three views' prompts and the shared response; views.test.ts covers building them from text):
 * - the loss from saliency.ts + the fused kernel equals a direct CPU computation of the spec's
 *   formula from the tfjs reference's pb, pc, pj and hidden states (1e-4 relative + 1e-6), with the same
 *   saliency classes; its LoRA gradient matches tfjs autodiff of that formula (1e-3 relative);
 * - NLFT training through the trainer keeps a saliency record per visit and is deterministic, and
 *   packing the no-grad views of several records into one pass changes no result.
 * Saliency thresholds are loosened (tauC, rho, pjMin) so that a random model has tokens in every class.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { lossCoefficients, lossValue, TrainPass } from '../../src/engine/train-pass.ts';
import { initLora } from '../../src/model/lora.ts';
import { nlftMethod, recordSaliency, scoreRecords, scoreSideViews, type NlftSample, type SaliencyEntry } from '../../src/nlft/method.ts';
import { saliency, type SaliencyOptions } from '../../src/nlft/saliency.ts';
import { viewSequence } from '../../src/nlft/views.ts';
import { DEFAULT_TRAIN, Trainer } from '../../src/train/trainer.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';
import { nlftTestModel, referenceResponseLogp, syntheticNlftSamples } from '../helpers/nlft.ts';
import { gradientsRegistered, referenceForward, type referenceLogProbs } from '../reference/llama-tf.ts';
import { referenceLoraGrads } from '../reference/lora-grads.ts';
import { maxViolation, testGpu, type TestGpu } from '../helpers/gpu.ts';
import { flatten, randomLora } from '../helpers/lora.ts';

const OPTS: Partial<SaliencyOptions> = { tauC: 0.004, rho: 1.05, pjMin: 0, delta: 0.6 };
const weights = nlftTestModel(21);

let g: TestGpu;
let samples: NlftSample[];
beforeAll(async () => {
  g = await testGpu();
  samples = syntheticNlftSamples(12);
});
afterAll(() => g?.destroy());

const refLogp = (prompt: number[], response: number[], lora: Parameters<typeof referenceLogProbs>[3]) =>
  referenceResponseLogp(weights, prompt, response, lora);

describe.skipIf(skipOutsideCi(!gradientsRegistered))('NLFT loss and gradient against the reference', () => {
  requirePrerequisite(gradientsRegistered, 'the tfjs gradient registrations');
  for (const which of [2, 3, 0]) {
    it(`record ${which + 1} (${which < 2 ? 'positive' : 'negative'})`, async () => {
      const s = samples[which];
      const lora = randomLora(weights, 4, 30 + which, 0.05);
      // Reference: pb, pc, pj, hb from tfjs; classes from saliency.ts; the loss by the spec's formula, written out here.
      const ref = {
        logpb: refLogp(s.promptIds, s.responseIds, { lora }),
        logpc: refLogp(s.standardIds, s.responseIds, { lora }),
        logpj: s.judgeIds ? refLogp(s.judgeIds, s.responseIds, { lora }) : undefined,
      };
      const seq = viewSequence(s.promptIds, s.responseIds);
      const C = weights.config.hiddenSize;
      const hiddenAll = referenceForward(weights, seq.ids, { lora }).hidden;
      const hb = new Float32Array(seq.rows.length * C);
      seq.rows.forEach((r, i) => hb.set(hiddenAll.subarray(r * C, (r + 1) * C), i * C));
      const rr = saliency({ polarity: s.polarity, ...ref, hb, hiddenSize: C }, OPTS);
      const N = s.responseIds.length;
      const lambda = 10;
      let direct = 0;
      for (let t = 0; t < N; t++) {
        const pb = Math.exp(ref.logpb[t]);
        if (s.polarity === 'positive') direct += (1 + rr.coefficients[t]) * -ref.logpb[t];
        else direct += rr.coefficients[t] * (rr.classes[t] === 'unlikely' ? -Math.log1p(-pb) : -ref.logpb[t]);
      }
      direct *= lambda / N;
      expect(new Set(rr.classes).size).toBeGreaterThan(1); // several classes are exercised

      // Engine: the same record through TrainPass + scoreSideViews + recordSaliency + the fused kernel.
      const model = GpuLlama.create(g.ops, weights, 'f32', lora);
      const pass = await TrainPass.forward(model, seq.ids, seq.rows, seq.targets, { rate: 0, seed: 0 });
      const [side] = await scoreSideViews(model, [s]);
      const r = recordSaliency(s, { logp: pass.scores.logp, log1mq: pass.scores.log1mq, hidden: await pass.hiddenRows() }, side, C, OPTS);
      expect(r.classes).toEqual(rr.classes);
      const loss = lossValue(r.kinds, r.weights, pass.scores);
      expect(Math.abs(loss - direct)).toBeLessThanOrEqual(1e-4 * Math.abs(direct) + 1e-6); // + f32 log-prob noise for near-zero losses
      await pass.backward(lossCoefficients(r.kinds, r.weights, pass.scores));
      const got = flatten(await model.lora!.readGrads());
      model.destroy();
      const want = flatten(referenceLoraGrads(weights, lora, { ...seq, kinds: rr.kinds, weights: rr.weights }).grads);
      const scale = Math.max(...want.map(Math.abs));
      expect(maxViolation(got, want, 1e-3, 1e-4 * scale)).toBeLessThanOrEqual(1);
    });
  }
});

it('NLFT training through the trainer keeps a saliency record per visit and is deterministic', async () => {
  const run = async (maxBatchTokens?: number) => {
    const model = GpuLlama.create(
      g.ops,
      weights,
      'q8',
      initLora(weights.config, { r: 4, alpha: 8, dropout: 0.05, targets: ['gate_proj', 'up_proj', 'down_proj'] }, 7),
    );
    const entries: SaliencyEntry[] = [];
    let step = 1;
    const method = nlftMethod(model, {
      saliency: OPTS,
      tokenText: (id) => `<${id}>`,
      onEntry: (e) => void entries.push(e),
      stepOf: () => step,
      maxBatchTokens,
    });
    const trainer = new Trainer(g, model, samples.slice(0, 4), { ...DEFAULT_TRAIN, epochs: 1, batch: 2, lr: 1e-3, seed: 7 }, method);
    const losses: number[] = [];
    await trainer.run({
      onStep: (m) => {
        losses.push(m.loss);
        step = m.step + 1;
      },
    });
    const params = await g.buffers.readF32(model.lora!.params, model.lora!.n);
    trainer.destroy();
    model.destroy();
    return { entries, losses, params };
  };
  const a = await run();
  expect(a.losses).toHaveLength(2);
  expect(a.entries).toHaveLength(4);
  expect(a.entries.map((e) => e.step)).toEqual([1, 1, 2, 2]);
  for (const e of a.entries) {
    const s = samples.find((x) => x.id === e.id)!;
    expect(e.tokens.map((t) => t.id)).toEqual(s.responseIds);
    expect(e.tokens.map((t) => t.text)).toEqual(s.responseIds.map((id) => `<${id}>`));
    for (const t of e.tokens) {
      expect(t.pb).toBeGreaterThan(0);
      expect(t.pc).toBeGreaterThan(0);
      expect(t.pj === null).toBe(e.polarity === 'positive');
      expect(['correct', 'cluster', 'unlikely', 'plain']).toContain(t.class);
      expect(t.kind === 'unlikelihood').toBe(t.class === 'unlikely');
    }
  }
  const b = await run();
  expect(b.params).toEqual(a.params);
  expect(b.losses).toEqual(a.losses);
  // The step's side views scored one sequence per pass instead of packed: the same run, bit for bit.
  const alone = await run(1);
  expect(alone.params).toEqual(a.params);
  expect(alone.entries).toEqual(a.entries);
});

it('scoring records packed into shared passes gives each record what a pass of its own gives', async () => {
  const model = GpuLlama.create(g.ops, weights, 'q8', randomLora(weights, 4, 40, 0.05));
  const done: number[] = [];
  const passes: number[] = [];
  const packed = await scoreRecords(model, samples, { maxTokens: 120, onProgress: (n) => done.push(n) });
  const alone = await scoreRecords(model, samples, { maxTokens: 1, onProgress: (n) => passes.push(n) });
  model.destroy();
  expect(packed).toEqual(alone);
  expect(passes).toHaveLength(10); // 4 base + 4 standard + 2 judge views, one pass each
  expect(done.length).toBeLessThanOrEqual(4); // 22-40 tokens a view, up to 120 per pass
  expect(done.at(-1)).toBe(samples.length);
  expect(done).toEqual([...done].sort((x, y) => x - y));
});
