/**
 * A training run as both hosts (the CLI and the app's worker) start it: the samples of the chosen
 * method, NLFT's scoring pass for the dataset-level saliency summary, the loss method and the
 * trainer, with the saliency entries of every visit collected per optimizer step.
 */
import type { DatasetRecord } from '../data/dataset.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import type { Engine } from '../engine/engine.ts';
import type { GpuLlama } from '../engine/llama.ts';
import {
  nlftMethod,
  nlftSamples,
  saliencySummary,
  scoreSamples,
  type NlftSample,
  type SaliencyEntry,
  type SaliencySummary,
} from '../nlft/method.ts';
import type { SaliencyOptions } from '../nlft/saliency.ts';
import type { NlftTemplates } from '../nlft/templates.ts';
import { sftSamples } from '../train/samples.ts';
import type { TrainSample } from '../data/prompt.ts';
import { SFT, Trainer, type TrainConfig } from '../train/trainer.ts';

export type TrainMethod = 'nlft' | 'sft';

/** The samples of a method: NLFT's three views of each record's `output`, or SFT on the standard `answer`. */
export function methodSamples(
  method: TrainMethod,
  records: readonly DatasetRecord[],
  tok: TextTokenizer,
  templates: NlftTemplates,
  maxLen: number,
): { samples: TrainSample[]; truncated: number } {
  return method === 'nlft' ? nlftSamples(records, tok, templates, maxLen) : sftSamples(records, tok, maxLen);
}

export interface PreparedRun {
  trainer: Trainer;
  /** NLFT: the saliency summary of the data under the initial adapters; null for SFT. */
  summary: SaliencySummary | null;
  /** The saliency entries of the visits since the last call (NLFT), in visit order. */
  takeEntries(): SaliencyEntry[];
}

/**
 * Score the data (NLFT; `onScoring` gets records done and the total) and build the trainer for
 * `model`, whose adapters are the ones trained.
 */
export async function prepareRun(
  engine: Engine,
  model: GpuLlama,
  samples: readonly TrainSample[],
  o: {
    method: TrainMethod;
    train: TrainConfig;
    saliency: SaliencyOptions;
    tokenText: (id: number) => string;
    scoreBatchTokens: number;
    onScoring?: (done: number, total: number) => void;
  },
): Promise<PreparedRun> {
  if (o.method === 'sft') return { trainer: new Trainer(engine, model, samples, o.train, SFT), summary: null, takeEntries: () => [] };
  const nlft = samples as readonly NlftSample[];
  const scored = await scoreSamples(model, nlft, o.saliency, o.tokenText, {
    maxTokens: o.scoreBatchTokens,
    onProgress: (done) => o.onScoring?.(done, samples.length),
  });
  const summary = saliencySummary(scored, o.saliency.negativesWithoutSaliency);
  let entries: SaliencyEntry[] = [];
  const method = nlftMethod(model, {
    saliency: o.saliency,
    tokenText: o.tokenText,
    onEntry: (e) => void entries.push(e),
    stepOf: () => trainer.state.step + 1,
    maxBatchTokens: o.scoreBatchTokens,
  });
  const trainer = new Trainer(engine, model, samples, o.train, method);
  return {
    trainer,
    summary,
    takeEntries() {
      const out = entries;
      entries = [];
      return out;
    },
  };
}
