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
import type { TrainConfig } from '../train/trainer.ts';
import type { TrainMethod } from './train.ts';

/** An evaluation of the loaded model (and its trained adapter, if any) on question/answer records. */
export interface EvalRequest {
  data: DatasetFile;
  /** Questions to answer, from the first. */
  limit: number;
  maxNewTokens: number;
}

/** What an evaluation found, and on what. */
export interface EvalOutcome {
  /** The model, weights and adapter evaluated, e.g. "Demo Llama …, q8, trained adapter (nlft r 4)". */
  label: string;
  at: string;
  summary: EvalSummary;
  items: EvalItem[];
  /** Stopped by the user before the last question. */
  stopped: boolean;
}

/** A dataset file as the user picked it; the worker parses and validates it (errors name record and field). */
export interface DatasetFile {
  name: string;
  bytes: Uint8Array;
}

/** A training run of the loaded model (stored with the run). */
export interface TrainRequest {
  method: TrainMethod;
  train: TrainConfig;
  lora: LoraConfig;
  /** Longest sequence (prompt + response tokens); longer responses are truncated. */
  maxLen: number;
  /** NLFT's constants and safeguards, and the views' prompt texts (validated by the worker). */
  saliency: SaliencyOptions;
  templates: NlftTemplates;
  data: DatasetFile;
  /** GPU memory the run may use, in MiB: over it, layers are recomputed if that fits, else the run is refused; null or absent = no budget. */
  memoryBudgetMiB?: number | null;
  /**
   * Continue a run from its checkpoint (a 'checkpoint' event's bytes) instead of starting afresh:
   * the checkpoint's training and LoRA settings are used, and the loaded model must be `model`.
   */
  resume?: { checkpoint: Uint8Array; model: RunModel };
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
