/**
 * The page's handle on the trainer worker. It starts the worker, wraps it with comlink and passes
 * callbacks through `Comlink.proxy`, so views call plain async methods and never touch comlink.
 */
import * as Comlink from 'comlink';
import type { PeftAdapterFiles } from '../export/peft.ts';
import type { QuantFormat } from '../model/quant.ts';
import {
  INTERNAL_ERROR,
  type AdapterInfo,
  type AdapterInUse,
  type DeviceLostCallback,
  type EvalItemCallback,
  type GenerateRequest,
  type GenerateResult,
  type TextCallback,
  type MemoryInfo,
  type ModelInfo,
  type ModelSpec,
  type PreparedItemCallback,
  type PrepareOutcome,
  type PrepareRequest,
  type ProgressCallback,
  type ScoreDatasetRequest,
  type ScoredDataset,
  type ScoreRequest,
  type TokenScores,
  type TrainerApi,
  type TrainEventCallback,
  type UseAdapterRequest,
} from '../../workers/protocol.ts';
import type { DatasetSummary } from '../data/summary.ts';
import type { DatasetFile, EvalOutcome, EvalRequest, TrainOutcome, TrainRequest } from '../session/requests.ts';

/** The `TrainerApi` of the worker, callable from the page. */
export class TrainerClient {
  private readonly remote: Comlink.Remote<TrainerApi>;

  /** @param onCrash called if the worker script fails to load or throws outside a call */
  constructor(onCrash: (message: string) => void) {
    const worker = new Worker(new URL('../../workers/trainer.worker.ts', import.meta.url), { type: 'module', name: 'trainer' });
    worker.addEventListener('error', (ev) => {
      ev.preventDefault();
      onCrash(`The trainer worker stopped: ${ev.message || 'its script could not be loaded'}. Reload the page to start again.`);
    });
    this.remote = Comlink.wrap<TrainerApi>(worker);
  }

  /** See `TrainerApi.init`. */
  init(onDeviceLost: DeviceLostCallback): Promise<AdapterInfo> {
    return this.remote.init(Comlink.proxy(onDeviceLost));
  }

  /** See `TrainerApi.loadModel`. */
  loadModel(spec: ModelSpec, quant: QuantFormat, onProgress: ProgressCallback, options?: { measureKernels?: boolean }): Promise<ModelInfo> {
    return this.remote.loadModel(spec, quant, Comlink.proxy(onProgress), options);
  }

  /** See `TrainerApi.summarizeData`; the dataset's bytes are copied (the caller keeps them). */
  summarizeData(data: DatasetFile, maxLen: number): Promise<DatasetSummary> {
    return this.remote.summarizeData(data, maxLen);
  }

  /** See `TrainerApi.logprobs`. */
  logprobs(request: ScoreRequest): Promise<TokenScores> {
    return this.remote.logprobs(request);
  }

  /** See `TrainerApi.evaluate`; the dataset's bytes are transferred. */
  evaluate(request: EvalRequest, onItem: EvalItemCallback): Promise<EvalOutcome> {
    return this.remote.evaluate(Comlink.transfer(request, [request.data.bytes.buffer as ArrayBuffer]), Comlink.proxy(onItem));
  }

  /** See `TrainerApi.stopEvaluation`. */
  stopEvaluation(): Promise<void> {
    return this.remote.stopEvaluation();
  }

  /** See `TrainerApi.prepare`; the dataset's bytes are transferred. */
  prepare(request: PrepareRequest, onItem: PreparedItemCallback): Promise<PrepareOutcome> {
    return this.remote.prepare(Comlink.transfer(request, [request.data.bytes.buffer as ArrayBuffer]), Comlink.proxy(onItem));
  }

  /** See `TrainerApi.stopPreparation`. */
  stopPreparation(): Promise<void> {
    return this.remote.stopPreparation();
  }

  /** See `TrainerApi.generate`. */
  generate(request: GenerateRequest, onText: TextCallback): Promise<GenerateResult> {
    return this.remote.generate(request, Comlink.proxy(onText));
  }

  /** See `TrainerApi.memory`. */
  memory(): Promise<MemoryInfo> {
    return this.remote.memory();
  }

  /** See `TrainerApi.scoreDataset`; the dataset's bytes are transferred, not copied. */
  scoreDataset(request: ScoreDatasetRequest, scorer: ModelSpec | null, onProgress: ProgressCallback): Promise<ScoredDataset | null> {
    return this.remote.scoreDataset(
      Comlink.transfer(request, [request.data.bytes.buffer as ArrayBuffer]),
      scorer,
      Comlink.proxy(onProgress),
    );
  }

  /** See `TrainerApi.stopScoring`. */
  stopScoring(): Promise<void> {
    return this.remote.stopScoring();
  }

  /** See `TrainerApi.train`; the dataset's bytes are transferred, not copied; `scorer` holds the files of the scorer the request names. */
  train(request: TrainRequest, onEvent: TrainEventCallback, scorer: ModelSpec | null = null): Promise<TrainOutcome> {
    return this.remote.train(Comlink.transfer(request, [request.data.bytes.buffer as ArrayBuffer]), Comlink.proxy(onEvent), scorer);
  }

  /** See `TrainerApi.setPaused`. */
  setPaused(paused: boolean): Promise<void> {
    return this.remote.setPaused(paused);
  }

  /** See `TrainerApi.stopTraining`. */
  stopTraining(): Promise<void> {
    return this.remote.stopTraining();
  }

  /** See `TrainerApi.exportAdapter`. */
  exportAdapter(): Promise<PeftAdapterFiles> {
    return this.remote.exportAdapter();
  }

  /** See `TrainerApi.useAdapter`; the files are copied (the page keeps them). */
  useAdapter(request: UseAdapterRequest | null): Promise<AdapterInUse | null> {
    return this.remote.useAdapter(request);
  }
}

/** The text to show for a failed call (or any error): its message, never a stack. */
export function errorMessage(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  return e.name === INTERNAL_ERROR ? `Unexpected error: ${e.message}` : e.message;
}
