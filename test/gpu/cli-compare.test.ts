/**
 * `nlft compare` end to end as a child process on a seeded tiny model: 2 arms × 2 seeds of one
 * step each, evaluated on three questions; compare.json has every run (its adapter folder, system
 * text, per-item correctness) and rows whose numbers follow from them; compare.md has the table's
 * rows. `nlft eval --adapter` on a run folder asks under the text that run trained with (its
 * run.json) and says so; --system overrides it. Bad arms give one line before anything trains.
 */
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { compareRows } from '../../src/eval/compare.ts';
import { makeTmpDir, writeTinyLlamaFolder, TINY_SHAPE, SMOLLM2_TOKENIZER_DIR, SMOLLM2_VOCAB } from '../fixtures/tiny-llama.ts';
import { nlft } from '../helpers/cli.ts';

let tmp: string;
let modelDir: string;
let data: string;
let test: string;

const INSTRUCTION = 'Solve it. End with #### and the number.';

beforeAll(async () => {
  tmp = await makeTmpDir('cli-compare');
  modelDir = path.join(tmp, 'model');
  await writeTinyLlamaFolder(modelDir, {
    seed: 12,
    ...TINY_SHAPE,
    vocabSize: SMOLLM2_VOCAB,
    numLayers: 1,
    dtype: 'F32',
    tokenizerDir: SMOLLM2_TOKENIZER_DIR,
  });
  // Two NLFT records that share an instruction (the text the runs train with), one negative.
  data = path.join(tmp, 'nlft.json');
  await writeFile(
    data,
    JSON.stringify([
      { id: 'a', instruction: INSTRUCTION, input: '1 + 1?', output: '1 + 1 = 2.\n#### 2', answer: '#### 2', judgment: null },
      {
        id: 'b',
        instruction: INSTRUCTION,
        input: '2 + 3?',
        output: '2 + 3 = 6.\n#### 6',
        answer: '2 + 3 = 5.\n#### 5',
        judgment: 'The sum is 5, not 6.',
      },
    ]),
  );
  test = path.join(tmp, 'test.jsonl');
  await writeFile(
    test,
    [
      '{"question": "1 + 2?", "answer": "#### 3"}',
      '{"question": "2 + 2?", "answer": "#### 4"}',
      '{"question": "3 + 3?", "answer": "#### 6"}',
    ].join('\n'),
  );
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const TRAINING = ['--steps', '1', '--batch', '1', '--rank', '4', '--max-len', '96', '--quant', 'q8'];

it('trains 2 arms × 2 seeds, evaluates each and the base, and writes compare.json and compare.md', async () => {
  const out = path.join(tmp, 'cmp');
  const arms = 'sft,nlft:lambda=5';
  const r = await nlft(
    'compare',
    '--model',
    modelDir,
    '--data',
    data,
    '--eval',
    test,
    '--arms',
    arms,
    '--seeds',
    '0,1',
    '--limit',
    '2',
    '--max-new',
    '3',
    '--out',
    out,
    ...TRAINING,
  );
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toContain('compare    2 arms × 2 seeds');
  expect(r.stdout).toMatch(/^train {6}\[nlft:lambda=5 seed 1\] → /m);
  expect(r.stdout).toMatch(/^eval {7}base model: system "Solve it\. End with #### and the number\." on .+$/m);
  // Seed by seed, each run evaluated when trained.
  const order = [...r.stdout.matchAll(/^(train|eval) {6,7}(\[[^\]]+\]|base model)/gm)].map((m) => `${m[1]} ${m[2]}`);
  expect(order.filter((line, i) => line !== order[i - 1])).toEqual([
    'train [sft seed 0]',
    'eval [sft seed 0]',
    'train [nlft:lambda=5 seed 0]',
    'eval [nlft:lambda=5 seed 0]',
    'train [sft seed 1]',
    'eval [sft seed 1]',
    'train [nlft:lambda=5 seed 1]',
    'eval [nlft:lambda=5 seed 1]',
    'eval base model',
  ]);

  const json = JSON.parse(await readFile(path.join(out, 'compare.json'), 'utf8'));
  expect(json.reference).toBe('sft');
  expect(json.items.map((i: { expected: string }) => i.expected)).toEqual(['3', '4']);
  expect(json.base.correct).toHaveLength(2);
  expect(json.trainingFlags).toMatchObject({ steps: '1', batch: '1', rank: '4', 'max-len': '96', quant: 'q8' });
  expect(json.runs.map((x: { arm: string; seed: number }) => `${x.arm}/${x.seed}`)).toEqual([
    'sft/0',
    'sft/1',
    'nlft:lambda=5/0',
    'nlft:lambda=5/1',
  ]);
  for (const run of json.runs) {
    expect(run.status).toBe('done');
    expect(run.system).toBe(INSTRUCTION);
    expect(run.correct).toHaveLength(2);
    expect(run.summary.correct).toBe(run.correct.filter(Boolean).length);
    expect(run.trainSeconds).toBeGreaterThan(0);
    expect(existsSync(path.join(run.dir, 'adapter_model.safetensors'))).toBe(true);
    const record = JSON.parse(await readFile(path.join(run.dir, 'run.json'), 'utf8'));
    expect(record.method).toBe(run.arm.split(':')[0]);
    expect(record.train.seed).toBe(run.seed);
    expect(record.train.maxSteps).toBe(1);
    if (run.arm === 'nlft:lambda=5') expect(record.nlft.options.lambda).toBe(5);
  }
  // The rows are the statistics of the runs' per-item correctness.
  const outcome = (arm: string) => {
    const mine = json.runs.filter((x: { arm: string }) => x.arm === arm);
    return {
      arm,
      seeds: [0, 1],
      correct: mine.map((x: { correct: boolean[] }) => x.correct),
      trainSeconds: mine.map((x: { trainSeconds: number }) => x.trainSeconds),
    };
  };
  expect(json.rows).toEqual(JSON.parse(JSON.stringify(compareRows([outcome('sft'), outcome('nlft:lambda=5')], 'sft'))));

  const md = await readFile(path.join(out, 'compare.md'), 'utf8');
  expect(md).toContain(`nlft compare --model ${modelDir}`);
  expect(md).toMatch(/^\| arm \| accuracy per seed \(%\) \| mean ± sd \(%\) \| vs sft \(points, 95 % CI\) \| train s \|$/m);
  expect(md).toMatch(/^\| base model \| \d+\.\d \| \d+\.\d \| \| \|$/m);
  expect(md).toMatch(/^\| sft \| \d+\.\d \(seed 0\), \d+\.\d \(seed 1\) \| \d+\.\d ± \d+\.\d \| \(reference\) \| \d+\.\d \|$/m);
  expect(md).toMatch(
    /^\| nlft:lambda=5 \| \d+\.\d \(seed 0\), \d+\.\d \(seed 1\) \| \d+\.\d ± \d+\.\d \| [+−]\d+\.\d \[[+−]\d+\.\d, [+−]\d+\.\d\] \| \d+\.\d \|$/m,
  );
  for (const line of md.split('\n').filter((l) => l.startsWith('| '))) expect(r.stdout).toContain(line);
  // The commands as run: an arm's flags over the shared ones, the seed from --seeds.
  expect(r.stdout).toMatch(/^ {2}\[nlft:lambda=5 seed 1\] trained: 1\/1 steps/m);

  // eval --adapter on a run folder: the run's text by default (from its run.json), --system over it.
  const dir = json.runs[2].dir;
  const fromRun = await nlft('eval', '--model', modelDir, '--data', test, '--adapter', dir, '--limit', '1', '--max-new', '2');
  expect(fromRun.code).toBe(0);
  expect(fromRun.stdout).toContain(
    `system     system "${INSTRUCTION}" for records without an instruction (the run in ${dir} trained with (${data}))`,
  );
  expect(fromRun.stdout).toMatch(/^accuracy [01]\/1 = .+, system "Solve it\. End with #### and the number\.", .+\)$/m);
  const file = path.join(tmp, 'eval.json');
  const own = await nlft(
    'eval',
    '--model',
    modelDir,
    '--data',
    test,
    '--adapter',
    dir,
    '--limit',
    '1',
    '--max-new',
    '2',
    '--system',
    'Be brief.',
    '--out',
    file,
  );
  expect(own.stdout).toContain('system     system "Be brief." for records without an instruction (--system)');
  expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ system: 'Be brief.', systemSource: '--system' });
}, 900_000);

