/**
 * Evaluation (docs/method.md §7): the model answers each question from the base prompt (the chat template
 * with the record's instruction, else the evaluation's system text, as the system turn), greedily or at a temperature;
 * the final number of its answer (`#### N`, else the last number; commas stripped) is compared with
 * the standard answer's. Accuracy is reported with its counts.
 */
import { type DatasetRecord, gradeAnswer } from '../data/dataset.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import { generate } from '../engine/generate.ts';
import type { GpuLlama } from '../engine/llama.ts';
import { NlftError } from '../errors.ts';
import { basePrompt } from '../data/prompt.ts';

export interface EvalOptions {
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  seed: number;
  /**
   * System text of records without an `instruction` (absent: `DEFAULT_INSTRUCTION`); set it to the
   * text the model was trained with (docs/method.md §7).
   */
  system?: string;
  /** Ends the evaluation before the next question (the items done so far are reported). */
  signal?: AbortSignal;
  /** Called after each answer; throws to end the evaluation (the engine's `ctx.check`: a lost device or a refused command). */
  check?: () => void;
}

/** One question as the model answered it. */
export interface EvalItem {
  index: number;
  id: string;
  /** The standard answer's final number (null when it has none: the item counts as wrong). */
  expected: string | null;
  /** The final number of the model's answer, or null when it wrote none. */
  got: string | null;
  correct: boolean;
  output: string;
  tokens: number;
  /** How generation ended (see `Generated.reason`). */
  ended: 'stop' | 'length' | 'context' | 'cancelled';
}

export interface EvalSummary {
  correct: number;
  total: number;
  accuracy: number;
  /** Items whose standard answer has no final number (they count as wrong). */
  withoutExpected: number;
}

export function summarize(items: readonly EvalItem[]): EvalSummary {
  const correct = items.filter((i) => i.correct).length;
  return {
    correct,
    total: items.length,
    accuracy: items.length ? correct / items.length : 0,
    withoutExpected: items.filter((i) => i.expected === null).length,
  };
}

/** A record's question answered from its base prompt and graded by the final number. */
export interface GradedAnswer {
  output: string;
  tokens: number;
  ended: EvalItem['ended'];
  expected: string | null;
  got: string | null;
  correct: boolean;
}

/**
 * The model answers one record from its base prompt (`o.system` for a record without an instruction; seed `o.seed + r.index`, so a record's answer
 * does not depend on which others run with it); the answer is graded by its final number.
 */
export async function answerAndGrade(model: GpuLlama, tok: TextTokenizer, r: DatasetRecord, o: EvalOptions): Promise<GradedAnswer> {
  const g = await generate(model, tok.encode(basePrompt(tok, r, o.system)), {
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    seed: o.seed + r.index,
    stopIds: tok.eosTokenIds,
    signal: o.signal,
  });
  const output = tok.decode(g.reason === 'stop' ? g.ids.slice(0, -1) : g.ids);
  return { output, tokens: g.ids.length, ended: g.reason, ...gradeAnswer(output, r.answer) };
}

/** Answer every record (in order) and grade it; `onItem` gets each graded item as it is done. */
export async function evaluate(
  model: GpuLlama,
  tok: TextTokenizer,
  records: readonly DatasetRecord[],
  o: EvalOptions,
  onItem?: (item: EvalItem, done: number) => void,
): Promise<EvalItem[]> {
  if (records.length === 0) throw new NlftError('the dataset has no records: nothing to evaluate', 'dataset');
  const items: EvalItem[] = [];
  for (const r of records) {
    if (o.signal?.aborted) break;
    const item: EvalItem = { index: r.index, id: r.id, ...(await answerAndGrade(model, tok, r, o)) };
    o.check?.();
    items.push(item);
    onItem?.(item, items.length);
  }
  return items;
}

/**
 * The system text a training set's base prompts mostly had — each record's `instruction`, else
 * `fallback` (the templates' base text, or `DEFAULT_INSTRUCTION` for SFT) — the one to evaluate the
 * trained model with (docs/method.md §7). A tie goes to the text met first.
 */
export function trainedSystemText(records: readonly Pick<DatasetRecord, 'instruction'>[], fallback: string): string {
  const counts = new Map<string, number>();
  let best = fallback;
  let bestCount = 0;
  for (const r of records) {
    const text = r.instruction ?? fallback;
    const n = (counts.get(text) ?? 0) + 1;
    counts.set(text, n);
    if (n > bestCount) [best, bestCount] = [text, n];
  }
  return best;
}

/** A system text in a result's label: quoted, cut to `max` characters with an ellipsis. */
export function describeSystem(text: string, max = 48): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return `system "${flat.length > max ? `${flat.slice(0, max - 1)}…` : flat}"`;
}
