/**
 * Where the panels get their data: the datasets bundled with the app (served from `public/samples/`,
 * see SOURCE.md there) and the files the user picks, both as the `DatasetFile` the worker takes.
 * Parsing is `parseDataset`'s job (src/data/dataset.ts), in the worker or in the Data panel.
 */
import { NlftError } from '../errors.ts';
import type { DatasetFile } from '../session/requests.ts';

/** The bundled samples by file name, with the line a panel shows for each. */
export const SAMPLES = {
  /** Written for this app in the NLFT record form (3 right responses, 3 wrong ones with judgments). */
  'nlft-sample.json': 'nlft-sample.json (sample: 6 records, 3 wrong with judgments)',
  /** The first 20 GSM8K test questions `{question, answer}` (OpenAI, MIT licence). */
  'gsm8k-sample.jsonl': 'gsm8k-sample.jsonl (20 GSM8K test questions)',
} as const;

export type SampleName = keyof typeof SAMPLES;

/**
 * Fetches a bundled sample.
 *
 * @throws NlftError (`fetch`) naming the file and its URL when the request fails or is not answered with 200
 */
export async function fetchSample(name: SampleName): Promise<DatasetFile> {
  const url = `${import.meta.env.BASE_URL}samples/${name}`;
  const fail = (why: string) => new NlftError(`Could not load the sample dataset ${name} (${url}): ${why}`, 'fetch');
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw fail((e as Error).message);
  }
  if (!res.ok) throw fail(`HTTP ${res.status}`);
  return { name, bytes: new Uint8Array(await res.arrayBuffer()) };
}

/** The contents of a file the user picked, named as the user sees it. */
export async function readPickedFile(file: File): Promise<DatasetFile> {
  return { name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) };
}
