/** Judgments for data preparation (src/data/judge.ts): the template judge, and a judge model behind an OpenAI-compatible endpoint (a local mock). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatJudge, JUDGE_SYSTEM, TEMPLATE_JUDGE, type JudgeCase } from '../../src/eval/judge.ts';
import { startMockChat, type MockChat } from '../helpers/mock-chat.ts';

const CASE: JudgeCase = { question: 'Half of 10?', answer: '10 / 2 = 5\n#### 5', output: '10 - 2 = 8\n#### 8', expected: '5', got: '8' };

it('the template judgment says what the grade found', async () => {
  expect(await TEMPLATE_JUDGE.judge(CASE)).toBe(
    "The response's final answer is 8, but the correct answer is 5. The reasoning that leads to it is wrong; check each step of the calculation against the question.",
  );
  expect(await TEMPLATE_JUDGE.judge({ ...CASE, got: null })).toMatch(
    /^The response never states a final number, but the correct answer is 5\./,
  );
});

describe('a judge model at an OpenAI-compatible endpoint', () => {
  let chat: MockChat;
  beforeAll(async () => {
    chat = await startMockChat((body) =>
      body.model === 'refuse' ? 401 : body.model === 'empty' ? '' : `It subtracts instead of dividing (${body.model}).`,
    );
  });
  afterAll(() => chat?.close());

  it('sends the question, the standard answer and the response, and returns the reply text', async () => {
    const judge = chatJudge({ url: chat.url, model: 'judge-1', apiKey: 'sk-test' });
    expect(judge.name).toBe(`judge-1 at ${chat.url}/chat/completions`);
    expect(await judge.judge(CASE)).toBe('It subtracts instead of dividing (judge-1).');
    const req = chat.requests.at(-1)!;
    expect(req.headers.authorization).toBe('Bearer sk-test');
    expect(req.body.model).toBe('judge-1');
    expect(req.body.messages[0]).toEqual({ role: 'system', content: JUDGE_SYSTEM });
    expect(req.body.messages[1].content).toBe(
      "Question:\nHalf of 10?\n\nStandard answer:\n10 / 2 = 5\n#### 5\n\nStudent's response:\n10 - 2 = 8\n#### 8",
    );
  });
  it('errors name the endpoint and what went wrong', async () => {
    const url = `${chat.url}/chat/completions`;
    await expect(chatJudge({ url, model: 'refuse' }).judge(CASE)).rejects.toThrow(`judge ${url}: HTTP 401: {"error": "refused"}`);
    await expect(chatJudge({ url, model: 'empty' }).judge(CASE)).rejects.toThrow(
      `judge ${url}: the reply has no choices[0].message.content text`,
    );
    await expect(chatJudge({ url: 'http://127.0.0.1:9/v1', model: 'x' }).judge(CASE)).rejects.toThrow(
      /^judge http:\/\/127\.0\.0\.1:9\/v1\/chat\/completions: cannot reach it \(.+\)$/,
    );
  });
});
