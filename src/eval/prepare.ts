/**
 * Data preparation (docs/method.md §6): the model answers each question itself (sampled, temperature 0.6
 * by default, from the base prompt), the answer is graded by its final number against the standard
 * answer, and a wrong one gets a judgment (`Judge`); right ones get none. The result is NLFT
 * records in the §1 format, ready to train on, export and re-import.
 */
import type { DatasetRecord } from '../data/dataset.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import type { GpuLlama } from '../engine/llama.ts';
import { NlftError } from '../errors.ts';
import { answerAndGrade, type GradedAnswer } from './accuracy.ts';
import type { Judge } from './judge.ts';

export const DEFAULT_PREPARE = { temperature: 0.6, maxNewTokens: 512, seed: 0 };

/** A prepared record (docs/method.md §1). */
export interface PreparedRecord {
  id: string;
  instruction?: string;
  input: string;
  output: string;
  answer: string;
  judgment: string | null;
}

export interface PrepareOptions {
  temperature: number;
  maxNewTokens: number;
  seed: number;
  /**
   * System text to answer records without an `instruction` under (absent: `DEFAULT_INSTRUCTION`);
   * when given, the prepared records carry it as their `instruction`, so training asks them the same way.
   */
  system?: string;
  judge: Judge;
  signal?: AbortSignal;
}

/** Answer, grade and judge every record in order; `onRecord` gets each, with its grade, as it is done. */
export async function prepareRecords(
  model: GpuLlama,
  tok: TextTokenizer,
  records: readonly DatasetRecord[],
  o: PrepareOptions,
  onRecord?: (r: PreparedRecord, grade: Pick<GradedAnswer, 'expected' | 'got' | 'correct'>, done: number) => void,
): Promise<PreparedRecord[]> {
  if (records.length === 0) throw new NlftError('the dataset has no records: nothing to prepare', 'dataset');
  const out: PreparedRecord[] = [];
  for (const r of records) {
    if (o.signal?.aborted) break;
    const { output, expected, got, correct } = await answerAndGrade(model, tok, r, o);
    const judgment = correct ? null : await o.judge.judge({ question: r.input, answer: r.answer, output, expected, got });
    const instruction = r.instruction ?? o.system;
    const rec: PreparedRecord = {
      id: r.id,
      ...(instruction !== undefined ? { instruction } : {}),
      input: r.input,
      output,
      answer: r.answer,
      judgment,
    };
    out.push(rec);
    onRecord?.(rec, { expected, got, correct }, out.length);
  }
  return out;
}
