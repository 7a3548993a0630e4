/**
 * The data-preparation job (src/session/prepare.ts), the one both the CLI and the app's worker run,
 * on a seeded tiny model with the real SmolLM2 tokenizer: every question answered, graded and,
 * when wrong, judged (the template, or a judge endpoint through a fake `fetch`), reported as it is
 * done; a stop signal ends it before the next question; a judge that fails ends it keeping the
 * records done before it, with a message naming the URL and the status.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gradeAnswer } from '../../src/data/dataset.ts';
import { DEFAULT_INSTRUCTION } from '../../src/data/prompt.ts';
import type { TextTokenizer } from '../../src/data/tokenizer.ts';
import { GpuLlama } from '../../src/engine/llama.ts';
import { TEMPLATE_JUDGE } from '../../src/eval/judge.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import { type PreparedItem, type PrepareRequest, runPreparation } from '../../src/session/prepare.ts';
import { testGpu, type TestGpu } from '../helpers/gpu.ts';
import { smollm2Tokenizer } from '../helpers/smollm2.ts';

let g: TestGpu;
let tok: TextTokenizer;
let llama: GpuLlama;
beforeAll(async () => {
  g = await testGpu();
  tok = await smollm2Tokenizer();
  const weights = makeTinyLlama({
    seed: 7,
    vocabSize: 49152,
    hiddenSize: 32,
    intermediateSize: 64,
    numLayers: 1,
    numHeads: 2,
    numKvHeads: 1,
    tie: true,
  });
  llama = GpuLlama.create(g.ops, weights, 'q8');
});
afterAll(() => g?.destroy());

/** Questions whose standard answers a random model will not hit (the last has no number: always wrong). */
const QUESTIONS = [
  { question: '1 + 1?', answer: 'It is 2.\n#### 2' },
  { question: 'Half of 10?', answer: '#### 5' },
  { question: 'Name a colour.', answer: 'blue' },
];

const request = (o: Partial<PrepareRequest> = {}): PrepareRequest => ({
  data: { name: 'qa.json', bytes: new TextEncoder().encode(JSON.stringify(QUESTIONS)) },
  limit: Infinity,
  temperature: 0.6,
  maxNewTokens: 4,
  seed: 3,
  judge: { kind: 'template' },
  ...o,
});

/** A fake `fetch` answering like an OpenAI-compatible endpoint (or with `status` from call `failFrom` on), keeping the calls. */
function fakeEndpoint(failFrom = Infinity, status = 401) {
  const calls: Array<{ url: string; headers: Record<string, string>; body: { model: string; messages: Array<{ content: string }> } }> = [];
  const fetchFn = (async (url: string, init: RequestInit) => {
    calls.push({ url, headers: init.headers as Record<string, string>, body: JSON.parse(init.body as string) });
    if (calls.length >= failFrom) return new Response('{"error": "bad key"}', { status });
    return Response.json({ choices: [{ message: { role: 'assistant', content: ` Wrong step ${calls.length}. ` } }] });
  }) as typeof fetch;
  return { calls, fetchFn };
}

