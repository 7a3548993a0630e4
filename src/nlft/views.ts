/**
 * The three views of one response (docs/method.md §2). Each view's prompt is built with the model's chat
 * template (system + user, generation prompt) and tokenized on its own; the response (the record's
 * `output`) is tokenized once and appended to every prompt, so the response ids are the same ids in
 * every view (tokenizing prompt + response as one string could merge tokens across the boundary).
 */
import type { DatasetRecord } from '../data/dataset.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import { NlftError } from '../errors.ts';
import { sequenceOf } from '../data/prompt.ts';
import { fillField, type NlftTemplates } from './templates.ts';

/** Names of the views; the base view is the one trained. */
export type ViewName = 'base' | 'standard' | 'judge';

/** The rendered prompt texts of a record's views (chat template applied, ending with the generation prompt). */
export interface ViewPrompts {
  base: string;
  standard: string;
  /** Null for a positive record. */
  judge: string | null;
}

/** Token ids of a record's views: one prompt per view, and the response they share. */
export interface NlftViews {
  base: number[];
  standard: number[];
  /** Null for a positive record: only negatives are scored under the judge view. */
  judge: number[] | null;
  /** The response ids, identical in all views. */
  response: number[];
}

export interface BuildViewsOptions {
  /** Longest model input: every view's prompt + response - 1 (the last response token is predicted, not fed). */
  maxLen: number;
  /** Append the tokenizer's end-of-sequence token to the response (before truncation); default false. */
  appendEos?: boolean;
}

/** "record 3 (id add-2)" for messages. */
function recordName(r: DatasetRecord): string {
  return `record ${r.index} (id ${r.id})`;
}

/**
 * The prompt texts of a record's views. The base view's system text is the record's instruction,
 * else `templates.baseSystem`; `{instruction}` in the other templates is that same text. The judge
 * view exists for negative records only. Throws TemplateError naming the field of a bad template.
 */
export function viewPrompts(tok: TextTokenizer, record: DatasetRecord, templates: NlftTemplates): ViewPrompts {
  const instruction = record.instruction ?? fillField(templates, 'baseSystem', {});
  const values = { instruction, input: record.input, answer: record.answer };
  const chat = (system: string, user: string): string =>
    tok.applyChatTemplate(
      [
        { role: 'system', content: system },
        { role: 'user', content: user },
      ],
      { addGenerationPrompt: true },
    );
  const negative = record.polarity === 'negative' && record.judgment !== null;
  const judgeValues = { ...values, judgment: record.judgment ?? '' };
  return {
    base: chat(instruction, record.input),
    standard: chat(fillField(templates, 'standard.system', values), fillField(templates, 'standard.user', values)),
    judge: negative ? chat(fillField(templates, 'judge.system', judgeValues), fillField(templates, 'judge.user', judgeValues)) : null,
  };
}

/**
 * Token ids of a record's views. The response is `tok.encode(record.output)` (plus the EOS id with
 * `appendEos`), cut at the end so that the longest view fits `maxLen`; `truncatedBy` counts the
 * tokens cut. Throws NlftError naming the record when it has no output ('dataset') or when its
 * longest prompt leaves no room for one response token ('too-long', naming that view).
 */
export function buildViews(
  tok: TextTokenizer,
  record: DatasetRecord,
  templates: NlftTemplates,
  opts: BuildViewsOptions,
): NlftViews & { truncatedBy: number } {
  const { maxLen } = opts;
  if (!Number.isInteger(maxLen) || maxLen < 1) throw new RangeError(`maxLen must be a positive integer, got ${maxLen}`);
  if (record.output === null) {
    throw new NlftError(
      `${recordName(record)}: has no output; NLFT scores the model's own response to each question, so every record needs one (generate the outputs first)`,
      'dataset',
    );
  }
  const full = tok.encode(record.output);
  if (opts.appendEos) full.push(tok.eosTokenIds[0]);
  if (full.length === 0) throw new NlftError(`${recordName(record)}: its output has no tokens`, 'dataset');

  const prompts = viewPrompts(tok, record, templates);
  const base = tok.encode(prompts.base);
  const standard = tok.encode(prompts.standard);
  const judge = prompts.judge === null ? null : tok.encode(prompts.judge);

  let longest: { name: ViewName; length: number } = { name: 'base', length: base.length };
  if (standard.length > longest.length) longest = { name: 'standard', length: standard.length };
  if (judge !== null && judge.length > longest.length) longest = { name: 'judge', length: judge.length };
  const room = maxLen - longest.length + 1;
  if (room < 1) {
    throw new NlftError(
      `${recordName(record)}: its ${longest.name} prompt is ${longest.length} tokens, which leaves no room for a response within --max-len ${maxLen}`,
      'too-long',
    );
  }
  const response = full.slice(0, room);
  return { base, standard, judge, response, truncatedBy: full.length - response.length };
}

/** The model input of one view: ids (prompt + response[:-1]), the positions scored and their targets. */
export function viewSequence(
  promptIds: readonly number[],
  responseIds: readonly number[],
): { ids: number[]; rows: number[]; targets: number[] } {
  return sequenceOf({ id: '', index: 0, promptIds: [...promptIds], responseIds: [...responseIds], truncatedBy: 0 });
}
