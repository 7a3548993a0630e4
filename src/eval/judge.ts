/**
 * Judgments of wrong answers for data preparation (docs/method.md §6.3): from a judge model behind an
 * OpenAI-compatible chat endpoint the user configures, or — with none — a template judgment built
 * from the grade (the expected and the given final number).
 */
import { NlftError } from '../errors.ts';

/** A wrong answer to judge. */
export interface JudgeCase {
  question: string;
  answer: string;
  output: string;
  /** Final numbers: the standard answer's and the response's (null when it has none). */
  expected: string | null;
  got: string | null;
}

export interface Judge {
  /** Human-readable name of the judge, for logs and the prepared file's provenance. */
  readonly name: string;
  judge(c: JudgeCase): Promise<string>;
}

/** The judgment written when no judge model is configured: what the grade found. */
export const TEMPLATE_JUDGE: Judge = {
  name: 'template (from the grade)',
  async judge(c) {
    const got = c.got === null ? 'The response never states a final number' : `The response's final answer is ${c.got}`;
    return (
      `${got}, but the correct answer is ${c.expected ?? 'given in the standard answer'}. The ` +
      `reasoning that leads to it is wrong; check each step of the calculation against the question.`
    );
  },
};

/** Our instruction to the judge model (in the spirit of the authors' GPT-4o prompt, in our words). */
export const JUDGE_SYSTEM =
  "You are a careful teacher. You are given a math question, its standard answer and a student's response, which is wrong. " +
  'Explain briefly and precisely what is wrong in the response: the step where it goes wrong and why. Do not write a corrected solution.';

export interface ChatJudgeOptions {
  /** The endpoint's base URL (e.g. https://api.openai.com/v1) or its full /chat/completions URL. */
  url: string;
  model: string;
  apiKey?: string;
  fetch?: typeof fetch;
}

/** A judge model behind an OpenAI-compatible `/chat/completions` endpoint (temperature 0). */
export function chatJudge(o: ChatJudgeOptions): Judge {
  const url = /\/chat\/completions\/?$/.test(o.url) ? o.url : `${o.url.replace(/\/+$/, '')}/chat/completions`;
  return {
    name: `${o.model} at ${url}`,
    async judge(c) {
      const body = {
        model: o.model,
        temperature: 0,
        messages: [
          { role: 'system', content: JUDGE_SYSTEM },
          { role: 'user', content: `Question:\n${c.question}\n\nStandard answer:\n${c.answer}\n\nStudent's response:\n${c.output}` },
        ],
      };
      let res: Response;
      try {
        res = await (o.fetch ?? fetch)(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(o.apiKey ? { authorization: `Bearer ${o.apiKey}` } : {}) },
          body: JSON.stringify(body),
        });
      } catch (e) {
        // A judge failure keeps the records done before it; the host gate's refusal says what it refused.
        const why = e instanceof NlftError ? e.message : `cannot reach it (${(e as Error).message})`;
        throw new NlftError(`judge ${url}: ${why}`, 'judge');
      }
      const text = await res.text();
      if (!res.ok) throw new NlftError(`judge ${url}: HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`, 'judge');
      let content: unknown;
      try {
        content = (JSON.parse(text) as { choices?: Array<{ message?: { content?: unknown } }> }).choices?.[0]?.message?.content;
      } catch {
        throw new NlftError(`judge ${url}: the reply is not JSON`, 'judge');
      }
      if (typeof content !== 'string' || !content.trim())
        throw new NlftError(`judge ${url}: the reply has no choices[0].message.content text`, 'judge');
      return content.trim();
    },
  };
}
