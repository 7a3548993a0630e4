/**
 * The prompt a response is scored under: raw text, or a chat (optional system + user turn) built
 * with the model's chat template and its generation prompt. The response is tokenized on its own
 * and appended, so its ids never merge with the prompt's (docs/method.md §2).
 */
import { NlftError } from '../errors.ts';
import type { DatasetRecord } from './dataset.ts';
import type { ChatMessage, TextTokenizer } from './tokenizer.ts';

export interface ScoringInput {
  promptText: string;
  promptIds: number[];
  responseIds: number[];
}

/** The prompt as the model reads it: the raw text, or with `chat` a user turn (after an optional system turn) and the generation prompt. */
export function promptInput(
  tok: TextTokenizer,
  prompt: string,
  opts: { chat: boolean; system?: string },
): { promptText: string; promptIds: number[] } {
  const messages: ChatMessage[] = [
    ...(opts.system !== undefined ? [{ role: 'system' as const, content: opts.system }] : []),
    { role: 'user', content: prompt },
  ];
  const promptText = opts.chat ? tok.applyChatTemplate(messages, { addGenerationPrompt: true }) : prompt;
  return { promptText, promptIds: tok.encode(promptText) };
}

export function scoringInput(tok: TextTokenizer, prompt: string, response: string, opts: { chat: boolean; system?: string }): ScoringInput {
  const { promptText, promptIds } = promptInput(tok, prompt, opts);
  const responseIds = tok.encode(response);
  if (promptIds.length === 0)
    throw new NlftError('the prompt is empty: a response is scored given a prompt of at least one token', 'empty-prompt');
  if (responseIds.length === 0) throw new NlftError('the response is empty: there is nothing to score', 'empty-response');
  return { promptText, promptIds, responseIds };
}

/** The system text of the base view when a record has no `instruction`. */
export const DEFAULT_INSTRUCTION = "Solve the problem step by step. End with the final answer on its own line, as '#### <number>'.";

/** One sequence to train on: the model reads prompt + response[:-1] and predicts every response token. */
export interface TrainSample {
  /** The record's id and 1-based index in its file. */
  id: string;
  index: number;
  promptIds: number[];
  responseIds: number[];
  /** Response tokens cut to fit `maxLen`. */
  truncatedBy: number;
}

/** The model input of a sample: ids, the positions scored and their targets. */
export function sequenceOf(s: TrainSample): { ids: number[]; rows: number[]; targets: number[] } {
  const P = s.promptIds.length;
  return {
    ids: [...s.promptIds, ...s.responseIds.slice(0, -1)],
    rows: s.responseIds.map((_, i) => P + i - 1),
    targets: s.responseIds,
  };
}

/** The base-view prompt of a record, as text: its `instruction`, else `system`, as the system turn. */
export function basePrompt(tok: TextTokenizer, r: DatasetRecord, system: string = DEFAULT_INSTRUCTION): string {
  return tok.applyChatTemplate(
    [
      { role: 'system', content: r.instruction ?? system },
      { role: 'user', content: r.input },
    ],
    { addGenerationPrompt: true },
  );
}
