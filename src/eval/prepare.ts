/**
 * Data preparation (nlft.md §6): the model answers each question itself (sampled, temperature 0.6
 * by default, from the base prompt), the answer is graded by its final number against the standard
 * answer, and a wrong one gets a judgment (`Judge`); right ones get none. The result is NLFT
 * records in the §1 format, ready to train on, export and re-import.
 */
import { extractFinalNumber, type DatasetRecord } from '../data/dataset.ts';
import type { Judge } from './judge.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import { generate } from '../engine/generate.ts';
import type { GpuLlama } from '../engine/llama.ts';
import { NlftError } from '../errors.ts';
import { basePrompt } from '../data/prompt.ts';

export const DEFAULT_PREPARE = { temperature: 0.6, maxNewTokens: 512, seed: 0 };

/** A prepared record (nlft.md §1). */
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
  judge: Judge;
  signal?: AbortSignal;
}

/** Answer, grade and judge every record in order; `onRecord` gets each as it is done. */
export async function prepareRecords(
  model: GpuLlama,
  tok: TextTokenizer,
  records: readonly DatasetRecord[],
  o: PrepareOptions,
  onRecord?: (r: PreparedRecord, right: boolean, done: number) => void,
): Promise<PreparedRecord[]> {
  if (records.length === 0) throw new NlftError('the dataset has no records: nothing to prepare', 'dataset');
  const out: PreparedRecord[] = [];
  for (const r of records) {
    if (o.signal?.aborted) break;
    const g = await generate(model, tok.encode(basePrompt(tok, r)), {
      maxNewTokens: o.maxNewTokens,
      temperature: o.temperature,
      seed: o.seed + r.index,
      stopIds: tok.eosTokenIds,
      signal: o.signal,
    });
    const output = tok.decode(g.reason === 'stop' ? g.ids.slice(0, -1) : g.ids);
    const expected = extractFinalNumber(r.answer);
    const got = extractFinalNumber(output);
    const right = expected !== null && got === expected;
    const judgment = right ? null : await o.judge.judge({ question: r.input, answer: r.answer, output, expected, got });
    const rec: PreparedRecord = {
      id: r.id,
      ...(r.instruction !== null ? { instruction: r.instruction } : {}),
      input: r.input,
      output,
      answer: r.answer,
      judgment,
    };
    out.push(rec);
    onRecord?.(rec, right, out.length);
  }
  return out;
}
