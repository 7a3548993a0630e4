/**
 * The prompt a response is scored under: raw text, or a chat (optional system + user turn) built
 * with the model's chat template and its generation prompt. The response is tokenized on its own
 * and appended, so its ids never merge with the prompt's (nlft.md §2).
 */
import { NlftError } from '../errors.ts';
import type { ChatMessage, TextTokenizer } from './tokenizer.ts';

export interface ScoringInput {
  promptText: string;
  promptIds: number[];
  responseIds: number[];
}

export function scoringInput(tok: TextTokenizer, prompt: string, response: string, opts: { chat: boolean; system?: string }): ScoringInput {
  const messages: ChatMessage[] = [...(opts.system !== undefined ? [{ role: 'system' as const, content: opts.system }] : []), { role: 'user', content: prompt }];
  const promptText = opts.chat ? tok.applyChatTemplate(messages, { addGenerationPrompt: true }) : prompt;
  const promptIds = tok.encode(promptText);
  const responseIds = tok.encode(response);
  if (promptIds.length === 0) throw new NlftError('the prompt is empty: a response is scored given a prompt of at least one token', 'empty-prompt');
  if (responseIds.length === 0) throw new NlftError('the response is empty: there is nothing to score', 'empty-response');
  return { promptText, promptIds, responseIds };
}
