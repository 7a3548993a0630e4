/**
 * The `nlft` CLI end to end (a child process, as a user runs it): info and logprobs on a seeded
 * tiny Llama written with the real SmolLM2 tokenizer; log-probs checked against the tfjs reference;
 * bad input gives a one-line message and a non-zero exit, never a stack trace.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { makeTmpDir, writeTinyLlamaFolder } from '../fixtures/tiny-llama.ts';
import { nlft, nlftWithEnv, ROOT } from '../helpers/cli.ts';
import { startMockHub } from '../helpers/mock-hub.ts';
import { promptInput } from '../../src/data/prompt.ts';
import { gradeAnswer, parseDataset } from '../../src/data/dataset.ts';
import { startMockChat } from '../helpers/mock-chat.ts';
import { generate } from '../../src/engine/generate.ts';
import { GpuLlama } from '../../src/engine/llama.ts';
import { referenceLogProbs } from '../reference/llama-tf.ts';
import { maxViolation, testGpu } from '../helpers/gpu.ts';
import type { LlamaWeights } from '../../src/model/weights.ts';
import { peftAdapterFiles } from '../../src/export/peft.ts';
import { initLora, type LoraConfig } from '../../src/model/lora.ts';
import { writePeftAdapter } from '../../src/node/adapter-files.ts';
import { Rng } from '../../src/util/rng.ts';

const TOKENIZER_DIR = path.join(ROOT, 'public', 'tokenizers', 'smollm2');
let tmp: string;
let modelDir: string;
let weights: LlamaWeights;

beforeAll(async () => {
  tmp = await makeTmpDir('cli');
  modelDir = path.join(tmp, 'model');
  ({ weights } = await writeTinyLlamaFolder(modelDir, {
    seed: 3,
    vocabSize: 49152,
    hiddenSize: 64,
    intermediateSize: 96,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    tie: true,
    ropeScaling: true,
    dtype: 'F32',
    tokenizerDir: TOKENIZER_DIR,
  }));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

it('nlft info prints the shape, parameter count, sizes and the adapter', async () => {
  const r = await nlft('info', '--model', modelDir);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain('2 layers, hidden 64, ffn 96, heads 4 (kv 2, dim 16), vocab 49152');
  expect(r.stdout).toMatch(/parameters 3,\d{3},\d{3}/);
  expect(r.stdout).toMatch(/adapter {4}\S+/);
});

for (const chat of [false, true]) {
  it(`nlft logprobs ${chat ? '--chat' : '(raw prompt)'} --out writes ids, token texts and log-probs matching the reference`, async () => {
    const out = path.join(tmp, `lp-${chat}.json`);
    const prompt = 'Natalia sold clips to 48 of her friends. How many?';
    const response = ' She sold 48/2 = 24 clips.\n#### 24';
    const r = await nlft(
      'logprobs',
      '--model',
      modelDir,
      '--quant',
      'f32',
      '--prompt',
      prompt,
      '--response',
      response,
      '--out',
      out,
      ...(chat ? ['--chat'] : []),
    );
    expect(r.stderr).not.toContain('    at ');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^wrote .*lp-.*\.json: \d+ response tokens, sum log p = -\d+\.\d{4}/);
    const res = JSON.parse(await readFile(out, 'utf8'));
    const tok = TextTokenizer.fromJson(
      JSON.parse(await readFile(path.join(TOKENIZER_DIR, 'tokenizer.json'), 'utf8')),
      JSON.parse(await readFile(path.join(TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8')),
    );
    const promptText = chat ? tok.applyChatTemplate([{ role: 'user', content: prompt }], { addGenerationPrompt: true }) : prompt;
    expect(res.prompt_ids).toEqual(tok.encode(promptText));
    expect(res.response_ids).toEqual(tok.encode(response)); // tokenized on its own, then concatenated
    expect(res.response_tokens.join('')).toBe(response);
    if (chat) expect(res.prompt_text).toMatch(/<\|im_start\|>user\nNatalia.*<\|im_end\|>\n<\|im_start\|>assistant\n$/s);
    const ids = [...res.prompt_ids, ...res.response_ids];
    const targets = ids.map((_, i) => (i >= res.prompt_ids.length - 1 && i < ids.length - 1 ? ids[i + 1] : -1));
    const ref = Array.from(referenceLogProbs(weights, ids, targets)).filter((v) => !Number.isNaN(v));
    expect(maxViolation(res.logprobs, ref, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
  });
}

it('--model takes a Hub id: downloaded from $HF_ENDPOINT once, then read from the cache', async () => {
  const hub = await startMockHub({ 'test-org/tiny@main': modelDir });
  try {
    const env = { HF_ENDPOINT: hub.url };
    const r = await nlftWithEnv(env, 'info', '--model', 'test-org/tiny');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^download {3}config\.json \([\d.]+ \w?B\) from hub:test-org\/tiny@main$/m);
    expect(r.stdout).toMatch(/^download {3}model\.safetensors \([\d.]+ MiB\) from hub:test-org\/tiny@main$/m);
    expect(r.stdout).toContain('2 layers, hidden 64, ffn 96, heads 4 (kv 2, dim 16), vocab 49152');
    const again = await nlftWithEnv(env, 'info', '--model', 'test-org/tiny');
    expect(again.code).toBe(0);
    expect(again.stdout).not.toContain('download');
    expect(hub.gets.get('test-org/tiny/main/model.safetensors')).toBe(1);
    const missing = await nlftWithEnv(env, 'info', '--model', 'test-org/absent@v2');
    expect(missing.code).not.toBe(0);
    expect(missing.stderr.trim()).toBe(
      `nlft info: config.json: not found in hub:test-org/absent@v2 (${hub.url}/test-org/absent/resolve/v2/config.json answered 404)`,
    );
    const neither = await nlft('info', '--model', 'no-such-folder');
    expect(neither.stderr.trim()).toBe(
      'nlft info: --model no-such-folder: no such folder or .gguf file, and not a Hub id (org/name or org/name@revision)',
    );
  } finally {
    await hub.close();
  }
});

it('nlft generate: greedy text equal to the engine API, a summary line, --out JSON, bad options', async () => {
  const file = path.join(tmp, 'gen.json');
  const r = await nlft(
    'generate',
    '--model',
    modelDir,
    '--prompt',
    'Name a colour.',
    '--chat',
    '--max-new',
    '6',
    '--quant',
    'f32',
    '--out',
    file,
  );
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(
    /^wrote .*gen\.json: \d tokens in [\d.]+ s \([\d.]+ tokens\/s, prefill included\), ended by (--max-new 6|the end-of-sequence token) \(f32, greedy, .+\)$/m,
  );
  const json = JSON.parse(await readFile(file, 'utf8'));
  const tok = TextTokenizer.fromJson(
    JSON.parse(await readFile(path.join(modelDir, 'tokenizer.json'), 'utf8')),
    JSON.parse(await readFile(path.join(modelDir, 'tokenizer_config.json'), 'utf8')),
  );
  const { promptIds } = promptInput(tok, 'Name a colour.', { chat: true });
  expect(json.prompt_ids).toEqual(promptIds);
  const g = await testGpu();
  try {
    const model = GpuLlama.create(g.ops, weights, 'f32');
    const want = await generate(model, promptIds, { maxNewTokens: 6, temperature: 0, seed: 0, stopIds: tok.eosTokenIds });
    expect(json.ids).toEqual(want.ids);
    expect(json.reason).toBe(want.reason);
  } finally {
    g.destroy();
  }
  const printed = await nlft('generate', '--model', modelDir, '--prompt', 'Hi', '--max-new', '3', '--temperature', '0.7', '--seed', '4');
  expect(printed.code).toBe(0);
  expect(printed.stdout).toMatch(/\n-- \d tokens in .+ \(q8, temperature 0\.7, seed 4, .+\)\n$/);
  const bad = await nlft('generate', '--model', modelDir, '--prompt', 'Hi', '--temperature=-1');
  expect(bad.code).not.toBe(0);
  expect(bad.stderr.trim()).toBe('nlft generate: --temperature must be a number >= 0 (0 = greedy) (got "-1")');
});

it('nlft eval prints a line per item and the accuracy with its counts; --limit and --out', async () => {
  const data = path.join(tmp, 'qa.jsonl');
  await writeFile(
    data,
    [
      '{"question": "1 + 1?", "answer": "#### 2"}',
      '{"question": "2 + 2?", "answer": "#### 4"}',
      '{"question": "3 + 3?", "answer": "#### 6"}',
    ].join('\n'),
  );
  const file = path.join(tmp, 'eval.json');
  const r = await nlft('eval', '--model', modelDir, '--data', data, '--limit', '2', '--max-new', '3', '--out', file);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^item {4}1\/2 {2}(right|wrong) {2}expected 2, got \S+ {2}\(\d tokens, (stop|length)\)$/m);
  expect(r.stdout).toMatch(/^item {4}2\/2 {2}(right|wrong) {2}expected 4, got \S+/m);
  expect(r.stdout).toMatch(/^accuracy [0-2]\/2 = \d+\.\d{2}% \(q8, greedy, max-new 3, .+\)$/m);
  const json = JSON.parse(await readFile(file, 'utf8'));
  expect(json.items).toHaveLength(2);
  expect(json.summary.total).toBe(2);
  expect(json.summary.correct).toBe(json.items.filter((i: { correct: boolean }) => i.correct).length);
  const bad = await nlft('eval', '--model', modelDir, '--data', data, '--limit', '0');
  expect(bad.stderr.trim()).toBe('nlft eval: --limit must be a positive integer (got "0")');
});

it('nlft prepare: the model answers, wrong answers are judged (template or a judge endpoint), the file re-imports as NLFT records', async () => {
  const data = path.join(tmp, 'gsm.jsonl');
  await writeFile(data, ['{"question": "1 + 1?", "answer": "#### 2"}', '{"question": "2 + 2?", "answer": "#### 4"}'].join('\n'));
  const file = path.join(tmp, 'nlft.json');
  const r = await nlft('prepare', '--model', modelDir, '--data', data, '--out', file, '--max-new', '4', '--seed', '3');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^record {4}1\/2 {2}(right|wrong) {2}expected 2, got \S+/m);
  expect(r.stdout).toMatch(
    /^prepared 2 records: \d right, \d wrong with judgments from template \(from the grade\); wrote .*nlft\.json \(q8, temperature 0\.6, seed 3\)$/m,
  );
  const prepared = JSON.parse(await readFile(file, 'utf8'));
  expect(prepared.map((x: { input: string }) => x.input)).toEqual(['1 + 1?', '2 + 2?']);
  for (const x of prepared) {
    expect(Object.keys(x).sort()).toEqual(['answer', 'id', 'input', 'judgment', 'output']);
    expect(x.judgment === null).toBe(gradeAnswer(x.output, x.answer).correct);
  }
  // With a judge endpoint, wrong answers carry its judgment; the file trains as NLFT data.
  const chat = await startMockChat(() => 'The arithmetic is wrong.');
  try {
    const judged = path.join(tmp, 'judged.json');
    const j = await nlft(
      'prepare',
      '--model',
      modelDir,
      '--data',
      data,
      '--out',
      judged,
      '--max-new',
      '4',
      '--judge-url',
      chat.url,
      '--judge-model',
      'mock-judge',
    );
    expect(j.code).toBe(0);
    const recs = JSON.parse(await readFile(judged, 'utf8'));
    const wrong = recs.filter((x: { judgment: string | null }) => x.judgment !== null);
    expect(wrong.every((x: { judgment: string }) => x.judgment === 'The arithmetic is wrong.')).toBe(true);
    expect(chat.requests).toHaveLength(wrong.length);
    const nonEmpty = recs.filter((x: { output: string }) => x.output.trim() !== '');
    if (nonEmpty.length > 0) {
      const back = parseDataset(new TextEncoder().encode(JSON.stringify(nonEmpty)), 'judged.json', { requireOutput: true }).records;
      expect(back.map((x) => x.polarity)).toEqual(
        nonEmpty.map((x: { judgment: string | null }) => (x.judgment === null ? 'positive' : 'negative')),
      );
    }
  } finally {
    await chat.close();
  }
  const bad = await nlft('prepare', '--model', modelDir, '--data', data, '--out', file, '--judge-url', 'http://x');
  expect(bad.stderr.trim()).toBe(
    'nlft prepare: --judge-url and --judge-model go together (an OpenAI-compatible endpoint and its model name)',
  );
});

it('prints the per-token table without --out', async () => {
  const r = await nlft('logprobs', '--model', modelDir, '--prompt', 'Q: 2+2?', '--response', ' 4', '--quant', 'q4');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^ {2}0 +\d+ {2}" " +-\d+\.\d{5}$/m);
  expect(r.stdout).toMatch(/2 response tokens, sum log p = -\d+\.\d{4} \(q4, /);
});

it('bad input: clear one-line messages, non-zero exit, no stack trace', async () => {
  const cases: Array<[string[], string]> = [
    [['logprobs', '--prompt', 'x', '--response', 'y'], 'nlft logprobs: --model is required'],
    [
      ['logprobs', '--model', modelDir, '--prompt', 'x', '--response', 'y', '--quant', 'q3'],
      'nlft logprobs: --quant must be f32, q8 or q4 (got "q3")',
    ],
    [['logprobs', '--model', modelDir, '--prompt', 'x', '--response', 'y', '--bogus'], "nlft logprobs: Unknown option '--bogus'"],
    [
      ['info', '--model', path.join(tmp, 'nope')],
      `nlft info: --model ${path.join(tmp, 'nope')}: no such folder or .gguf file, and not a Hub id (org/name or org/name@revision)`,
    ],
    [['info', '--model', tmp], `nlft info: config.json: not found in ${tmp}`],
    [['frobnicate'], 'nlft: unknown command "frobnicate"'],
  ];
  for (const [args, message] of cases) {
    const r = await nlft(...args);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toContain('    at ');
  }
  // A model folder with no tokenizer
  const bare = path.join(tmp, 'bare');
  await writeTinyLlamaFolder(bare, {
    seed: 4,
    vocabSize: 64,
    hiddenSize: 32,
    intermediateSize: 32,
    numLayers: 1,
    numHeads: 2,
    numKvHeads: 1,
    tie: true,
    dtype: 'F32',
  });
  const r = await nlft('logprobs', '--model', bare, '--prompt', 'x', '--response', 'y');
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`tokenizer.json: not found in ${bare}; logprobs needs the model's tokenizer`);
  // A truncated weights file
  await writeFile(path.join(bare, 'model.safetensors'), new Uint8Array([1, 2, 3]));
  const t = await nlft('info', '--model', bare);
  expect(t.code).toBe(1);
  expect(t.stderr).toMatch(/nlft info: model\.safetensors.*/);
  expect(t.stderr).not.toContain('    at ');
});

