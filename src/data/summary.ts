/**
 * What a dataset holds, for the data panel and the CLI: polarity counts and the token lengths of
 * prompts and responses under a given prompt builder and tokenizer.
 */
import type { DatasetRecord } from './dataset.ts';
import type { TextTokenizer } from './tokenizer.ts';

/** Nearest-rank percentiles of a list of token counts (all 0 for no records). */
export interface TokenPercentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface DatasetSummary {
  records: number;
  positives: number;
  negatives: number;
  unknown: number;
  /** Tokens of the prompt text `buildPrompt` makes (chat template included when it applies one). */
  promptTokens: TokenPercentiles;
  /** Tokens of the response: `output`, or `answer` when there is none. */
  responseTokens: TokenPercentiles;
  /** Prompt + response tokens per record. */
  totalTokens: TokenPercentiles;
  /** Records whose prompt + response tokens exceed `maxLen`. */
  truncated: number;
}

export interface SummaryOptions {
  /** The training sequence length. */
  maxLen: number;
  /** The prompt text a record is scored under (e.g. the base view, docs/method.md §2). */
  buildPrompt: (record: DatasetRecord) => string;
}

/**
 * Counts polarities and token lengths. Prompt and response are tokenized separately, as scoring
 * does (prompt.ts); no special tokens are added beyond those the prompt text contains.
 */
export function datasetSummary(
  records: readonly DatasetRecord[],
  tok: Pick<TextTokenizer, 'encode'>,
  opts: SummaryOptions,
): DatasetSummary {
  const prompt: number[] = [];
  const response: number[] = [];
  const total: number[] = [];
  const polarities = { positive: 0, negative: 0, unknown: 0 };
  for (const record of records) {
    const p = tok.encode(opts.buildPrompt(record)).length;
    const r = tok.encode(record.output ?? record.answer).length;
    prompt.push(p);
    response.push(r);
    total.push(p + r);
    polarities[record.polarity]++;
  }
  return {
    records: records.length,
    positives: polarities.positive,
    negatives: polarities.negative,
    unknown: polarities.unknown,
    promptTokens: percentiles(prompt),
    responseTokens: percentiles(response),
    totalTokens: percentiles(total),
    truncated: total.filter((n) => n > opts.maxLen).length,
  };
}

/** Nearest-rank percentiles: the p-th is the smallest value with at least p% of the values at or below it. */
function percentiles(values: readonly number[]): TokenPercentiles {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number): number => (sorted.length === 0 ? 0 : sorted[Math.ceil((p / 100) * sorted.length) - 1]);
  return { p50: rank(50), p90: rank(90), p99: rank(99), max: rank(100) };
}
