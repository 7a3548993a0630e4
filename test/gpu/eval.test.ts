/**
 * Evaluation (src/eval/accuracy.ts) on a seeded tiny model with the real SmolLM2 tokenizer: each
 * item is the greedy answer `generate` gives for the record's base prompt, graded by its final
 * number against the standard answer's; summaries count right, total and items without an expected
 * number. (A random model's answers are wrong; the grading itself is covered by the final-number
 * tests in dataset.test.ts and the hand-built summary here.)
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { extractFinalNumber, parseDataset } from '../../src/data/dataset.ts';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { generate } from '../../src/engine/generate.ts';
import { GpuLlama } from '../../src/engine/llama.ts';
import { evaluate, summarize, type EvalItem } from '../../src/eval/accuracy.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import { basePrompt } from '../../src/data/prompt.ts';
import { ROOT } from '../helpers/cli.ts';
import { testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
let tok: TextTokenizer;
beforeAll(async () => {
  g = await testGpu();
  const dir = path.join(ROOT, 'public', 'tokenizers', 'smollm2');
  tok = TextTokenizer.fromJson(
    JSON.parse(await readFile(path.join(dir, 'tokenizer.json'), 'utf8')),
    JSON.parse(await readFile(path.join(dir, 'tokenizer_config.json'), 'utf8')),
  );
});
afterAll(() => g?.destroy());

/** A seeded one-layer model in the SmolLM2 vocabulary, q8 on the GPU. */
const tinyModel = (seed: number) =>
  GpuLlama.create(
    g.ops,
    makeTinyLlama({ seed, vocabSize: 49152, hiddenSize: 32, intermediateSize: 64, numLayers: 1, numHeads: 2, numKvHeads: 1, tie: true }),
    'q8',
  );

it('each item is the greedy answer to the base prompt, graded by final number', async () => {
  const model = tinyModel(41);
  const jsonl = [
    '{"question": "1 + 1?", "answer": "It is 2.\\n#### 2"}',
    '{"question": "Half of 10?", "answer": "#### 5"}',
    '{"question": "No number here", "answer": "none"}',
  ].join('\n');
  const records = parseDataset(new TextEncoder().encode(jsonl), 'qa.jsonl').records;
  const done: number[] = [];
  const items = await evaluate(model, tok, records, { maxNewTokens: 5, temperature: 0, seed: 0 }, (_, n) => done.push(n));
  expect(done).toEqual([1, 2, 3]);
  for (const [i, it] of items.entries()) {
    const r = records[i];
    const want = await generate(model, tok.encode(basePrompt(tok, r)), {
      maxNewTokens: 5,
      temperature: 0,
      seed: 0,
      stopIds: tok.eosTokenIds,
    });
    expect(it.tokens).toBe(want.ids.length);
    expect(it.output).toBe(tok.decode(want.reason === 'stop' ? want.ids.slice(0, -1) : want.ids));
    expect(it.expected).toBe(extractFinalNumber(r.answer));
    expect(it.got).toBe(extractFinalNumber(it.output));
    expect(it.correct).toBe(it.expected !== null && it.got === it.expected);
  }
  expect(items.map((i) => i.expected)).toEqual(['2', '5', null]);
  model.destroy();
});

it('records without an instruction are asked under the evaluation system text; an instruction still wins', async () => {
  const model = tinyModel(42);
  const jsonl = ['{"question": "1 + 1?", "answer": "#### 2"}', '{"instruction": "Own rules.", "input": "2 + 2?", "answer": "#### 4"}'].join(
    '\n',
  );
  const records = parseDataset(new TextEncoder().encode(jsonl), 'qa.jsonl').records;
  // Sampled at temperature 1 from a 49152-token random model, so another prompt gives other tokens.
  const o = { maxNewTokens: 6, temperature: 1, seed: 3 };
  const answer = async (prompt: string, index: number) => {
    const r = await generate(model, tok.encode(prompt), { ...o, seed: o.seed + index, stopIds: tok.eosTokenIds });
    return tok.decode(r.reason === 'stop' ? r.ids.slice(0, -1) : r.ids);
  };
  const items = await evaluate(model, tok, records, { ...o, system: 'Answer in French.' });
  const [plain, instructed] = records;
  expect(basePrompt(tok, plain, 'Answer in French.')).toContain('Answer in French.');
  expect(items[0].output).toBe(await answer(basePrompt(tok, plain, 'Answer in French.'), plain.index));
  expect(items[0].output).not.toBe(await answer(basePrompt(tok, plain), plain.index));
  expect(basePrompt(tok, instructed, 'Answer in French.')).toBe(basePrompt(tok, instructed));
  const defaults = await evaluate(model, tok, records, o);
  expect(items[1]).toEqual(defaults[1]);
  model.destroy();
});

it('summaries count right answers, the total and answers without a final number', () => {
  const item = (correct: boolean, expected: string | null): EvalItem => ({
    index: 1,
    id: 'x',
    expected,
    got: correct ? expected : null,
    correct,
    output: '',
    tokens: 1,
    ended: 'stop',
  });
  expect(summarize([item(true, '3'), item(false, '4'), item(false, null), item(true, '1')])).toEqual({
    correct: 2,
    total: 4,
    accuracy: 0.5,
    withoutExpected: 1,
  });
  expect(summarize([])).toEqual({ correct: 0, total: 0, accuracy: 0, withoutExpected: 0 });
});
