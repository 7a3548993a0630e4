/**
 * Data preparation as a job of a loaded model (docs/method.md §6), written once for the CLI
 * (`nlft prepare`) and the app's worker: the request's questions are read, the model answers each
 * one, the answer is graded and a wrong one judged (`prepareRecords`), each item is reported as it
 * is done, and a stop signal ends the job before the next question. A judge that fails (unreachable,
 * an HTTP error, a reply without text) ends the job too, but keeps every record prepared before it:
 * the outcome carries them with the judge's message.
 */
import { type DatasetRecord, parseDataset } from '../data/dataset.ts';
import { DEFAULT_INSTRUCTION } from '../data/prompt.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import type { GpuLlama } from '../engine/llama.ts';
import { NlftError } from '../errors.ts';
import { chatJudge, type Judge, TEMPLATE_JUDGE } from '../eval/judge.ts';
import { type PreparedRecord, prepareRecords } from '../eval/prepare.ts';
import type { DatasetFile } from './requests.ts';

/**
 * Who writes the judgments of wrong answers: the template built from the grade (offline), or a
 * judge model at an OpenAI-compatible endpoint (`url` the base, e.g. https://api.openai.com/v1, or
 * the full /chat/completions URL; `apiKey` sent as a bearer token, never stored by the job).
 */
export type JudgeSpec = { kind: 'template' } | { kind: 'chat'; url: string; model: string; apiKey?: string | null };

/** A preparation of the loaded model (with its adapter, if any) on `{question, answer}` (or NLFT) records. */
export interface PrepareRequest {
  data: DatasetFile;
  /** Questions to prepare, from the first (Infinity: all). */
  limit: number;
  /** Sampling temperature of the answers (0 = greedy). */
  temperature: number;
  maxNewTokens: number;
  /** The generator's seed; record i answers with seed + i. */
  seed: number;
  /**
   * System text of records without an `instruction` (absent, null or `DEFAULT_INSTRUCTION`: the
   * default, not written into the records); another text is written into them as their instruction.
   */
  system?: string | null;
  judge: JudgeSpec;
}

/** One prepared record with its grade: the standard answer's final number and the response's. */
export interface PreparedItem {
  record: PreparedRecord;
  expected: string | null;
  got: string | null;
  correct: boolean;
}

/** What a preparation produced. */
export interface PrepareOutcome {
  /** The records done, in order (all of them unless stopped or the judge failed). */
  items: PreparedItem[];
  /** Questions asked for (after the limit). */
  total: number;
  /** Stopped by the signal before the last question. */
  stopped: boolean;
  /** The judge's failure that ended the job early (naming its URL and what went wrong), or null. */
  judgeError: string | null;
  /** The judge's name (e.g. "template (from the grade)", "gpt-4o at https://…/chat/completions"). */
  judge: string;
  /** The model that answered, as the host names it. */
  model: string;
}

/** The judge a spec names; `fetchFn` replaces the global `fetch` (tests). */
export function judgeOf(spec: JudgeSpec, fetchFn?: typeof fetch): Judge {
  if (spec.kind === 'template') return TEMPLATE_JUDGE;
  if (!spec.url.trim()) throw new NlftError('judge URL: expected the address of an OpenAI-compatible endpoint, found nothing', 'judge');
  if (!spec.model.trim()) throw new NlftError(`judge model: expected the model name to ask at ${spec.url}, found nothing`, 'judge');
  return chatJudge({ url: spec.url.trim(), model: spec.model.trim(), apiKey: spec.apiKey || undefined, fetch: fetchFn });
}

/**
 * The questions a request prepares: its data parsed (errors name record and field) and cut to the limit.
 *
 * @throws DatasetError naming the record and field of a bad record
 */
export function preparationRecords(request: Pick<PrepareRequest, 'data' | 'limit'>): DatasetRecord[] {
  return parseDataset(request.data.bytes, request.data.name).records.slice(0, request.limit);
}

/**
 * Prepares the request's questions with the loaded model: `onItem` gets each record with its grade
 * as it is done; `signal` stops before the next question. A judge failure ends the job with the
 * records done before it (`judgeError`); any other failure rejects.
 */
export async function runPreparation(
  m: { llama: GpuLlama; tok: TextTokenizer; name: string },
  request: PrepareRequest,
  o: { signal?: AbortSignal; fetch?: typeof fetch; onItem?: (item: PreparedItem, done: number, total: number) => void } = {},
): Promise<PrepareOutcome> {
  const records = preparationRecords(request);
  const judge = judgeOf(request.judge, o.fetch);
  const system = request.system && request.system !== DEFAULT_INSTRUCTION ? request.system : undefined;
  const items: PreparedItem[] = [];
  let judgeError: string | null = null;
  try {
    await prepareRecords(
      m.llama,
      m.tok,
      records,
      { temperature: request.temperature, maxNewTokens: request.maxNewTokens, seed: request.seed, system, judge, signal: o.signal },
      (record, grade, done) => {
        const item = { record, ...grade };
        items.push(item);
        o.onItem?.(item, done, records.length);
      },
    );
  } catch (e) {
    if (!(e instanceof NlftError && e.code === 'judge')) throw e;
    judgeError = e.message;
  }
  return {
    items,
    total: records.length,
    stopped: judgeError === null && items.length < records.length,
    judgeError,
    judge: judge.name,
    model: m.name,
  };
}
