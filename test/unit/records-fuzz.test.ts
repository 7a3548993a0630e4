/**
 * The readers of JSON records from outside under fuzzed input (test/helpers/fuzz.ts): a templates
 * file (`--templates`, stored with a run), an `nlft score` dump (`nlft score --from`), the
 * `compare.json` of `nlft compare`, and the run and explorer records read back from IndexedDB
 * (their pure validators, on structured values as IndexedDB gives them). Each reader's result is
 * also used as its callers use it (templates filled, scores re-classified, runs listed), so a
 * value it lets through cannot crash them either.
 */
import { describe, expect, it } from 'vitest';
import { compareRows, DEFAULT_BOOTSTRAP } from '../../src/eval/compare.ts';
import { DEFAULT_LORA } from '../../src/model/lora.ts';
import { classifyScores } from '../../src/nlft/method.ts';
import { DEFAULT_SALIENCY } from '../../src/nlft/saliency.ts';
import { readScoreDump, SCORES_FORMAT, storeScores } from '../../src/nlft/scores.ts';
import { DEFAULT_TEMPLATES, fillField, parseTemplates, TEMPLATE_PLACEHOLDERS, type TemplateField } from '../../src/nlft/templates.ts';
import { readStoredExplorer } from '../../src/storage/explorer.ts';
import { continueStep, entryName, newRun, readStoredRun } from '../../src/storage/runs.ts';
import { DEFAULT_TRAIN } from '../../src/train/trainer.ts';
import type { Rng } from '../../src/util/rng.ts';
import { readCompareJson } from '../../src/app/views/compare-data.ts';
import { fuzz, mutateJsonText, mutateValue, valueSize } from '../helpers/fuzz.ts';
import { syntheticScoredDataset } from '../helpers/synthetic-scores.ts';

const CASES = 10_000;

/** Both outcomes of the property happen often: the fuzzer reaches past the first check. */
function expectBothOutcomes(o: { ok: number; refused: number }) {
  expect(o.ok).toBeGreaterThan(500);
  expect(o.refused).toBeGreaterThan(500);
}