it('nlft logprobs --adapter scores with a PEFT LoRA adapter, matching the reference; a bad adapter exits 1', async () => {
  const c: LoraConfig = {
    r: 8,
    alpha: 16,
    dropout: 0,
    targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  };
  const lora = initLora(weights.config, c, 21);
  const rng = new Rng(22);
  for (const layer of lora) for (const f of Object.values(layer)) f!.B.forEach((_, i, B) => (B[i] = 0.2 * rng.normal()));
  const adapterDir = path.join(tmp, 'adapter');
  await writePeftAdapter(adapterDir, peftAdapterFiles(lora, c, { baseModel: modelDir }));

  const args = ['logprobs', '--model', modelDir, '--quant', 'f32', '--prompt', 'Q: 3+4?', '--response', ' 3+4 = 7\n#### 7'];
  const withOut = path.join(tmp, 'lp-lora.json');
  const baseOut = path.join(tmp, 'lp-base.json');
  const r = await nlft(...args, '--adapter', adapterDir, '--out', withOut);
  expect(r.stderr).not.toContain('    at ');
  expect(r.code).toBe(0);
  expect(r.stdout).toContain(`(f32, LoRA ${adapterDir} (r 8, alpha 16, q_proj k_proj v_proj o_proj gate_proj up_proj down_proj), `);
  expect((await nlft(...args, '--out', baseOut)).code).toBe(0);
  const res = JSON.parse(await readFile(withOut, 'utf8'));
  const base = JSON.parse(await readFile(baseOut, 'utf8'));
  expect(res.lora_adapter).toBe(adapterDir);
  expect(base.lora_adapter).toBeNull();
  const ids = [...res.prompt_ids, ...res.response_ids];
  const targets = ids.map((_, i) => (i >= res.prompt_ids.length - 1 && i < ids.length - 1 ? ids[i + 1] : -1));
  const ref = Array.from(referenceLogProbs(weights, ids, targets, { lora })).filter((v) => !Number.isNaN(v));
  expect(maxViolation(res.logprobs, ref, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
  // The adapter really changes the scores, far beyond the tolerance.
  expect(maxViolation(base.logprobs, ref, 1e-4, 1e-5)).toBeGreaterThan(100);

  // A bad adapter: one made for a model of another width.
  const otherModel = { ...weights.config, hiddenSize: 32, headDim: 8 };
  const wrongDir = path.join(tmp, 'adapter-wrong');
  await writePeftAdapter(wrongDir, peftAdapterFiles(initLora(otherModel, c, 1), c, { baseModel: 'other' }));
  const bad = await nlft(...args, '--adapter', wrongDir);
  expect(bad.code).toBe(1);
  expect(bad.stderr.trim()).toBe(
    'nlft logprobs: adapter_model.safetensors (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight): expected shape [8, 64] (r 8), found [8, 32]',
  );
  const missing = await nlft(...args, '--adapter', path.join(tmp, 'no-adapter'));
  expect(missing.code).toBe(1);
  expect(missing.stderr.trim()).toBe(`nlft logprobs: adapter_config.json: not found in ${path.join(tmp, 'no-adapter')}`);
});
