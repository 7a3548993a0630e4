/**
 * The contract between the page (main thread) and `workers/trainer.worker.ts`, which owns the GPU
 * device (its calls are `TrainerHost`'s, workers/trainer-host.ts). The worker exposes a `TrainerApi` with comlink; the page holds a `Remote<TrainerApi>`.
 *
 * Everything here crosses a `postMessage`: plain data only (structured-clone), except callback
 * parameters, which the page wraps in `Comlink.proxy`. A call that fails rejects with an `Error`
 * whose `name` is the `code` of the worker-side `NlftError` (e.g. `'device-lost'`,
 * `'gpu-unavailable'`), or `INTERNAL_ERROR` for an unexpected failure, and whose `message` is
 * meant for the user (the page never shows a stack).
 */
import type { AdapterSummary } from '../src/engine/gpu.ts';
import type { EvalItem } from '../src/eval/accuracy.ts';
import type { PeftAdapterFiles } from '../src/export/peft.ts';
import type { LoraConfig } from '../src/model/lora.ts';
import type { DatasetSummary } from '../src/data/summary.ts';
import type { QuantFormat } from '../src/model/quant.ts';
import type { NlftTemplates } from '../src/nlft/templates.ts';
import type { DatasetFile, EvalOutcome, EvalRequest, TrainEvent, TrainOutcome, TrainRequest } from '../src/session/requests.ts';
import type { PreparedItem, PrepareOutcome, PrepareRequest } from '../src/session/prepare.ts';
import type { ScoreDatasetRequest, ScoredDataset } from '../src/session/scoring.ts';

export type { PreparedItem, PrepareOutcome, PrepareRequest, ScoreDatasetRequest, ScoredDataset, TrainEvent };

/** `name` of a call's error when the failure was unexpected (a bug), not an `NlftError`. */
export const INTERNAL_ERROR = 'internal';

/** The GPU adapter the worker acquired. */
export interface AdapterInfo {
  /** Short name, e.g. "google / swiftshader" (see `adapterName`). */
  name: string;
  /** One line with the name, optional features and the binding limit (for logs and tooltips). */
  details: string;
  summary: AdapterSummary;
}

/** One step of a long operation; `fraction` grows from 0 to 1. */
export interface Progress {
  stage: string;
  fraction: number;
}

/** Called by the worker as a long operation advances (pass it through `Comlink.proxy`). */
export type ProgressCallback = (progress: Progress) => void;

/** Called once if the GPU device is lost; the message says why (pass it through `Comlink.proxy`). */
export type DeviceLostCallback = (message: string) => void;

/** GPU bytes held by the worker's buffer manager. */
export interface MemoryInfo {
  currentBytes: number;
  /** Highest `currentBytes` since the model was loaded. */
  peakBytes: number;
}

/** The model now resident on the GPU. */
export interface ModelInfo {
  name: string;
  quant: QuantFormat;
  parameters: number;
  layers: number;
  hiddenSize: number;
  vocabSize: number;
  /** Analytic size of the frozen base weights in `quant` (see `baseModelBytes`). */
  weightBytes: number;
  /** The kernel tile shapes in use for this GPU and model, and whether they were just measured. */
  kernels: string;
  memory: MemoryInfo;
  /** The NLFT view texts of the `templates.json` beside the model, or null when it has none. */
  templates: NlftTemplates | null;
  /** Why the model's `templates.json` was not taken (naming the file and field), or null. */
  templatesProblem: string | null;
}

/**
 * Which model to load: the stress model (seeded random weights in SmolLM2's shape and vocabulary,
 * generated in the worker), a model folder served over HTTP (`url` ends in `/`; the app's embedded
 * toy-math demo is one, `name` is what it is shown and recorded as), a Hub repository
 * (`org/name[@revision]` at `baseUrl`, downloaded once into IndexedDB), or the files of a folder
 * the user picked.
 */
export type ModelSpec =
  | { kind: 'stress' }
  | { kind: 'url'; url: string; name: string }
  | { kind: 'hub'; id: string; baseUrl: string }
  | { kind: 'files'; label: string; files: File[] };

/** Text to score: log p of every response token given the prompt. */
export interface ScoreRequest {
  prompt: string;
  response: string;
  /** Render the prompt as a user turn of the model's chat template (with the assistant opening). */
  chat: boolean;
  /** With `chat`: the system turn before it ('' or absent: none). */
  system?: string;
}

/** Text to generate: the model's continuation of the prompt (with `chat`, its answer as the assistant). */
export interface GenerateRequest {
  prompt: string;
  chat: boolean;
  /** With `chat`: the system turn before the prompt ('' or absent: none). */
  system?: string;
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  seed: number;
}

/** Called with the text generated so far after each token (pass it through `Comlink.proxy`). */
export type TextCallback = (text: string) => void;

/** The generated text and how generation ended. */
export interface GenerateResult {
  text: string;
  tokens: number;
  reason: 'stop' | 'length' | 'context' | 'cancelled';
  millis: number;
}

/** Called after each graded question (pass it through `Comlink.proxy`). */
export type EvalItemCallback = (item: EvalItem, done: number, total: number) => void;

/** Called after each prepared question, with its record and grade (pass it through `Comlink.proxy`). */
export type PreparedItemCallback = (item: PreparedItem, done: number, total: number) => void;

/** Per-token scores of the response. */
export interface TokenScores {
  /** Number of prompt tokens (after the chat template, when asked). */
  promptTokens: number;
  /** Response token ids, in order. */
  ids: number[];
  /** Readable text of each response token. */
  texts: string[];
  /** Natural-log probability of each response token (all <= 0). */
  logprobs: number[];
  /** Time the worker spent on the forward pass, in milliseconds. */
  millis: number;
}

