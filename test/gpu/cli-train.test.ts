/**
 * `nlft train` end to end as a child process: SFT on GSM8K records for a seeded tiny model with the
 * real tokenizer writes a PEFT adapter that reads back with the right keys and shapes, metrics.jsonl
 * and run.json; an interrupted run (SIGINT) resumed with --resume ends with the same adapter bytes
 * as an uninterrupted one; bad inputs give one clear line and a non-zero exit.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { readPeftAdapter } from '../../src/export/peft.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import type { LlamaConfig } from '../../src/model/config.ts';
import { makeTmpDir, writeCliTrainingFixture } from '../fixtures/tiny-llama.ts';
import { CLI_ENV, NLFT, nlft, ROOT } from '../helpers/cli.ts';

let tmp: string;
let modelDir: string;
let data: string;
let config: LlamaConfig;

beforeAll(async () => {
  tmp = await makeTmpDir('cli-train');
  let weights: { config: LlamaConfig };
  ({ modelDir, data, weights } = await writeCliTrainingFixture(tmp, 8));
  config = weights.config;
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const COMMON = [
  '--method',
  'sft',
  '--quant',
  'q8',
  '--max-len',
  '160',
  '--batch',
  '2',
  '--rank',
  '8',
  '--targets',
  'q_proj,down_proj',
  '--lr',
  '1e-3',
  '--seed',
  '3',
];

it('trains and writes a PEFT adapter, metrics.jsonl and run.json', async () => {
  const out = path.join(tmp, 'run1');
  const r = await nlft('train', '--model', modelDir, '--data', data, '--out', out, '--steps', '2', ...COMMON);
  expect(r.stderr).not.toContain('    at ');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^data {7}.*gsm\.jsonl: 4 records, \d answers truncated to fit --max-len 160$/m);
  expect(r.stdout).toMatch(/^step {4}2\/2 {2}loss \d+\.\d{4} /m);
  expect(r.stdout).toMatch(
    /^memory {5}estimate [\d.]+ MiB: model [\d.]+ MiB, LoRA \+ AdamW [\d.]+ KiB, activations [\d.]+ MiB; a step's records packed, up to \d+ tokens a pass$/m,
  );
  expect(r.stdout).toMatch(/^trained: 2\/2 steps, last loss \d+\.\d{4}, peak [\d.]+ (KiB|MiB); wrote /m);
  const adapter = await readPeftAdapter(new FolderSource(out), config);
  expect(adapter.config).toEqual({ r: 8, alpha: 8, dropout: 0.05, targets: ['q_proj', 'down_proj'] }); // alpha defaults to the rank
  expect(adapter.lora[1].down_proj!.A).toHaveLength(8 * 64);
  expect(adapter.lora[1].down_proj!.B).toHaveLength(32 * 8);
  expect(adapter.lora[0].q_proj!.B.some((v) => v !== 0)).toBe(true); // B starts at zero and was trained
  const metrics = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  expect(metrics.map((m) => m.step)).toEqual([1, 2]);
  for (const m of metrics)
    expect(Object.keys(m).sort()).toEqual([
      'epoch',
      'gradNorm',
      'loss',
      'lr',
      'ms',
      'peakBytes',
      'samples',
      'step',
      'tokens',
      'totalSteps',
    ]);
  const run = JSON.parse(await readFile(path.join(out, 'run.json'), 'utf8'));
  expect(run.method).toBe('sft');
  expect(run.train).toMatchObject({ maxSteps: 2, batch: 2, seed: 3, lr: 1e-3 });
  expect(run.lora).toEqual(adapter.config);
  expect(run.result).toMatchObject({ status: 'done', steps: 2, totalSteps: 2 });
  expect(run.memory.peakBytes).toBeGreaterThan(run.memory.modelBytes);
  expect(run.environment.adapter.vendor + run.environment.adapter.description).not.toBe('');
});

it('an interrupted run resumed with --resume ends with the same adapter as an uninterrupted one', async () => {
  const full = path.join(tmp, 'full');
  expect((await nlft('train', '--model', modelDir, '--data', data, '--out', full, '--epochs', '2', ...COMMON)).code).toBe(0);
  const part = path.join(tmp, 'part');
  const child = spawn('node', [NLFT, 'train', '--model', modelDir, '--data', data, '--out', part, '--epochs', '2', ...COMMON], {
    cwd: ROOT,
    env: CLI_ENV,
  });
  let stdout = '';
  let stderr = '';
  let sent = false;
  child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
  await new Promise<void>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!sent && /^step {4}1\/4/m.test(stdout)) sent = child.kill('SIGINT'); // once: a second Ctrl-C is a hard stop
    });
    child.on('close', () => resolve());
  });
  expect(stdout + stderr).toMatch(/^cancelled \(continue with --resume\): [12]\/4 steps/m);
  const resumed = path.join(tmp, 'resumed');
  const r = await nlft('train', '--model', modelDir, '--data', data, '--out', resumed, '--resume', part, ...COMMON);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^resume {5}.*: step [12], with the checkpoint's training and LoRA settings$/m);
  expect(await readFile(path.join(resumed, 'adapter_model.safetensors'))).toEqual(
    await readFile(path.join(full, 'adapter_model.safetensors')),
  );
});

it('bad input: empty dataset, missing answers, a prompt longer than --max-len, bad options', async () => {
  const empty = path.join(tmp, 'empty.jsonl');
  await writeFile(empty, '\n');
  const noAnswer = path.join(tmp, 'noanswer.jsonl');
  await writeFile(noAnswer, '{"question": "1+1?"}\n{"question": "2+2?", "answer": "4"}\n');
  const base = ['--model', modelDir, '--out', path.join(tmp, 'bad'), '--max-len', '160'];
  const cases: Array<[string[], string]> = [
    [['--data', empty], 'nlft train: empty.jsonl: the file is empty; expected a JSON array of records or JSON Lines (one record per line)'],
    [['--data', noAnswer], 'record 1 (line 1): field "answer": missing'],
    [
      ['--data', data, '--method', 'sft', '--max-len', '60'],
      'record 1 (id #1): its prompt is 105 tokens, which leaves no room for a response within --max-len 60',
    ],
    [['--data', data, '--rank', '6'], 'nlft train: rank: expected a positive multiple of 4 (the GPU kernels need it), found 6'],
    [['--data', data, '--targets', 'lm_head'], 'unknown projection "lm_head"'],
    [['--data', data, '--lr', 'fast'], 'nlft train: lr: expected a positive number, found "fast"'],
    [['--data', path.join(tmp, 'nope.jsonl')], 'nlft train: cannot read the dataset'],
    [['--data', data, '--method', 'nlft'], 'record 1 (line 1): field "output": missing; NLFT training needs the model\'s response'],
    [['--data', data, '--method', 'sft', '--memory-budget', '1'], 'over the memory budget of 1 MiB'],
  ];
  for (const [args, message] of cases) {
    const r = await nlft('train', ...base, ...args);
    expect(r.code, message).not.toBe(0);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toContain('    at ');
  }
});
