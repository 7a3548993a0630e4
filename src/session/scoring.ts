/**
 * The scoring job, written once for both hosts (`nlft score` and the app's worker, for the saliency
 * explorer): a dataset's NLFT samples built from its records and the views' templates, the packed
 * no-grad passes sized, every record's three views scored once (`scoreRecords`) by the loaded model
 * or by a scorer (uploaded for the job, its vocabulary checked against the model's, freed after),
 * with progress and a stop between passes. The result is the GPU half of docs/method.md §3.1:
 * `classifyScores` re-classifies it on the CPU under any constants, without a GPU pass.
 */
import type { DatasetRecord } from '../data/dataset.ts';
import { parseDataset } from '../data/dataset.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import type { Engine } from '../engine/engine.ts';
import { GpuLlama } from '../engine/llama.ts';
import { groupByTokens } from '../engine/packing.ts';
import type { LoraConfig } from '../model/lora.ts';
import type { QuantFormat } from '../model/quant.ts';
import type { LlamaWeights } from '../model/weights.ts';
import { type DatasetScores, type NlftSample, nlftSamples, type RecordScores, type ScoredRecord, scoreRecords } from '../nlft/method.ts';
import { type NlftTemplates, parseTemplates } from '../nlft/templates.ts';
import { checkOption } from './options.ts';
import type { DatasetFile } from './requests.ts';
import { checkScorerVocabulary } from './scorer.ts';
import { scorePassTokens } from './train.ts';

/** Activation memory packed scoring passes may take by default (beyond the model). */
export const SCORE_ACTIVATION_BYTES = 256 * 2 ** 20;

/** A dataset to score, as a host hands it in (the app's Train panel: its data, templates and sequence length). */
export interface ScoreDatasetRequest {
  data: DatasetFile;
  templates: NlftTemplates;
  /** Longest sequence (prompt + response tokens); longer responses are truncated as training truncates them. */
  maxLen: number;
  /** Tokens per packed no-grad pass (absent or null: as many as `SCORE_ACTIVATION_BYTES` holds). */
  scoreBatchTokens?: number | null;
  /**
   * Score the negatives' anchors too (docs/method.md §3, anchored negatives), so that switching to
   * `negatives: anchor` re-classifies without a GPU pass. The app always asks for them.
   */
  anchors: boolean;
}

/** A dataset scored once: everything the explorer re-classifies, shows and stores (plain data; structured-clone safe). */
export interface ScoredDataset {
  /** The dataset's file name. */
  dataset: string;
  /** The trained model as the host names it. */
  model: string;
  /** The scorer that scored the views (docs/method.md §3.2), or null: the trained model did. */
  scorer: string | null;
  templates: NlftTemplates;
  maxLen: number;
  /** Records whose response was cut to fit `maxLen`. */
  truncated: number;
  /** Tokens per packed pass the scoring used. */
  passTokens: number;
  /** Whether the negatives' anchors were scored (`negatives: anchor` needs them). */
  anchors: boolean;
  /** What `classifyScores` needs of each record (an anchor carries only its response ids). */
  records: ScoredRecord[];
  /** The text of every token id the records and anchors hold. */
  tokenTexts: Record<number, string>;
  scores: DatasetScores;
  /** When it was scored (ISO 8601). */
  scoredAt: string;
}

/** The model that scores for the job: the loaded one (with its adapter's config, if any) and its tokenizer. */
export interface ScoringModel {
  llama: GpuLlama;
  tok: TextTokenizer;
  /** The name the result and messages carry. */
  name: string;
  lora: LoraConfig | null;
  /** Its parsed `tokenizer.json` (a scorer's vocabulary is checked against it). */
  tokenizerJson: unknown;
}

/** A scorer to upload for the job: its f32 weights, weight format and tokenizer (docs/method.md §3.2). */
export interface ScorerWeights {
  /** The scorer as the user named it (folder, Hub id). */
  id: string;
  weights: LlamaWeights;
  quant: QuantFormat;
  tokenizerJson: unknown;
}

/** How a host follows and stops the job. */
export interface ScoringControl {
  /** Records scored so far, of `total`. */
  onProgress?: (done: number, total: number) => void;
  /** Checked between packed passes: once aborted, the job ends and resolves null. */
  signal?: AbortSignal;
}

/** The token texts of the records' responses and anchors, by id. */
function tokenTextsOf(records: readonly ScoredRecord[], tok: TextTokenizer): Record<number, string> {
  const texts: Record<number, string> = {};
  for (const r of records) for (const id of [...r.responseIds, ...(r.anchor?.responseIds ?? [])]) texts[id] ??= tok.tokenText(id);
  return texts;
}

/** A record as the explorer keeps it: what classifying it needs (an anchor without its prompt). */
function scoredRecord(s: NlftSample): ScoredRecord {
  const anchor = s.anchor ? { ...s.anchor, promptIds: [] } : null;
  return { id: s.id, index: s.index, polarity: s.polarity, responseIds: s.responseIds, anchor };
}