describe('runPreparation', () => {
  it('answers, grades and judges each question with the template, reporting each as it is done', async () => {
    const seen: Array<[PreparedItem, number, number]> = [];
    const r = await runPreparation({ llama, tok, name: 'tiny' }, request(), {
      onItem: (item, done, total) => seen.push([item, done, total]),
    });
    expect(seen.map(([, done, total]) => [done, total])).toEqual([
      [1, 3],
      [2, 3],
      [3, 3],
    ]);
    expect(seen.map(([item]) => item)).toEqual(r.items);
    expect(r).toMatchObject({ total: 3, stopped: false, judgeError: null, judge: TEMPLATE_JUDGE.name, model: 'tiny' });
    for (const [i, item] of r.items.entries()) {
      const { record } = item;
      expect(record).toMatchObject({ id: `#${i + 1}`, input: QUESTIONS[i].question, answer: QUESTIONS[i].answer });
      expect('instruction' in record).toBe(false);
      expect({ expected: item.expected, got: item.got, correct: item.correct }).toEqual(gradeAnswer(record.output, record.answer));
      const judgment = item.correct ? null : await TEMPLATE_JUDGE.judge({ ...QUESTIONS[i], output: record.output, ...item });
      expect(record.judgment).toBe(judgment);
    }
    expect(r.items[2].correct).toBe(false);
    // The same seed gives the same answers; another system text is asked under and written into the records.
    const again = await runPreparation({ llama, tok, name: 'tiny' }, request({ system: DEFAULT_INSTRUCTION }));
    expect(again.items.map((i) => i.record.output)).toEqual(r.items.map((i) => i.record.output));
    const other = await runPreparation({ llama, tok, name: 'tiny' }, request({ system: 'Answer briefly.', limit: 1 }));
    expect(other.items).toHaveLength(1);
    expect(other.items[0].record.instruction).toBe('Answer briefly.');
  });

  it('asks a judge endpoint for the wrong answers, with the key as a bearer token', async () => {
    const { calls, fetchFn } = fakeEndpoint();
    const judge = { kind: 'chat' as const, url: 'http://judge.test/v1/', model: 'judge-1', apiKey: 'sk-secret' };
    const r = await runPreparation({ llama, tok, name: 'tiny' }, request({ judge }), { fetch: fetchFn });
    const wrong = r.items.filter((i) => !i.correct);
    expect(wrong.length).toBeGreaterThan(0);
    expect(calls).toHaveLength(wrong.length);
    expect(r.judge).toBe('judge-1 at http://judge.test/v1/chat/completions');
    expect(wrong.map((i) => i.record.judgment)).toEqual(wrong.map((_, k) => `Wrong step ${k + 1}.`));
    for (const c of calls) {
      expect(c.url).toBe('http://judge.test/v1/chat/completions');
      expect(c.headers.authorization).toBe('Bearer sk-secret');
      expect(c.body.model).toBe('judge-1');
    }
    expect(calls.at(-1)!.body.messages[1].content).toContain(QUESTIONS[2].question);
    expect(JSON.stringify(r)).not.toContain('sk-secret');
  });

  it('keeps the records done before a judge that fails, and names its URL and status', async () => {
    const { calls, fetchFn } = fakeEndpoint(2, 401);
    const judge = { kind: 'chat' as const, url: 'http://judge.test/v1', model: 'judge-1' };
    const r = await runPreparation({ llama, tok, name: 'tiny' }, request({ judge }), { fetch: fetchFn });
    expect(calls).toHaveLength(2);
    expect(calls[0].headers.authorization).toBeUndefined();
    expect(r.judgeError).toBe('judge http://judge.test/v1/chat/completions: HTTP 401: {"error": "bad key"}');
    expect(r.stopped).toBe(false);
    expect(r.items.filter((i) => !i.correct)).toHaveLength(1);
    expect(r.items.length).toBeLessThan(3);
    expect(r.items.every((i) => i.correct === (i.record.judgment === null))).toBe(true);
    const unreachable = fakeEndpoint(1, 500);
    const down = await runPreparation({ llama, tok, name: 'tiny' }, request({ judge }), { fetch: unreachable.fetchFn });
    expect(down.judgeError).toMatch(/^judge http:\/\/judge\.test\/v1\/chat\/completions: HTTP 500/);
  });

  it('stops before the next question when the signal aborts', async () => {
    const abort = new AbortController();
    const r = await runPreparation({ llama, tok, name: 'tiny' }, request(), { signal: abort.signal, onItem: () => abort.abort() });
    expect(r.items).toHaveLength(1);
    expect(r).toMatchObject({ total: 3, stopped: true, judgeError: null });
  });

  it('refuses a judge endpoint without a URL or a model, and bad data, naming what is missing', async () => {
    await expect(runPreparation({ llama, tok, name: 'tiny' }, request({ judge: { kind: 'chat', url: ' ', model: 'm' } }))).rejects.toThrow(
      'judge URL: expected the address of an OpenAI-compatible endpoint, found nothing',
    );
    await expect(
      runPreparation({ llama, tok, name: 'tiny' }, request({ judge: { kind: 'chat', url: 'http://x/v1', model: '' } })),
    ).rejects.toThrow('judge model: expected the model name to ask at http://x/v1, found nothing');
    const bad = { name: 'bad.json', bytes: new TextEncoder().encode('[{"answer": "#### 1"}]') };
    await expect(runPreparation({ llama, tok, name: 'tiny' }, request({ data: bad }))).rejects.toThrow(/bad\.json/);
  });
});