it('with --out, a second compare keeps the runs and evaluations made with the same flags and retrains a changed one', async () => {
  const out = path.join(tmp, 'again');
  const args = ['compare', '--model', modelDir, '--data', data, '--eval', test, '--limit', '2', '--max-new', '3', '--out', out];
  const first = await nlft(...args, '--arms', 'sft,nlft', '--seeds', '0', ...TRAINING);
  expect(first.code).toBe(0);
  const rows = JSON.parse(await readFile(path.join(out, 'compare.json'), 'utf8')).rows;
  const again = await nlft(...args, '--arms', 'sft,nlft', '--seeds', '0', ...TRAINING);
  expect(again.code).toBe(0);
  expect(again.stdout).not.toMatch(/^train /m);
  expect(again.stdout).toMatch(/^kept {7}\[sft seed 0\] .*01-sft-seed0: trained by an earlier compare with the same flags/m);
  expect(again.stdout).toMatch(/^kept {7}\[nlft seed 0\] /m);
  expect(again.stdout.match(/\(kept from an earlier compare\)$/gm)).toHaveLength(3);
  expect(again.stdout).not.toContain('kernels ');
  expect(JSON.parse(await readFile(path.join(out, 'compare.json'), 'utf8')).rows).toEqual(rows);
  // Another learning rate: the sft folder is trained and evaluated again, the base evaluation kept.
  const changed = await nlft(...args, '--arms', 'sft', '--seeds', '0', ...TRAINING, '--lr', '2e-4');
  expect(changed.code).toBe(0);
  expect(changed.stdout).toMatch(/^train {6}\[sft seed 0\] → .*01-sft-seed0$/m);
  expect(changed.stdout).toMatch(/^eval {7}base model: accuracy .* \(kept from an earlier compare\)$/m);
  expect(changed.stdout).toMatch(/^eval {7}\[sft seed 0\]: accuracy \d\/2 = [\d.]+%$/m);
}, 900_000);

it('bad arms, seeds and per-run flags give one clear line before anything trains', async () => {
  const run = (...extra: string[]) => nlft('compare', '--model', modelDir, '--data', data, '--eval', test, ...extra);
  const cases: [string[], string][] = [
    [['--arms', 'sft,dpo'], 'nlft compare: --arms: expected arms like sft, nlft or nlft:lambda=5, found "dpo"'],
    [['--arms', 'nlft:lambda=-1'], 'nlft compare: --arms nlft:lambda=-1: lambda: expected '],
    [['--arms', 'sft', '--seeds', '0,0'], 'nlft compare: --seeds: expected distinct non-negative integers such as 0,1,2, found "0,0"'],
    [['--arms', 'sft', '--seed', '1'], 'nlft compare: --seed: not a compare flag (use --seeds)'],
    [['--seeds', '1'], 'nlft compare: --arms is required'],
  ];
  for (const [args, message] of cases) {
    const r = await run(...args);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().startsWith(message)).toBe(true);
    expect(r.stdout).toBe('');
  }
});