/** A PEFT adapter's files to put on the loaded model (a stored run's, or a folder picked to import). */
export interface UseAdapterRequest {
  /** How messages name it: the run, or the picked folder. */
  label: string;
  files: Pick<PeftAdapterFiles, 'adapter_config.json' | 'adapter_model.safetensors'>;
}

/** An adapter the worker checked against the loaded model and put on it. */
export interface AdapterInUse {
  lora: LoraConfig;
  /** `base_model_name_or_path` of its config. */
  baseModel: string | null;
  /** The loaded model's id (what adapters trained on it name as their base). */
  model: string;
  /** The same adapter as GGUF for llama.cpp and Ollama (see src/export/gguf.ts). */
  gguf: Uint8Array;
}

/** Seconds of training between two periodic checkpoints. */
export const CHECKPOINT_SECONDS = 30;

/** Called by the worker for every `TrainEvent` (pass it through `Comlink.proxy`). */
export type TrainEventCallback = (event: TrainEvent) => void;

/**
 * What the trainer worker does for the page. Calls are queued in the worker and run one at a time,
 * except `setPaused` and `stopTraining`, which act on a running `train` at once.
 */
export interface TrainerApi {
  /**
   * Acquires the GPU adapter and device (once; later calls return the same adapter, unless the
   * device was lost: then a new device, on which the model must be loaded again).
   * Throws `GpuUnavailableError` when the browser has no WebGPU or no adapter.
   */
  init(onDeviceLost: DeviceLostCallback): Promise<AdapterInfo>;
  /**
   * Loads a model (the demo built from its seed, a Hub repository, or picked files) with its
   * tokenizer and uploads the weights in `quant`, replacing any model already loaded. The kernel
   * tiles are the cached ones, a software adapter's preset, or measured now; `measureKernels`
   * measures them now whatever the cache holds (the model panel's Measure).
   */
  loadModel(spec: ModelSpec, quant: QuantFormat, onProgress: ProgressCallback, options?: { measureKernels?: boolean }): Promise<ModelInfo>;
  /**
   * Token lengths of a dataset's records under the loaded model's tokenizer (base-view prompt,
   * response, total; how many exceed `maxLen`), for the Data panel. CPU only: answered at once, even
   * while another call runs. Throws `DatasetError` naming the record and field of a bad file.
   */
  summarizeData(data: DatasetFile, maxLen: number): Promise<DatasetSummary>;
  /** Scores the response under the prompt with the loaded model. */
  logprobs(request: ScoreRequest): Promise<TokenScores>;
  /** GPU bytes held now and at peak. */
  memory(): Promise<MemoryInfo>;
  /** Answers and grades questions with the loaded model and its trained adapter, if any. */
  evaluate(request: EvalRequest, onItem: EvalItemCallback): Promise<EvalOutcome>;
  /** Ends the running `evaluate` before its next question; no-op when none runs. */
  stopEvaluation(): Promise<void>;
  /**
   * Prepares NLFT records (docs/method.md §6) with the loaded model and its adapter, if any: each
   * question answered, graded, and judged when wrong (by the template or the request's judge
   * endpoint, called from the worker; its key is used for the calls and kept nowhere). A judge
   * failure resolves with the records done before it and the judge's message.
   */
  prepare(request: PrepareRequest, onItem: PreparedItemCallback): Promise<PrepareOutcome>;
  /** Ends the running `prepare` before its next question; no-op when none runs. */
  stopPreparation(): Promise<void>;
  /** Generates a response with the loaded model (and its trained adapter, if any), streaming the text. */
  generate(request: GenerateRequest, onText: TextCallback): Promise<GenerateResult>;
  /**
   * Scores a dataset's three views once, before any training (docs/method.md §3.1), for the saliency
   * explorer: with the loaded model's base weights (its trained adapter, if any, set aside for the
   * job), or with `scorer` (docs/method.md §3.2): loaded for this job only, in the loaded model's
   * weight format, refused with where the vocabularies differ when its tokenizer is not the
   * model's, and freed after. Resolves null when `stopScoring` ended it.
   */
  scoreDataset(request: ScoreDatasetRequest, scorer: ModelSpec | null, onProgress: ProgressCallback): Promise<ScoredDataset | null>;
  /** Ends the running `scoreDataset` before its next packed pass; no-op when none runs. */
  stopScoring(): Promise<void>;
  /**
   * Trains new LoRA adapters on the loaded model; they stay on it (the playground then scores with
   * them) until the next run or model load. Resolves when the run ends, however it ends. A request
   * that names a scorer (`TrainRequest.scorer`, the name kept with the run) needs the scorer's
   * files as `scorer`: it is loaded, scores the data, and is freed before training (docs/method.md §3.2).
   */
  train(request: TrainRequest, onEvent: TrainEventCallback, scorer?: ModelSpec | null): Promise<TrainOutcome>;
  /** Pauses (after the current optimizer step) or resumes the running `train`; no-op when none runs. */
  setPaused(paused: boolean): Promise<void>;
  /** Ends the running `train` after its current step (its outcome is 'cancelled'); no-op when none runs. */
  stopTraining(): Promise<void>;
  /** The trained adapters in PEFT's format. Throws `not-ready` when no run has trained any. */
  exportAdapter(): Promise<PeftAdapterFiles>;
  /**
   * Puts a stored or imported adapter on the loaded model in place of the current one (the
   * playground, generation and evaluation then use it), after checking it against the model: its
   * config, and every tensor's name and shape (`readPeftAdapter`). `null` takes the adapter off
   * (the base model alone). Throws `model-format` naming the file and the field or tensor and
   * what was expected, and leaves the current adapter on; `not-ready` without a model.
   */
  useAdapter(request: UseAdapterRequest | null): Promise<AdapterInUse | null>;
}
