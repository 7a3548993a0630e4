/**
 * The bundled sample dataset: the first 20 GSM8K test records (`{question, answer}` JSONL,
 * MIT, see public/samples/SOURCE.md), served from `public/`.
 */
import { NlftError } from '../errors.ts';

/** One question with its standard answer. */
export interface QaRecord {
  question: string;
  answer: string;
}

/** Where the sample is served, relative to the app's base URL. */
const SAMPLE_DATASET_PATH = 'samples/gsm8k-sample.jsonl';

/** Parses `{question, answer}` JSONL; errors name the line and field. Blank lines are skipped. */
function parseQaJsonl(text: string, file: string): QaRecord[] {
  const records: QaRecord[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new NlftError(`${file}, line ${i + 1}: not valid JSON (${(e as Error).message})`, 'dataset');
    }
    const rec = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
    const text = (field: keyof QaRecord): string => {
      const v = rec[field];
      if (typeof v !== 'string') throw new NlftError(`${file}, line ${i + 1}: "${field}" must be a string`, 'dataset');
      return v;
    };
    records.push({ question: text('question'), answer: text('answer') });
  });
  return records;
}

/** Fetches and parses the sample dataset. */
export async function loadSampleDataset(): Promise<QaRecord[]> {
  const url = `${import.meta.env.BASE_URL}${SAMPLE_DATASET_PATH}`;
  const res = await fetch(url);
  if (!res.ok) throw new NlftError(`Could not load the sample dataset (${url}): HTTP ${res.status}`, 'fetch');
  return parseQaJsonl(await res.text(), SAMPLE_DATASET_PATH);
}
