/**
 * NLFT on the engine, end to end on a seeded tiny model and synthetic records (random token ids for
 * the three views' prompts and the shared response; views.test.ts covers building them from text):
 * - the loss from saliency.ts + the fused kernel equals a direct CPU computation of the spec's
 *   formula from the tfjs reference's pb, pc, pj and hidden states (1e-4 relative + 1e-6), with the same
 *   saliency classes; its LoRA gradient matches tfjs autodiff of that formula (1e-3 relative);
 * - NLFT training through the trainer keeps a saliency record per visit and is deterministic, and
 *   packing the no-grad views of several records into one pass changes no result.
 * - anchored negatives (`negatives: 'anchor'`): the record's loss (its response's unlikelihood terms plus
 *   its anchor's likelihood terms, two passes of the trainer) and LoRA gradient against the reference
 *   (the same tolerances), with and without unlikely tokens; scoring reports the anchor as training does.
 * Saliency thresholds are loosened (tauC, rho, pjMin) so that a random model has tokens in every class.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { lossCoefficients, lossValue, TrainPass } from '../../src/engine/train-pass.ts';
import { initLora, type LoraSet } from '../../src/model/lora.ts';
import {
  classifyScores,
  nlftMethod,
  recordSaliency,
  saliencySummary,
  scoreRecords,
  scoreSideViews,
  staticNlftMethod,
  type NlftSample,
  type SaliencyEntry,
} from '../../src/nlft/method.ts';
import { saliency, type SaliencyOptions } from '../../src/nlft/saliency.ts';
import { viewSequence } from '../../src/nlft/views.ts';
import { sequenceOf } from '../../src/data/prompt.ts';
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

/** The reference's pb, pc, pj and hb of a record (tfjs), as saliency() takes them. */
function referenceScores(s: NlftSample, lora: LoraSet) {
  const seq = viewSequence(s.promptIds, s.responseIds);
  const C = weights.config.hiddenSize;
  const hiddenAll = referenceForward(weights, seq.ids, { lora }).hidden;
  const hb = new Float32Array(seq.rows.length * C);
  seq.rows.forEach((r, i) => hb.set(hiddenAll.subarray(r * C, (r + 1) * C), i * C));
  return {
    logpb: refLogp(s.promptIds, s.responseIds, { lora }),
    logpc: refLogp(s.standardIds, s.responseIds, { lora }),
    logpj: s.judgeIds ? refLogp(s.judgeIds, s.responseIds, { lora }) : undefined,
    hb,
  };
}

describe.skipIf(skipOutsideCi(!gradientsRegistered))('anchored negatives: loss and gradient against the reference', () => {
  requirePrerequisite(gradientsRegistered, 'the tfjs gradient registrations');
  const cases: Array<[string, Partial<SaliencyOptions>]> = [
    ['with unlikely tokens', { ...OPTS, negatives: 'anchor', anchorWeight: 0.5 }],
    ['without an unlikely token (rho 1e6): the anchor alone', { ...OPTS, rho: 1e6, negatives: 'anchor' }],
  ];
  for (const [name, opts] of cases) {
    it(name, async () => {
      const s = samples[3];
      const anchor = s.anchor!;
      const lora = randomLora(weights, 4, 50, 0.05);
      // Reference: the response's terms from saliency() on the tfjs scores, the anchor's written out here.
      const ref = referenceScores(s, lora);
      const C = weights.config.hiddenSize;
      const rr = saliency({ polarity: 'negative', ...ref, hiddenSize: C, anchorTokens: anchor.responseIds.length }, opts);
      const N = s.responseIds.length;
      const NA = anchor.responseIds.length;
      const lambda = 10;
      let response = 0;
      for (let t = 0; t < N; t++) if (rr.classes[t] === 'unlikely') response += rr.coefficients[t] * -Math.log1p(-Math.exp(ref.logpb[t]));
      response *= lambda / N;
      expect(rr.kinds.filter((k, t) => k === 'likelihood' && rr.weights[t] !== 0)).toEqual([]); // no likelihood term on the response
      const logpa = refLogp(anchor.promptIds, anchor.responseIds, { lora });
      const anchorLoss = ((lambda * (opts.anchorWeight ?? 1)) / NA) * logpa.reduce((a, v) => a - v, 0);
      const direct = response + anchorLoss;
      expect(anchorLoss).toBeGreaterThan(0);
      if (opts.rho === 1e6) expect(response).toBe(0);
      else expect(response).toBeGreaterThan(0);

      // Engine: the record through the trainer (two passes, gradients into one buffer), as training runs it.
      const model = GpuLlama.create(g.ops, weights, 'f32', lora);
      const entries: SaliencyEntry[] = [];
      const method = nlftMethod(model, { saliency: opts, tokenText: String, onEntry: (e) => void entries.push(e) });
      const trainer = new Trainer(g, model, [s], { ...DEFAULT_TRAIN, epochs: 1, batch: 1 }, method);
      const r = await trainer.accumulate(s, 0, 1);
      if ('nonFinite' in r) throw new Error(r.nonFinite);
      const got = flatten(await model.lora!.readGrads());
      trainer.destroy();
      model.destroy();
      expect(Math.abs(r.loss - direct)).toBeLessThanOrEqual(1e-4 * direct);
      expect(r.tokens).toBe(s.promptIds.length + N - 1 + anchor.promptIds.length + NA - 1);
      expect(entries).toHaveLength(1);
      const e = entries[0];
      expect(e.anchor!.tokens.map((t) => t.id)).toEqual(anchor.responseIds);
      expect(e.anchor!.weight).toBeCloseTo((lambda * (opts.anchorWeight ?? 1)) / NA, 12);
      expect(Math.abs(e.anchor!.loss - anchorLoss)).toBeLessThanOrEqual(1e-4 * anchorLoss);
      expect(e.loss).toBe(r.loss);

      const responseGrads = flatten(
        referenceLoraGrads(weights, lora, { ...viewSequence(s.promptIds, s.responseIds), kinds: rr.kinds, weights: rr.weights }).grads,
      );
      const anchorGrads = flatten(referenceLoraGrads(weights, lora, { ...sequenceOf(anchor), ...rr.anchor! }).grads);
      const want = responseGrads.map((v, i) => v + anchorGrads[i]);
      const scale = Math.max(...want.map(Math.abs));
      expect(maxViolation(got, want, 1e-3, 1e-4 * scale)).toBeLessThanOrEqual(1);
    });
  }
});

