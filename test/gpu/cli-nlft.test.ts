/**
 * `nlft score` and `nlft train --method nlft` end to end as child processes, on a seeded tiny model
 * with the real tokenizer and two NLFT sample records (one positive, one negative): the score dump
 * holds every view's ids and every token's pb, pc, pj, class, coefficient and kind; training writes
 * saliency.jsonl and the summary into run.json; bad templates and records without output are refused
 * with one clear line.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTmpDir, writeTinyLlamaFolder } from '../fixtures/tiny-llama.ts';
import { nlft, ROOT } from '../helpers/cli.ts';

let tmp: string;
let modelDir: string;
let data: string;

beforeAll(async () => {
  tmp = await makeTmpDir('cli-nlft');
  modelDir = path.join(tmp, 'model');
  await writeTinyLlamaFolder(modelDir, {
    seed: 9,
    vocabSize: 49152,
    hiddenSize: 32,
    intermediateSize: 64,
    numLayers: 1,
    numHeads: 2,
    numKvHeads: 1,
    tie: true,
    dtype: 'F32',
    tokenizerDir: path.join(ROOT, 'public', 'tokenizers', 'smollm2'),
  });
  const all = JSON.parse(await readFile(path.join(ROOT, 'public', 'samples', 'nlft-sample.json'), 'utf8'));
  data = path.join(tmp, 'two.json');
  await writeFile(data, JSON.stringify([all[1], all[3]])); // a positive and a negative record
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

it('nlft score writes the per-token dump and prints the saliency summary', async () => {
  const out = path.join(tmp, 'dump.json');
  const r = await nlft('score', '--model', modelDir, '--data', data, '--out', out, '--rho', '1.05', '--pj-min', '0');
  expect(r.stderr).not.toContain('    at ');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^saliency {3}2 records: 1 positive, 1 negative; [01] negatives hit the 6% rule$/m);
  // First use of this adapter and model in this test file's cache: the tiles are measured.
  expect(r.stdout).toMatch(/^kernels {4}matmul \d+×\d+, lm-head \d+×\d+ \(measured now\); kept in .*tuning\.json$/m);
  expect(r.stdout).toMatch(/^scored 2 records \(0 truncated to --max-len 512\), mean NLFT loss \d+\.\d{4}; wrote /m);
  const dump = JSON.parse(await readFile(out, 'utf8'));
  expect(dump.options).toMatchObject({
    lambda: 10,
    tauC: 0.95,
    rho: 1.05,
    pjMin: 0,
    clusterCriterion: 'distance',
    negativesWithoutSaliency: 'train',
  });
  expect(dump.templates.standard.user).toContain('{answer}');
  const [pos, neg] = dump.records;
  expect([pos.polarity, neg.polarity]).toEqual(['positive', 'negative']);
  expect(pos.views.judge).toBeNull();
  expect(neg.views.judge.length).toBeGreaterThan(0);
  for (const rec of dump.records) {
    expect(rec.tokens.map((t: { id: number }) => t.id)).toEqual(rec.responseIds);
    expect(Number.isFinite(rec.loss)).toBe(true);
    for (const t of rec.tokens) expect(Object.keys(t).sort()).toEqual(['class', 'coefficient', 'id', 'kind', 'pb', 'pc', 'pj', 'text']);
  }
  expect(dump.summary.records).toBe(2);
  expect(dump.scoreBatchTokens).toBeGreaterThan(100); // the five views share one pass
  // One sequence per pass gives the same dump.
  const alone = path.join(tmp, 'alone.json');
  expect(
    (
      await nlft(
        'score',
        '--model',
        modelDir,
        '--data',
        data,
        '--out',
        alone,
        '--rho',
        '1.05',
        '--pj-min',
        '0',
        '--score-batch-tokens',
        '1',
      )
    ).code,
  ).toBe(0);
  const dumpAlone = JSON.parse(await readFile(alone, 'utf8'));
  expect(dumpAlone.scoreBatchTokens).toBe(1);
  expect(dumpAlone.records).toEqual(dump.records);
});

/** `nlft train` on the two records for one step of batch 2, rank 4, with `flags`; its saliency.jsonl lines and run.json. */
async function trainTwo(name: string, ...flags: string[]) {
  const out = path.join(tmp, name);
  const r = await nlft('train', '--model', modelDir, '--data', data, '--out', out, '--steps', '1', '--batch', '2', '--rank', '4', ...flags);
  expect(r.stderr).not.toContain('    at ');
  expect(r.code).toBe(0);
  const lines = (await readFile(path.join(out, 'saliency.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  return { r, lines, run: JSON.parse(await readFile(path.join(out, 'run.json'), 'utf8')) };
}

it('nlft train --method nlft writes saliency.jsonl and the summary with the run', async () => {
  const { r, lines, run } = await trainTwo('run', '--negatives-without-saliency', 'skip');
  expect(r.stdout).toMatch(/negatives have no unlikely token \(skipped\)/);
  expect(r.stdout).toMatch(/^scoring {4}2 records, no-grad views packed \d+ tokens per pass$/m);
  expect(r.stdout).toMatch(
    /^kernels {4}matmul \d+×\d+, lm-head \d+×\d+ \((measured now\); kept in .*tuning\.json|measured earlier on this GPU\))$/m,
  );
  expect(lines.map((e) => e.step)).toEqual([1, 1]);
  expect(lines.map((e) => e.polarity).sort()).toEqual(['negative', 'positive']);
  expect(run.method).toBe('nlft');
  expect(run.nlft.options.negativesWithoutSaliency).toBe('skip');
  expect(run.nlft.summary).toMatchObject({ records: 2, positives: 1, negatives: 1 });
  expect(run.nlft.scoreBatchTokens).toBeGreaterThan(0);
  expect(run.prompt.templates.judge.user).toContain('{judgment}');
});

it('bad input: a record without output, a bad templates file, a bad option', async () => {
  const gsm = path.join(tmp, 'gsm.jsonl');
  await writeFile(gsm, '{"question": "1+1?", "answer": "#### 2"}\n');
  const tpl = path.join(tmp, 'templates.json');
  await writeFile(tpl, JSON.stringify({ judge: { user: 'no judgment here: {input}' } }));
  const cases: Array<[string[], string]> = [
    [
      ['score', '--data', gsm, '--out', path.join(tmp, 'x.json')],
      'nlft score: gsm.jsonl: 1 problem:\n  record 1 (line 1): field "output": missing',
    ],
    [['score', '--data', data, '--out', path.join(tmp, 'x.json'), '--templates', tpl], 'nlft score: templates.json (judge.user): '],
    [
      ['train', '--data', data, '--out', path.join(tmp, 'y'), '--cluster-criterion', 'nearest'],
      'nlft train: clusterCriterion: expected distance or similarity, found "nearest"',
    ],
    [
      ['score', '--data', data, '--out', path.join(tmp, 'x.json'), '--score-batch-tokens', '0'],
      'nlft score: scoreBatchTokens: expected a positive integer (or none: sized from memory), found 0',
    ],
    [
      ['train', '--data', data, '--out', path.join(tmp, 'y'), '--negatives', 'towards'],
      'nlft train: negatives: expected authors or anchor, found "towards"',
    ],
    [
      ['train', '--data', data, '--out', path.join(tmp, 'y'), '--negatives', 'anchor', '--anchor-weight=-1'],
      'nlft train: anchorWeight: expected a non-negative number, found -1',
    ],
    [
      ['score', '--data', data, '--out', path.join(tmp, 'x.json'), '--negatives', 'anchor', '--sft-on-negatives'],
      'nlft score: sftOnNegatives: expected false with negatives anchor (the anchor trains the standard answer instead), found true',
    ],
  ];
  for (const [args, message] of cases) {
    const r = await nlft(args[0], '--model', modelDir, ...args.slice(1));
    expect(r.code, message).not.toBe(0);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toContain('    at ');
  }
});

it('nlft train --negatives anchor --anchor-weight 0.5: the negative trains its standard answer, shown in saliency.jsonl and run.json', async () => {
  const { r, lines, run } = await trainTwo('anchor', '--negatives', 'anchor', '--anchor-weight', '0.5');
  expect(r.stdout).toMatch(/^ {11}1 negatives train their standard answer \(anchor\)$/m);
  const neg = lines.find((e) => e.polarity === 'negative');
  const pos = lines.find((e) => e.polarity === 'positive');
  expect(pos.anchor).toBeUndefined();
  const n = neg.anchor.tokens.length;
  expect(n).toBeGreaterThan(1);
  expect(neg.anchor.weight).toBeCloseTo((10 * 0.5) / n, 12);
  expect(neg.anchor.loss).toBeGreaterThan(0);
  for (const t of neg.tokens) expect(t.kind === 'unlikelihood' || t.coefficient === 0).toBe(true); // no likelihood term on its response
  expect(run.nlft.options).toMatchObject({ negatives: 'anchor', anchorWeight: 0.5 });
  expect(run.nlft.summary).toMatchObject({ negatives: 1, anchored: 1, negativesRule: 'anchor' });
});
