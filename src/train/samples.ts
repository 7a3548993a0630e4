/**
 * Training sequences from dataset records: the prompt built with the model's chat template (the
 * base view: system = the record's instruction, user = its input, generation prompt) and the
 * response tokenized on its own and appended (docs/method.md §2), truncated to `maxLen` tokens.
 */
import type { DatasetRecord } from '../data/dataset.ts';
import { basePrompt, type TrainSample } from '../data/prompt.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import { NlftError } from '../errors.ts';

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
  const samples = records.map((r) => answerSample(r, tok.encode(basePrompt(tok, r)), tok, maxLen));
  return { samples, truncated: samples.filter((s) => s.truncatedBy > 0).length };
}

/**
 * The standard `answer` of a record followed by the end-of-sequence token, given the prompt
 * `promptIds`, cut at the end to fit `maxLen` (SFT's sample; NLFT's anchor, docs/method.md §3).
 *
 * @throws NlftError ('too-long') naming the record when the prompt leaves no room for a response token
 */
export function answerSample(r: DatasetRecord, promptIds: number[], tok: TextTokenizer, maxLen: number): TrainSample {
  const full = [...tok.encode(r.answer), tok.eosTokenIds[0]];
  const room = maxLen - promptIds.length + 1; // the last response token is predicted, not fed
  if (room < 1) {
    throw new NlftError(
      `record ${r.index} (id ${r.id}): its prompt is ${promptIds.length} tokens, which leaves no room for a response within --max-len ${maxLen}`,
      'too-long',
    );
  }
  const responseIds = full.slice(0, room);
  return { id: r.id, index: r.index, promptIds, responseIds, truncatedBy: full.length - responseIds.length };
}
