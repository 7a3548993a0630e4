/**
 * `nlft score` and `nlft train --method nlft` end to end as child processes, on a seeded tiny model
 * with the real tokenizer and two NLFT sample records (one positive, one negative): the score dump
 * holds every view's ids and every token's pb, pc, pj, class, coefficient and kind; training writes
 * saliency.jsonl and the summary into run.json; bad templates and records without output are refused
 * with one clear line. The dump's cached scores re-classify with `--from` (no model) to what a fresh
 * scoring with the same options writes; `--saliency static` and `--scorer` are recorded with the
 * run, a scorer's classes are those of scoring with the scorer alone, and a scorer with another
 * tokenizer is refused naming where the vocabularies differ.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { makeTmpDir, type TinyLlamaFolderOptions, writeTinyLlamaFolder } from '../fixtures/tiny-llama.ts';
import { KERNELS_TEXT, nlft, nlftWithEnv, ROOT } from '../helpers/cli.ts';

let tmp: string;
let modelDir: string;
let scorerDir: string;
let otherVocabDir: string;
let data: string;

beforeAll(async () => {
  tmp = await makeTmpDir('cli-nlft');
  const smollm2 = path.join(ROOT, 'public', 'tokenizers', 'smollm2');
  const folder = async (name: string, seed: number, shape: Partial<TinyLlamaFolderOptions>) => {
    const dir = path.join(tmp, name);
    const base = { vocabSize: 49152, hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, numKvHeads: 1, tie: true };
    await writeTinyLlamaFolder(dir, { ...base, seed, dtype: 'F32', tokenizerDir: smollm2, ...shape });
    return dir;
  };
  modelDir = await folder('model', 9, {});
  // A scorer: another model (wider, other weights) with the same tokenizer; and one with another tokenizer.
  scorerDir = await folder('scorer', 10, { hiddenSize: 64, intermediateSize: 128, numLayers: 2 });
  otherVocabDir = await folder('other-vocab', 11, { vocabSize: 849, tokenizerDir: path.join(ROOT, 'public', 'toy-math', 'model') });
  const all = JSON.parse(await readFile(path.join(ROOT, 'public', 'samples', 'nlft-sample.json'), 'utf8'));
  data = path.join(tmp, 'two.json');
  await writeFile(data, JSON.stringify([all[1], all[3]])); // a positive and a negative record
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** `nlft train` of the tiny model on the two records: one step of batch 2, rank 4, then `extra`. */
const trainTwo = (out: string, ...extra: string[]) =>
  nlft('train', ...['--model', modelDir, '--data', data, '--out', out], ...['--steps', '1', '--batch', '2', '--rank', '4'], ...extra);

/** Each run fails with one line holding its message, and no stack trace. */
async function expectRefused(cases: Array<[() => ReturnType<typeof nlft>, string]>): Promise<void> {
  for (const [run, message] of cases) {
    const r = await run();
    expect(r.code, message).not.toBe(0);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toContain('    at ');
  }
}

it('nlft score writes the per-token dump and prints the saliency summary', async () => {
  const out = path.join(tmp, 'dump.json');
  const r = await nlft('score', '--model', modelDir, '--data', data, '--out', out, '--rho', '1.05', '--pj-min', '0');
  expect(r.stderr).not.toContain('    at ');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^saliency {3}2 records: 1 positive, 1 negative; [01] negatives hit the 6% rule$/m);
  // A small model on a software adapter (SwiftShader): the preset, nothing measured.
  expect(r.stdout).toMatch(new RegExp(String.raw`^kernels {4}${KERNELS_TEXT} \(software-adapter preset, not measured\)$`, 'm'));
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
  expect(dump.scoresFormat).toBe('f32le-base64');
  expect(dump.hiddenSize).toBe(32);
  expect(Object.keys(neg.scores).sort()).toEqual(['hb', 'log1mpb', 'logpb', 'logpc', 'logpj']);
  expect(pos.scores.logpj).toBeNull();
});