it('anchored NLFT: scoring reports each negative’s anchor as training weighs it; the run is deterministic', async () => {
  const opts: Partial<SaliencyOptions> = { ...OPTS, negatives: 'anchor' };
  const lora = initLora(weights.config, { r: 4, alpha: 8, dropout: 0, targets: ['gate_proj', 'up_proj', 'down_proj'] }, 3);
  const model = GpuLlama.create(g.ops, weights, 'f32', lora);
  const scored = classifyScores(samples, await scoreRecords(model, samples, { anchors: true }), opts, String).entries;
  const summary = saliencySummary(scored, 'train', 'anchor');
  expect(summary).toMatchObject({ negatives: 2, anchored: 2, negativesRule: 'anchor' });
  expect(scored.map((e) => e.anchor !== undefined)).toEqual([false, false, true, true]);
  const run = async () => {
    const m = GpuLlama.create(g.ops, weights, 'f32', lora);
    const entries: SaliencyEntry[] = [];
    const method = nlftMethod(m, { saliency: opts, tokenText: String, onEntry: (e) => void entries.push(e) });
    const trainer = new Trainer(g, m, samples, { ...DEFAULT_TRAIN, epochs: 1, batch: 4, lr: 1e-3, seed: 5 }, method);
    const losses: number[] = [];
    await trainer.run({ onStep: (s) => void losses.push(s.loss) });
    const params = await g.buffers.readF32(m.lora!.params, m.lora!.n);
    trainer.destroy();
    m.destroy();
    return { entries, losses, params };
  };
  const a = await run();
  // Static saliency fixes the same terms (anchors included) from the scores before training: the first
  // step trains the same anchors with the same losses, no side view scored.
  const cached = await scoreRecords(model, samples, { anchors: true });
  const fixed = classifyScores(samples, cached, opts, String);
  const staticEntries: SaliencyEntry[] = [];
  const m = GpuLlama.create(g.ops, weights, 'f32', lora);
  const statics = staticNlftMethod(new Map(samples.map((s, i) => [s, { scores: cached.records[i], result: fixed.results[i] }])), {
    tokenText: String,
    onEntry: (e) => void staticEntries.push(e),
  });
  const st = new Trainer(g, m, samples, { ...DEFAULT_TRAIN, epochs: 1, batch: 4, lr: 1e-3, seed: 5 }, statics);
  await st.run();
  st.destroy();
  m.destroy();
  model.destroy();
  expect(staticEntries.filter((x) => x.anchor).map((x) => x.id)).toEqual(a.entries.filter((x) => x.anchor).map((x) => x.id));
  for (const e of staticEntries) {
    const dyn = a.entries.find((x) => x.id === e.id)!;
    expect(Math.abs(e.loss - dyn.loss)).toBeLessThanOrEqual(1e-4 * dyn.loss + 1e-6);
  }
  // One step over the four records, from the same parameters, no dropout: the scored entries' anchors are the trained ones.
  for (const e of a.entries.filter((x) => x.anchor)) {
    const before = scored.find((x) => x.id === e.id)!;
    expect(e.anchor!.tokens.map((t) => t.id)).toEqual(before.anchor!.tokens.map((t) => t.id));
    expect(Math.abs(e.anchor!.loss - before.anchor!.loss)).toBeLessThanOrEqual(1e-4 * before.anchor!.loss);
    expect(Math.abs(e.loss - before.loss)).toBeLessThanOrEqual(1e-4 * before.loss + 1e-6);
  }
  expect(a.entries.filter((x) => x.anchor)).toHaveLength(2);
  const b = await run();
  expect(b.params).toEqual(a.params);
  expect(b.losses).toEqual(a.losses);
});
