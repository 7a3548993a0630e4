/**
 * Cached scores and static saliency on the engine (seeded tiny model, synthetic records as in
 * nlft.test.ts, thresholds loosened so that a random model has tokens in every class):
 * - the scores cached once (through the dump's base64) re-classify, under several option sets, to
 *   exactly the entries a fresh scoring with those options gives (deep-equal, bit for bit);
 * - static saliency: with classes and coefficients fixed from one adapter state, a training pass of
 *   another state gives the spec's loss for those fixed coefficients from the tfjs reference's pb
 *   (1e-4 relative) and its LoRA gradient (tfjs autodiff, 1e-3 relative); the visit's entry reports
 *   the visit's pb with the cached classes, pc and pj;
 * - a static run scores no side view and reads no hidden state back while training, and is deterministic.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { lossCoefficients, lossValue, TrainPass } from '../../src/engine/train-pass.ts';
import { initLora } from '../../src/model/lora.ts';
import { classifyScores, type NlftSample, type SaliencyEntry, scoreRecords, staticNlftMethod } from '../../src/nlft/method.ts';
import type { SaliencyOptions } from '../../src/nlft/saliency.ts';
import { readScoreDump, SCORES_FORMAT, storeScores } from '../../src/nlft/scores.ts';
import { viewSequence } from '../../src/nlft/views.ts';
import { DEFAULT_TRAIN, Trainer } from '../../src/train/trainer.ts';
import { maxViolation, type TestGpu, testGpu } from '../helpers/gpu.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';
import { nlftTestModel, referenceResponseLogp, syntheticNlftSamples } from '../helpers/nlft.ts';
import { flatten, randomLora } from '../helpers/lora.ts';
import { gradientsRegistered, type referenceLogProbs } from '../reference/llama-tf.ts';
import { referenceLoraGrads } from '../reference/lora-grads.ts';

const OPTS: Partial<SaliencyOptions> = { tauC: 0.004, rho: 1.05, pjMin: 0, delta: 0.6 };
const weights = nlftTestModel(22);
const text = (id: number) => `<${id}>`;

let g: TestGpu;
let samples: NlftSample[];
beforeAll(async () => {
  g = await testGpu();
  samples = syntheticNlftSamples(13);
});
afterAll(() => g?.destroy());

it('scores cached once re-classify to what a fresh scoring gives, for every option set, bit for bit', async () => {
  const model = GpuLlama.create(g.ops, weights, 'q8', randomLora(weights, 4, 41, 0.05));
  const cached = await scoreRecords(model, samples);
  const dump = {
    scoresFormat: SCORES_FORMAT,
    hiddenSize: cached.hiddenSize,
    records: classifyScores(samples, cached, {}, text).entries.map((e, i) => ({
      ...e,
      responseIds: samples[i].responseIds,
      scores: storeScores(cached.records[i]),
    })),
  };
  const back = readScoreDump(JSON.parse(JSON.stringify(dump)), 'dump.json');
  const sets: Partial<SaliencyOptions>[] = [
    {},
    OPTS,
    { ...OPTS, tauC: 0.01, theta: 0.5 },
    { ...OPTS, rho: 1.3, pjMin: 0.004 },
    { ...OPTS, delta: 0.2, clusterCriterion: 'similarity' },
    { ...OPTS, unlikelyFractionMax: 0.5 },
    { ...OPTS, sftOnNegatives: true },
    { ...OPTS, rho: 1e6, negativesWithoutSaliency: 'skip' },
  ];
  const seen = new Set<string>();
  for (const o of sets) {
    const fresh = classifyScores(samples, await scoreRecords(model, samples), o, text).entries; // a GPU pass each time
    expect(classifyScores(back.records, back.scores, o, back.tokenText).entries).toEqual(fresh);
    seen.add(JSON.stringify(fresh.map((e) => [e.loss, e.tokens.map((t) => [t.class, t.coefficient])])));
  }
  model.destroy();
  expect(seen.size).toBe(sets.length); // each option set weights the records differently
});

const refLogp = (prompt: number[], response: number[], lora: Parameters<typeof referenceLogProbs>[3]) =>
  referenceResponseLogp(weights, prompt, response, lora);

describe.skipIf(skipOutsideCi(!gradientsRegistered))(
  'static saliency: loss and gradient for the fixed coefficients against the reference',
  () => {
    requirePrerequisite(gradientsRegistered, 'the tfjs gradient registrations');
    for (const which of [3, 2, 0]) {
      it(`record ${which + 1} (${which < 2 ? 'positive' : 'negative'})`, async () => {
        const s = samples[which];
        // Saliency fixed from one adapter state (as before training, or by a scorer) ...
        const scorer = GpuLlama.create(g.ops, weights, 'f32', randomLora(weights, 4, 60 + which, 0.05));
        const cached = await scoreRecords(scorer, [s]);
        scorer.destroy();
        const fixed = classifyScores([s], cached, OPTS, text);
        const r = fixed.results[0];
        expect(new Set(r.classes).size).toBeGreaterThan(1);
        // ... trains another (the adapters as training has moved them).
        const lora = randomLora(weights, 4, 70 + which, 0.05);
        const model = GpuLlama.create(g.ops, weights, 'f32', lora);
        const entries: SaliencyEntry[] = [];
        const method = staticNlftMethod(new Map([[s, { scores: cached.records[0], result: r }]]), {
          tokenText: text,
          onEntry: (e) => void entries.push(e),
          stepOf: () => 5,
        });
        const hidden = vi.spyOn(TrainPass.prototype, 'hiddenRows');
        const seq = viewSequence(s.promptIds, s.responseIds);
        const pass = await TrainPass.forward(model, seq.ids, seq.rows, seq.targets, { rate: 0, seed: 0 });
        const t = await method.terms(s, pass);
        t.report?.(null); // the trainer reports a visit once its passes ran
        expect(hidden).not.toHaveBeenCalled();
        hidden.mockRestore();
        expect(t.kinds).toEqual(r.kinds);
        expect(t.weights).toBe(r.weights);
        // The spec's loss for the fixed terms, from the reference's pb of the trained state.
        const logpb = refLogp(s.promptIds, s.responseIds, { lora });
        let direct = 0;
        for (let k = 0; k < logpb.length; k++)
          direct += r.weights[k] * (r.kinds[k] === 'unlikelihood' ? -Math.log1p(-Math.exp(logpb[k])) : -logpb[k]);
        const loss = lossValue(t.kinds, t.weights, pass.scores);
        expect(Math.abs(loss - direct)).toBeLessThanOrEqual(1e-4 * Math.abs(direct) + 1e-6);
        // The visit's entry: the visit's pb and loss, the cached classes, coefficients, pc and pj.
        const [e] = entries;
        expect(e.step).toBe(5);
        expect(e.loss).toBe(loss);
        expect(e.tokens.map((x) => x.pb)).toEqual(Array.from(pass.scores.logp, Math.exp));
        const before = fixed.entries[0];
        expect(e.tokens.map((x) => [x.class, x.coefficient, x.pc, x.pj])).toEqual(
          before.tokens.map((x) => [x.class, x.coefficient, x.pc, x.pj]),
        );
        await pass.backward(lossCoefficients(t.kinds, t.weights, pass.scores));
        const got = flatten(await model.lora!.readGrads());
        model.destroy();
        const want = flatten(referenceLoraGrads(weights, lora, { ...seq, kinds: r.kinds, weights: r.weights }).grads);
        const scale = Math.max(...want.map(Math.abs));
        expect(maxViolation(got, want, 1e-3, 1e-4 * scale)).toBeLessThanOrEqual(1);
      });
    }
  },
);

it('static NLFT training scores no side view and reads no hidden state back, and is deterministic', async () => {
  const run = async () => {
    const model = GpuLlama.create(
      g.ops,
      weights,
      'q8',
      initLora(weights.config, { r: 4, alpha: 8, dropout: 0.05, targets: ['gate_proj', 'up_proj', 'down_proj'] }, 7),
    );
    const cached = await scoreRecords(model, samples);
    const { results } = classifyScores(samples, cached, OPTS, text);
    const entries: SaliencyEntry[] = [];
    const method = staticNlftMethod(new Map(samples.map((s, i) => [s, { scores: cached.records[i], result: results[i] }])), {
      tokenText: text,
      onEntry: (e) => void entries.push(e),
    });
    const trainer = new Trainer(g, model, samples, { ...DEFAULT_TRAIN, epochs: 2, batch: 2, lr: 1e-2, seed: 7 }, method);
    const scoring = vi.spyOn(model, 'scoreAll');
    const hidden = vi.spyOn(TrainPass.prototype, 'hiddenRows');
    const losses: number[] = [];
    await trainer.run({ onStep: (m) => void losses.push(m.loss) });
    expect(scoring).not.toHaveBeenCalled();
    expect(hidden).not.toHaveBeenCalled();
    hidden.mockRestore();
    const params = await g.buffers.readF32(model.lora!.params, model.lora!.n);
    trainer.destroy();
    model.destroy();
    return { entries, losses, params };
  };
  const a = await run();
  expect(a.losses).toHaveLength(4);
  expect(a.entries).toHaveLength(8);
  // Later visits report the trained model's pb (it moves) with the classes fixed before training.
  const visits = a.entries.filter((e) => e.id === 'r3');
  expect(visits).toHaveLength(2);
  expect(visits[1].tokens.map((t) => t.class)).toEqual(visits[0].tokens.map((t) => t.class));
  expect(visits[1].tokens.map((t) => t.pb)).not.toEqual(visits[0].tokens.map((t) => t.pb));
  const b = await run();
  expect(b.params).toEqual(a.params);
  expect(b.losses).toEqual(a.losses);
  expect(b.entries).toEqual(a.entries);
});