it('nlft tune measures every kernel candidate now, marks the fastest and keeps it; later commands take it', async () => {
  // A cache of its own: the other tests here compare scorings bit for bit, all on the preset tiles.
  const env = { NLFT_CACHE_DIR: await mkdtemp(path.join(tmp, 'tune-cache-')) };
  const r = await nlftWithEnv(env, 'tune', '--model', modelDir, '--quant', 'f32'); // one weight format to compile (q8 adds f32 for the LoRA factors)
  expect(r.stderr).not.toContain('    at ');
  expect(r.code).toBe(0);
  expect(r.stderr).toMatch(/^tune {2}measuring the kernels: 100 %$/m);
  const lines = r.stdout.split('\n');
  for (const family of ['matmul', 'dx', 'lm-head', 'attention', 'decode', 'attn-decode']) {
    const rows = lines.filter((l) => l.startsWith(`${family} `));
    expect(rows.length, family).toBeGreaterThan(1);
    expect(rows.filter((l) => l.endsWith('  *')).length, family).toBe(1);
    for (const row of rows) expect(row, family).toMatch(/ \d+\.\d\d (GFLOP\/s|ms)( {2}\*)?$/);
  }
  expect(r.stdout).toMatch(new RegExp(String.raw`^kernels {2}${KERNELS_TEXT} \(measured now\); kept in .*tuning\.json$`, 'm'));
  const again = await nlftWithEnv(
    env,
    'score',
    '--model',
    modelDir,
    '--quant',
    'f32',
    '--data',
    data,
    '--out',
    path.join(tmp, 'dump-tuned.json'),
  );
  expect(again.code).toBe(0);
  expect(again.stdout).toMatch(new RegExp(String.raw`^kernels {4}${KERNELS_TEXT} \(measured earlier on this GPU\)$`, 'm'));
  const bad = await nlftWithEnv(env, 'tune', '--model', modelDir, '--quant', 'q3');
  expect(bad.code).toBe(1);
  expect(bad.stderr.trim()).toBe('nlft tune: --quant must be f32, q8 or q4 (got "q3")');
}, 600_000); // one measurement: every candidate compiled (about a minute on 2 busy cores)
it('nlft score --from re-classifies the cached scores without a model, as a fresh scoring does', async () => {
  const dumpFile = path.join(tmp, 'dump.json'); // from the test above (--rho 1.05 --pj-min 0)
  const same = path.join(tmp, 'from-same.json');
  const r = await nlft('score', '--from', dumpFile, '--out', same, '--rho', '1.05', '--pj-min', '0');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(
    /^re-classified 2 records from .*dump\.json in \d+\.\d ms \(no model, no GPU\), mean NLFT loss \d+\.\d{4}; wrote /m,
  );
  expect(r.stdout).not.toMatch(/^kernels/m);
  const dump = JSON.parse(await readFile(dumpFile, 'utf8'));
  expect(JSON.parse(await readFile(same, 'utf8'))).toEqual(dump);
  // Other constants: the same as scoring afresh with them.
  const opts = ['--tau-c', '0.2', '--rho', '1.01', '--pj-min', '0', '--cluster-criterion', 'similarity', '--delta', '0.3'];
  const fresh = path.join(tmp, 'fresh-other.json');
  const other = path.join(tmp, 'from-other.json');
  expect((await nlft('score', '--model', modelDir, '--data', data, '--out', fresh, ...opts)).code).toBe(0);
  expect((await nlft('score', '--from', dumpFile, '--out', other, ...opts)).code).toBe(0);
  const [a, b] = [JSON.parse(await readFile(fresh, 'utf8')), JSON.parse(await readFile(other, 'utf8'))];
  expect(b.records).toEqual(a.records);
  expect(b.summary).toEqual(a.summary);
  expect(b.options).toEqual(a.options);
  expect(b.records).not.toEqual(dump.records);
  // Bad dumps and flags that need a model.
  const bad = path.join(tmp, 'bad-dump.json');
  const broken = structuredClone(dump);
  broken.records[1].scores.hb = 'AAAAAA==';
  await writeFile(bad, JSON.stringify(broken));
  const score =
    (...args: string[]) =>
    () =>
      nlft('score', ...args);
  await expectRefused([
    [score('--from', bad), `nlft score: bad-dump.json: record 2 (id ${dump.records[1].id}): field "scores.hb": expected base64 of `],
    [
      score('--from', dumpFile, '--model', modelDir),
      `nlft score: --from re-applies the rules to the scores in ${dumpFile} without a model; leave out --model`,
    ],
    [score('--from', data), 'nlft score: two.json: the dump: expected a JSON object written by nlft score, found [{'],
  ]);
});

