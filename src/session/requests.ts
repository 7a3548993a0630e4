/**
 * The requests and outcomes of a session's jobs as the hosts (the worker and the CLI) hand them in
 * and get them back, and as the app stores them with its runs: plain data that crosses a
 * `postMessage` and survives structured cloning into IndexedDB.
 */
import type { EvalItem, EvalSummary } from '../eval/accuracy.ts';
import type { LoraConfig } from '../model/lora.ts';
import type { QuantFormat } from '../model/quant.ts';
import type { SaliencyOptions } from '../nlft/saliency.ts';
import type { NlftTemplates } from '../nlft/templates.ts';
import type { StepMetrics, TrainConfig } from '../train/trainer.ts';
import type { DatasetSummary } from '../data/summary.ts';
import type { SaliencyEntry, SaliencySummary } from '../nlft/method.ts';
import type { TrainMemoryEstimate } from '../engine/memory.ts';
import type { SaliencyMode } from './options.ts';
import type { TrainMethod } from './train.ts';

/** An evaluation of the loaded model (and its trained adapter, if any) on question/answer records. */
export interface EvalRequest {
  data: DatasetFile;
  /** Questions to answer, from the first. */
  limit: number;
  maxNewTokens: number;
  /**
   * System text of records without an `instruction` (absent or null: `DEFAULT_INSTRUCTION`): the base
   * text the model was trained with (docs/method.md §7).
   */
  system?: string | null;
}

/** What an evaluation found, and on what. */
export interface EvalOutcome {
  /** The model, weights, adapter, data and system text evaluated, e.g. "Demo Llama …, q8, trained adapter (r 4 on …); … system \"Solve…\"". */
  label: string;
  at: string;
  summary: EvalSummary;
  items: EvalItem[];
  /** Stopped by the user before the last question. */
  stopped: boolean;
  /** The test file's name (absent in evaluations stored before it was kept: read the label). */
  dataName?: string;
  /** The model as loaded, e.g. "Demo Llama …, q8" (absent in older evaluations). */
  model?: string;
  /** The system text records without an instruction were asked under (absent in older evaluations). */
  system?: string;
  /**
   * The adapter evaluated: null for the base model alone; `description` says which (its LoRA
   * settings, and the run that trained it where the host knows it), `runId` the stored run's start
   * time (the app's runs). Absent in older evaluations.
   */
  adapter?: { runId?: string; description: string } | null;
}

/** A dataset file as the user picked it; the worker parses and validates it (errors name record and field). */
export interface DatasetFile {
  name: string;
  bytes: Uint8Array;
}

/** A training run of the loaded model (stored with the run); `checkTrainRequest` says what is valid. */
export interface TrainRequest {
  method: TrainMethod;
  train: TrainConfig;
  /** LoRA's settings; alpha absent or null means `defaultAlpha(r)` (alpha = r). */
  lora: Omit<LoraConfig, 'alpha'> & { alpha?: number | null };
  /** Longest sequence (prompt + response tokens); longer responses are truncated. */
  maxLen: number;
  /**
   * GPU memory a training step may take, in MiB (absent or null: no limit). A run whose estimate is
   * over it switches to recomputing layers when that fits, and is refused with the numbers otherwise.
   */
  memoryBudgetMiB?: number | null;
  /** Tokens per packed no-grad scoring pass (absent or null: as many as the step's activation memory holds). */
  scoreBatchTokens?: number | null;
  /** NLFT's constants and safeguards, and the views' prompt texts (validated by the worker). */
  saliency: SaliencyOptions;
  /**
   * When NLFT's saliency is computed (docs/method.md §3.1): 'dynamic' re-scores the side views every
   * step with the current adapters (the authors'); 'static' once before training. Absent or null:
   * dynamic, or static with a scorer.
   */
  saliencyMode?: SaliencyMode | null;
  /**
   * The scorer model as the user named it (folder, Hub id), or absent/null for none. The host opens
   * it and hands it to `scoreWithScorer` (session/scorer.ts); its scores decide the saliency.
   */
  scorer?: string | null;
  templates: NlftTemplates;
  data: DatasetFile;
  /**
   * Continue a run from its checkpoint (a 'checkpoint' event's bytes) instead of starting afresh:
   * the checkpoint's training and LoRA settings are used, and the loaded model must be `model` when given.
   */
  resume?: { checkpoint: Uint8Array; model?: RunModel };
}

/** The model a run trains: its id and weight format (a run continues only on the same). */
export interface RunModel {
  id: string;
  quant: QuantFormat;
}

/** How a run ended: all steps, stopped by the user, or stopped by a non-finite loss or gradient (`message` says which). */
export interface TrainOutcome {
  status: 'done' | 'cancelled' | 'non-finite';
  steps: number;
  totalSteps: number;
  message: string | null;
}

/** What a run reports as it goes (in this order: scoring…, started, then step… with paused where it pauses). */
export type TrainEvent =
  /** NLFT's scoring pass over the data: records done of `total`; the first event also says the tokens per packed pass. */
  | { type: 'scoring'; done: number; total: number; passTokens?: number }
  | {
      type: 'started';
      totalSteps: number;
      records: number;
      truncated: number;
      /** NLFT: the saliency summary of the data under the initial adapters; null for SFT. */
      summary: SaliencySummary | null;
      model: RunModel;
      fromStep: number;
      /** Polarities and token lengths of the data (prompts as the base view builds them). */
      dataSummary?: DatasetSummary;
      /** The step's memory estimate, and whether layers are recomputed (asked for, or to fit the budget). */
      memory?: TrainMemoryEstimate;
      recompute?: boolean;
      /** Tokens per packed no-grad scoring pass (NLFT). */
      scoreBatchTokens?: number;
      /** NLFT: when the saliency is computed, and the scorer model that computed it (null: the trained model). */
      saliencyMode?: SaliencyMode;
      scorer?: string | null;
    }
  /**
   * Everything needed to continue the run (`TrainRequest.resume`): sent when the run pauses or ends,
   * and every `checkpointSeconds` between steps where the host asks for it.
   */
  | { type: 'checkpoint'; step: number; bytes: Uint8Array }
  | { type: 'step'; metrics: StepMetrics; entries: SaliencyEntry[] }
  /** The run reached the pause gate after optimizer step `step` and waits to be resumed. */
  | { type: 'paused'; step: number };
