/**
 * Training sequences from dataset records: the prompt built with the model's chat template (the
 * base view: system = the record's instruction, user = its input, generation prompt) and the
 * response tokenized on its own and appended (nlft.md §2), truncated to `maxLen` tokens.
 */
import type { DatasetRecord } from '../data/dataset.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import { NlftError } from '../errors.ts';

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

/** The base-view prompt of a record, as text. */
export function basePrompt(tok: TextTokenizer, r: DatasetRecord): string {
  return tok.applyChatTemplate(
    [
      { role: 'system', content: r.instruction ?? DEFAULT_INSTRUCTION },
      { role: 'user', content: r.input },
    ],
    { addGenerationPrompt: true },
  );
}

/**
 * SFT samples: the standard `answer` given the base prompt, followed by the end-of-sequence token
 * (so the model learns to stop). Responses longer than fits in `maxLen` are truncated at the end;
 * a record whose prompt alone leaves no room for a response token is refused with its index.
 */
export function sftSamples(
  records: readonly DatasetRecord[],
  tok: TextTokenizer,
  maxLen: number,
): { samples: TrainSample[]; truncated: number } {
  if (records.length === 0) throw new NlftError('the dataset has no records: nothing to train on', 'dataset');
  const eos = tok.eosTokenIds[0];
  let truncated = 0;
  const samples = records.map((r): TrainSample => {
    const promptIds = tok.encode(basePrompt(tok, r));
    const full = [...tok.encode(r.answer), eos];
    const room = maxLen - promptIds.length + 1; // the last response token is predicted, not fed
    if (room < 1) {
      throw new NlftError(
        `record ${r.index} (id ${r.id}): its prompt is ${promptIds.length} tokens, which leaves no room for a response within --max-len ${maxLen}`,
        'too-long',
      );
    }
    const responseIds = full.slice(0, room);
    if (responseIds.length < full.length) truncated++;
    return { id: r.id, index: r.index, promptIds, responseIds, truncatedBy: full.length - responseIds.length };
  });
  return { samples, truncated };
}