it('nlft train --saliency static and --scorer: recorded with the run; the scorer decides the classes', async () => {
  const opts = ['--rho', '1.05', '--pj-min', '0'];
  const train = (out: string, ...extra: string[]) => trainTwo(out, '--dropout', '0', ...opts, ...extra);

  const staticOut = path.join(tmp, 'static');
  const r = await train(staticOut, '--saliency', 'static');
  expect(r.stderr).not.toContain('    at ');
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/^saliency {3}static: classes and coefficients fixed before training from the initial model's scores$/m);
  const run = JSON.parse(await readFile(path.join(staticOut, 'run.json'), 'utf8'));
  expect(run.nlft).toMatchObject({ saliencyMode: 'static', scorer: null });

  const scorerOut = path.join(tmp, 'scorer-run');
  const s = await train(scorerOut, '--scorer', scorerDir);
  expect(s.stderr).not.toContain('    at ');
  expect(s.code, s.stderr).toBe(0);
  expect(s.stdout).toContain(`saliency   static: classes and coefficients fixed before training from the scorer ${scorerDir}'s scores`);
  expect(JSON.parse(await readFile(path.join(scorerOut, 'run.json'), 'utf8')).nlft).toMatchObject({
    saliencyMode: 'static',
    scorer: scorerDir,
  });
  // The visits' classes are those of scoring the records with the scorer alone, and their coefficients,
  // pc and pj too within 1e-5 relative: the training run scores with the tiles tuned for the trained
  // model's widths, \`nlft score --model SCORER\` with those of the scorer's (another summation order).
  const alone = path.join(tmp, 'scorer-dump.json');
  expect((await nlft('score', '--model', scorerDir, '--data', data, '--out', alone, ...opts)).code).toBe(0);
  const byId = new Map(JSON.parse(await readFile(alone, 'utf8')).records.map((e: { id: string }) => [e.id, e]));
  const visits = (await readFile(path.join(scorerOut, 'saliency.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  expect(visits).toHaveLength(2);
  type Tok = { class: string; coefficient: number; pc: number; pj: number | null; pb: number };
  const close = (a: number | null, b: number | null) => (a === null ? b === null : b !== null && Math.abs(a - b) <= 1e-5 * Math.abs(b));
  for (const v of visits) {
    const want = byId.get(v.id) as { tokens: Tok[] };
    expect(v.tokens.map((t: Tok) => t.class)).toEqual(want.tokens.map((t) => t.class));
    const off = v.tokens.filter(
      (t: Tok, i: number) =>
        !close(t.coefficient, want.tokens[i].coefficient) || !close(t.pc, want.tokens[i].pc) || !close(t.pj, want.tokens[i].pj),
    );
    expect(off).toEqual([]);
    expect(v.tokens.map((t: Tok) => t.pb)).not.toEqual(want.tokens.map((t) => t.pb)); // pb is the trained model's
  }

  const refused =
    (...args: string[]) =>
    () =>
      train(path.join(tmp, 'refused'), ...args);
  await expectRefused([
    [
      refused('--scorer', otherVocabDir),
      `nlft train: scorer ${otherVocabDir}: its tokenizer differs from the trained model's (token 3 is "<repo_name>" in the model and "<|pad|>" in the scorer); a scorer must have the same vocabulary`,
    ],
    [
      refused('--scorer', scorerDir, '--saliency', 'dynamic'),
      'nlft train: saliency: expected static with a scorer model (the scorer decides the saliency once, before training), found "dynamic"',
    ],
    [
      refused('--saliency', 'sometimes'),
      'nlft train: saliency: expected dynamic or static (or none: dynamic, static with a scorer), found "sometimes"',
    ],
  ]);
}, 300_000); // three nlft train runs and a score: ≈ 90 s on 2 quiet cores, more when the suite runs beside it

/** `trainTwo` into a folder of its own; its saliency.jsonl lines and run.json. */
async function trainTwoRecorded(name: string, ...flags: string[]) {
  const out = path.join(tmp, name);
  const r = await trainTwo(out, ...flags);
  expect(r.stderr).not.toContain('    at ');
  expect(r.code).toBe(0);
  const lines = (await readFile(path.join(out, 'saliency.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  return { r, lines, run: JSON.parse(await readFile(path.join(out, 'run.json'), 'utf8')) };
}

it('nlft train --method nlft writes saliency.jsonl and the summary with the run', async () => {
  const { r, lines, run } = await trainTwoRecorded('run', '--negatives-without-saliency', 'skip');
  expect(r.stdout).toMatch(/negatives have no unlikely token \(skipped\)/);
  expect(r.stdout).toMatch(/^scoring {4}2 records, no-grad views packed \d+ tokens per pass$/m);
  expect(r.stdout).toMatch(
    new RegExp(String.raw`^kernels {4}${KERNELS_TEXT} \((software-adapter preset, not measured|measured earlier on this GPU)\)$`, 'm'),
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
  const run =
    (command: string, ...args: string[]) =>
    () =>
      nlft(command, '--model', modelDir, ...args);
  await expectRefused([
    [
      run('score', '--data', gsm, '--out', path.join(tmp, 'x.json')),
      'nlft score: gsm.jsonl: 1 problem:\n  record 1 (line 1): field "output": missing',
    ],
    [run('score', '--data', data, '--out', path.join(tmp, 'x.json'), '--templates', tpl), 'nlft score: templates.json (judge.user): '],
    [
      run('train', '--data', data, '--out', path.join(tmp, 'y'), '--cluster-criterion', 'nearest'),
      'nlft train: clusterCriterion: expected distance or similarity, found "nearest"',
    ],
    [
      run('score', '--data', data, '--out', path.join(tmp, 'x.json'), '--score-batch-tokens', '0'),
      'nlft score: scoreBatchTokens: expected a positive integer (or none: sized from memory), found 0',
    ],
    [
      run('train', '--data', data, '--out', path.join(tmp, 'y'), '--negatives', 'towards'),
      'nlft train: negatives: expected authors or anchor, found "towards"',
    ],
    [
      run('train', '--data', data, '--out', path.join(tmp, 'y'), '--negatives', 'anchor', '--anchor-weight=-1'),
      'nlft train: anchorWeight: expected a non-negative number, found -1',
    ],
    [
      run('score', '--data', data, '--out', path.join(tmp, 'x.json'), '--negatives', 'anchor', '--sft-on-negatives'),
      'nlft score: sftOnNegatives: expected false with negatives anchor (the anchor trains the standard answer instead), found true',
    ],
  ]);
});

it('nlft train --negatives anchor --anchor-weight 0.5: the negative trains its standard answer, shown in saliency.jsonl and run.json', async () => {
  const { r, lines, run } = await trainTwoRecorded('anchor', '--negatives', 'anchor', '--anchor-weight', '0.5');
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
