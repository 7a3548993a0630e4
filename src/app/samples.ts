/**
 * Where the panels get their data: the datasets bundled with the app (served from `public/`: the
 * toy-math demo's own data in `toy-math/data/`, see its README; the GSM8K and NLFT samples in
 * `samples/`, see SOURCE.md there) and the files the user picks, both as the `DatasetFile` the
 * worker takes. Which samples the panels start from follows the loaded model (`ModelSamples`).
 * Parsing is `parseDataset`'s job (src/data/dataset.ts), in the worker or in the Data panel.
 */
import { NlftError } from '../errors.ts';
import type { DatasetFile } from '../session/requests.ts';
import { hostGate } from '../util/net.ts';

/** The bundled samples by file name: where each is served under the app's base URL, and the line a panel shows for it. */
export const SAMPLES = {
  /**
   * The first 40 of toy-math's 100 NLFT records (its own sampled answers, 21 of these wrong with template
   * judgments): a first run of 3 epochs is 30 steps, about 5 s each on SwiftShader here (100 records: 75 steps).
   */
  'toy-math-nlft-40.json': {
    path: 'samples/toy-math-nlft-40.json',
    label: 'toy-math-nlft-40.json (toy-math sample: 40 records, 21 wrong with judgments)',
  },
  /** All of toy-math's 100 NLFT records (40 right, 60 wrong with template judgments). */
  'nlft_train_100.json': {
    path: 'toy-math/data/nlft_train_100.json',
    label: 'nlft_train_100.json (toy-math: 100 records, 60 wrong with judgments)',
  },
  /** 100 unseen 1–2-step toy-math problems `{question, answer}` (the demo gets ≈ 69 % of them right). */
  'test_easy_100.jsonl': {
    path: 'toy-math/data/test_easy_100.jsonl',
    label: 'test_easy_100.jsonl (toy-math: 100 unseen 1–2-step problems)',
  },
  /** Written for this app in the NLFT record form (3 right responses, 3 wrong ones with judgments). */
  'nlft-sample.json': { path: 'samples/nlft-sample.json', label: 'nlft-sample.json (sample: 6 records, 3 wrong with judgments)' },
  /** toy-math's 100 training questions with standard answers `{question, answer}` (the NLFT records' questions), to prepare from. */
  'sft_train_100.json': {
    path: 'toy-math/data/sft_train_100.json',
    label: 'sft_train_100.json (toy-math: 100 questions with standard answers)',
  },
  /** The first 20 GSM8K test questions `{question, answer}` (OpenAI, MIT licence). */
  'gsm8k-sample.jsonl': { path: 'samples/gsm8k-sample.jsonl', label: 'gsm8k-sample.jsonl (20 GSM8K test questions)' },
} as const;

export type SampleName = keyof typeof SAMPLES;

/** The samples a model starts from: what Train trains on, what Evaluate asks and how many of its questions, and a learning rate that moves it. */
export interface ModelSamples {
  train: SampleName;
  eval: SampleName;
  /** Questions an evaluation asks by default (it should finish in a minute or two on a CPU-emulated GPU). */
  evalLimit: number;
  /** The Train panel's learning rate for this model. */
  lr: number;
  /** The questions the Prepare panel starts from. */
  prepare: SampleName;
}

/** The toy-math demo: its own NLFT records and easy test set; LoRA needs lr 1e-3 to move a 0.9 M model in one short run. */
export const TOY_MATH_SAMPLES: ModelSamples = {
  train: 'toy-math-nlft-40.json',
  eval: 'test_easy_100.jsonl',
  evalLimit: 20,
  lr: 1e-3,
  prepare: 'sft_train_100.json',
};

/** Any other model (the stress model, a Hub or picked model): the GSM8K questions and the 6-record NLFT sample. */
export const GENERAL_SAMPLES: ModelSamples = {
  train: 'nlft-sample.json',
  eval: 'gsm8k-sample.jsonl',
  evalLimit: 5,
  lr: 5e-5,
  prepare: 'gsm8k-sample.jsonl',
};

/**
 * Fetches a bundled sample.
 *
 * @throws NlftError (`fetch`) naming the file and its URL when the request fails or is not answered with 200
 */
export async function fetchSample(name: SampleName): Promise<DatasetFile> {
  const url = `${import.meta.env.BASE_URL}${SAMPLES[name].path}`;
  const fail = (why: string) => new NlftError(`Could not load the sample dataset ${name} (${url}): ${why}`, 'fetch');
  let res: Response;
  try {
    res = await hostGate().fetch(url);
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