describe('JSON records under fuzzed input', () => {
  it(`${CASES} templates files: templates that fill, or a TemplateError naming the file`, async () => {
    const fields = Object.keys(TEMPLATE_PLACEHOLDERS) as TemplateField[];
    const values = { instruction: 'i', input: 'q', answer: 'a', judgment: 'j' };
    const o = await fuzz({
      name: 'templates file',
      seed: 21,
      cases: CASES,
      valid: (rng: Rng) => (rng.int(2) ? structuredClone(DEFAULT_TEMPLATES) : { judge: { user: `{input} {judgment} {{${rng.int(9)}}}` } }),
      mutate: (v, rng) => mutateValue(v, rng),
      size: valueSize,
      mentions: 'templates.json',
      parse(json) {
        const t = parseTemplates(json, 'templates.json');
        for (const field of fields) fillField(t, field, values, 'templates.json');
        return t;
      },
    });
    expectBothOutcomes(o);
  });

  it(`${CASES} score dumps: scores that re-classify, or an error naming the dump`, async () => {
    const o = await fuzz({
      name: 'nlft score dump',
      seed: 22,
      cases: CASES,
      valid(rng: Rng) {
        const s = syntheticScoredDataset(1 + rng.int(3), 2 + rng.int(6), 4, rng.int(1000));
        const records = s.records.map((r, i) => ({
          ...r,
          tokens: r.responseIds.map((id) => ({ id, text: `<${id}>` })),
          anchor: r.anchor ? { tokens: r.anchor.responseIds.map((id) => ({ id, text: `<${id}>` })) } : null,
          scores: storeScores(s.scores.records[i]),
        }));
        return JSON.parse(JSON.stringify({ scoresFormat: SCORES_FORMAT, hiddenSize: 4, records }));
      },
      mutate: (v, rng) => mutateValue(v, rng),
      size: valueSize,
      mentions: 'dump.json',
      parse(json) {
        const dump = readScoreDump(json, 'dump.json');
        return classifyScores(dump.records, dump.scores, { ...DEFAULT_SALIENCY, rho: 1.05, pjMin: 0 }, dump.tokenText);
      },
    });
    expectBothOutcomes(o);
  });

  it(`${CASES} compare.json files: a comparison, or an error naming the file`, async () => {
    const o = await fuzz({
      name: 'compare.json',
      seed: 23,
      cases: CASES,
      valid(rng: Rng) {
        const items = 2 + rng.int(4);
        const correct = () => Array.from({ length: items }, () => rng.int(2) === 1);
        const arms = ['sft', 'nlft'].map((arm) => ({ arm, seeds: [0, 1], correct: [correct(), correct()], trainSeconds: [1, 2] }));
        const runs = arms.flatMap((a) =>
          a.seeds.map((seed, s) => ({
            arm: a.arm,
            seed,
            dir: `d${seed}`,
            status: 'done',
            trainSeconds: 1,
            system: 'S',
            label: 'x',
            summary: {},
            correct: a.correct[s],
          })),
        );
        return JSON.stringify({
          command: 'nlft compare',
          model: 'M',
          data: 'd.json',
          eval: 'test.jsonl',
          quant: 'q8',
          maxNewTokens: 64,
          trainingFlags: {},
          reference: 'sft',
          bootstrap: { ...DEFAULT_BOOTSTRAP, resamples: 50 },
          items: Array.from({ length: items }, (_, i) => ({ index: i + 1, id: `q${i}`, expected: String(i) })),
          base: { label: 'M', summary: {}, correct: correct() },
          runs,
          rows: compareRows(arms, 'sft', { ...DEFAULT_BOOTSTRAP, resamples: 50 }),
        });
      },
      mutate: (text, rng) => new TextDecoder().decode(mutateJsonText(text, rng)),
      size: (text) => text.length,
      mentions: 'compare.json',
      parse: (text) => readCompareJson(text, 'compare.json'),
    });
    expectBothOutcomes(o);
  });

  it(`${CASES} stored runs (IndexedDB values): a run the Library lists, or an error naming the field`, async () => {
    const o = await fuzz({
      name: 'stored run record',
      seed: 24,
      cases: CASES,
      valid: (rng: Rng) => ({
        ...newRun({
          method: rng.int(2) ? 'nlft' : 'sft',
          train: { ...DEFAULT_TRAIN, epochs: 1 },
          lora: { ...DEFAULT_LORA, r: 4, alpha: 4 },
          maxLen: 256,
          saliency: DEFAULT_SALIENCY,
          templates: DEFAULT_TEMPLATES,
          memoryBudgetMiB: null,
          data: { name: 'data.json', bytes: new Uint8Array(8) },
        }),
        startedAt: '2026-02-01T10:00:00.000Z',
        totalSteps: 4,
        checkpointStep: rng.int(2) ? 2 : null,
        status: ['running', 'done', 'cancelled'][rng.int(3)],
        model: { id: 'demo', quant: 'q8' },
      }),
      mutate: (v, rng) => mutateValue(v, rng),
      size: valueSize,
      mentions: 'run-1',
      parse(value) {
        const run = readStoredRun(value, 'run-1');
        return [continueStep(run), entryName({ kind: 'run', id: 'run-1', run })];
      },
    });
    expectBothOutcomes(o);
  });

  it(`${CASES} stored explorer scores (IndexedDB values): scores that re-classify, or an error naming the field`, async () => {
    const o = await fuzz({
      name: 'stored explorer record',
      seed: 25,
      cases: CASES,
      valid: (rng: Rng) => ({
        scored: syntheticScoredDataset(1 + rng.int(3), 2 + rng.int(5), 4, rng.int(1000)),
        saliency: DEFAULT_SALIENCY,
      }),
      mutate: (v, rng) => mutateValue(v, rng),
      size: valueSize,
      parse(value) {
        const { scored } = readStoredExplorer(value);
        return classifyScores(scored.records, scored.scores, DEFAULT_SALIENCY, (id) => scored.tokenTexts[id] ?? `<${id}>`);
      },
    });
    expectBothOutcomes(o);
  });
});

describe('stored explorer records the fuzzer found', () => {
  const stored = () => ({ scored: syntheticScoredDataset(2, 3, 4, 1), saliency: DEFAULT_SALIENCY });
  it('a positive record with logpj scores, an anchor without token ids, a record without an id: refused naming the field', () => {
    const a = stored();
    (a.scored.scores.records[0] as { logpj: unknown }).logpj = [[1]];
    expect(() => readStoredExplorer(a)).toThrow('field "scored.scores.records[0].logpj": expected null (a positive record)');
    const b = stored();
    (b.scored.records[1].anchor as unknown as { responseIds: unknown }).responseIds = [[1]];
    expect(() => readStoredExplorer(b)).toThrow('field "scored.records[1].anchor.responseIds": expected an array of token ids');
    const c = stored();
    (c.scored.records[0] as { id: unknown }).id = [[1]];
    expect(() => readStoredExplorer(c)).toThrow('field "scored.records[0]": expected a record with an id, an index and a polarity');
    const d = stored();
    (d.scored.scores.records as unknown[])[1] = null;
    expect(() => readStoredExplorer(d)).toThrow('field "scored.scores.records[1]": expected an object of scores');
  });
});