/** Tokens the scoring of one sample feeds (base, standard and judge views, and its anchor). */
function sampleTokens(s: NlftSample, anchors: boolean): number {
  const n = s.responseIds.length;
  const anchor = anchors && s.anchor ? s.anchor.promptIds.length + s.anchor.responseIds.length : 0;
  return s.promptIds.length + s.standardIds.length + (s.judgeIds?.length ?? 0) + 3 * n + anchor;
}

/**
 * Scores `samples` with `llama` in packed passes of at most `passTokens` tokens, one group of
 * records at a time so that `signal` can end the job between passes (each record's scores equal
 * a pass of its own, so the grouping changes nothing). Resolves null when stopped.
 */
async function scoreInGroups(
  llama: GpuLlama,
  samples: readonly NlftSample[],
  passTokens: number,
  anchors: boolean,
  o: ScoringControl,
): Promise<DatasetScores | null> {
  const records: RecordScores[] = [];
  o.onProgress?.(0, samples.length);
  for (const group of groupByTokens(samples, (s) => sampleTokens(s, anchors), passTokens)) {
    if (o.signal?.aborted) return null;
    const done = records.length;
    const scored = await scoreRecords(llama, group, {
      maxTokens: passTokens,
      anchors,
      onProgress: (n) => o.onProgress?.(done + n, samples.length),
    });
    records.push(...scored.records);
  }
  return { hiddenSize: llama.config.hiddenSize, records };
}

/**
 * Scores a dataset's records once (docs/method.md §3.1) with `model`, or with `scorer` when given:
 * its vocabulary is checked against the model's, it is uploaded in its weight format, scores, and
 * its GPU buffers are freed before this resolves (§3.2). Passes are sized within
 * `SCORE_ACTIVATION_BYTES` unless the request asks for a number of tokens. Resolves the scored
 * dataset with the samples it was built from (a host may write their views), or null when stopped.
 *
 * @throws DatasetError, TemplateError naming the record, field or template; UsageError for a bad
 *   maxLen or pass size; NlftError ('scorer') for a scorer with another vocabulary, naming where it differs
 */
export async function scoreDataset(
  engine: Engine,
  model: ScoringModel,
  request: ScoreDatasetRequest,
  scorer: ScorerWeights | null,
  o: ScoringControl = {},
): Promise<{ scored: ScoredDataset; samples: NlftSample[] } | null> {
  checkOption('maxLen', request.maxLen);
  checkOption('scoreBatchTokens', request.scoreBatchTokens);
  const templates = parseTemplates(request.templates, 'NLFT templates');
  const records = parseDataset(request.data.bytes, request.data.name, { requireOutput: true }).records;
  return scoreParsed(engine, model, { ...request, templates }, records, scorer, o);
}

/** `scoreDataset` on records already parsed and templates already checked (`nlft score` reads its own files). */
export async function scoreParsed(
  engine: Engine,
  model: ScoringModel,
  request: Omit<ScoreDatasetRequest, 'data'> & { data: { name: string } },
  records: readonly DatasetRecord[],
  scorer: ScorerWeights | null,
  o: ScoringControl = {},
): Promise<{ scored: ScoredDataset; samples: NlftSample[] } | null> {
  const { samples, truncated } = nlftSamples(records, model.tok, request.templates, request.maxLen);
  if (scorer)
    checkScorerVocabulary({ model: { tokenizerJson: model.tokenizerJson } }, { model: { tokenizerJson: scorer.tokenizerJson } }, scorer.id);
  const maxBinding = engine.ctx.device.limits.maxStorageBufferBindingSize;
  const config = scorer ? scorer.weights.config : model.llama.config;
  const passTokens = scorePassTokens(
    config,
    scorer ? null : model.lora,
    request.scoreBatchTokens ?? null,
    SCORE_ACTIVATION_BYTES,
    maxBinding,
  );
  const llama = scorer ? GpuLlama.create(engine.ops, scorer.weights, scorer.quant) : model.llama;
  let scores: DatasetScores | null;
  try {
    scores = await scoreInGroups(llama, samples, passTokens, request.anchors, o);
  } finally {
    if (scorer) llama.destroy();
  }
  if (!scores) return null;
  engine.ctx.check(); // scores read after a refused command are not to be kept
  const kept = samples.map(scoredRecord);
  return {
    samples,
    scored: {
      dataset: request.data.name,
      model: model.name,
      scorer: scorer?.id ?? null,
      templates: request.templates,
      maxLen: request.maxLen,
      truncated,
      passTokens,
      anchors: request.anchors,
      records: kept,
      tokenTexts: tokenTextsOf(kept, model.tok),
      scores,
      scoredAt: new Date().toISOString(),
    },
  };
}
