/**
 * NLFT training and scoring on top of the engine (architecture.md §3): per record, no-grad passes
 * over the standard and (negatives) judge views give pc and pj; the base view's forward gives pb
 * and its final hidden states hb; `saliency` turns them into per-token classes, coefficients and
 * term kinds, which the fused cross-entropy backward consumes. Every visit of a record is kept as
 * a saliency entry (the app's saliency map, the run's saliency record).
 */
import type { DatasetRecord } from '../data/dataset.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import type { GpuLlama } from '../engine/llama.ts';
import type { TrainPass } from '../engine/train-pass.ts';
import { NlftError } from '../errors.ts';
import type { TrainSample } from '../train/samples.ts';
import type { TermsFn } from '../train/trainer.ts';
import { saliency, type Polarity, type SaliencyOptions, type SaliencyResult, type TokenClass } from './saliency.ts';
import type { NlftTemplates } from './templates.ts';
import { buildViews, viewSequence } from './views.ts';

/** A training sample with its NLFT views (the base view is `promptIds`). */
export interface NlftSample extends TrainSample {
  polarity: Polarity;
  standardIds: number[];
  judgeIds: number[] | null;
}

/** Build NLFT samples; every record needs an `output` and a known polarity. */
export function nlftSamples(records: readonly DatasetRecord[], tok: TextTokenizer, templates: NlftTemplates, maxLen: number): { samples: NlftSample[]; truncated: number } {
  if (records.length === 0) throw new NlftError('the dataset has no records: nothing to train on', 'dataset');
  let truncated = 0;
  const samples = records.map((r): NlftSample => {
    const v = buildViews(tok, r, templates, { maxLen });
    if (v.truncatedBy > 0) truncated++;
    return {
      id: r.id,
      index: r.index,
      promptIds: v.base,
      responseIds: v.response,
      truncatedBy: v.truncatedBy,
      polarity: r.polarity === 'negative' ? 'negative' : 'positive',
      standardIds: v.standard,
      judgeIds: v.judge,
    };
  });
  return { samples, truncated };
}

/** One token of a saliency entry. */
export interface SaliencyToken {
  id: number;
  text: string;
  pb: number;
  pc: number;
  pj: number | null;
  class: TokenClass;
  coefficient: number;
  kind: 'likelihood' | 'unlikelihood';
}

/** One record as NLFT weighted it (at one training step, or when scored). */
export interface SaliencyEntry {
  id: string;
  index: number;
  polarity: Polarity;
  /** The optimizer step this visit belongs to (null when scored without training). */
  step: number | null;
  loss: number;
  unlikelyFraction: number;
  sixPercentRule: boolean;
  skipped: boolean;
  tokens: SaliencyToken[];
}

/** log pc (and log pj for negatives) of the response under the no-grad views. */
export async function scoreSideViews(model: GpuLlama, s: NlftSample): Promise<{ logpc: Float32Array; logpj: Float32Array | null }> {
  const std = viewSequence(s.standardIds, s.responseIds);
  const logpc = (await model.score(std.ids, std.rows, std.targets)).logp;
  if (s.polarity !== 'negative' || !s.judgeIds) return { logpc, logpj: null };
  const jv = viewSequence(s.judgeIds, s.responseIds);
  return { logpc, logpj: (await model.score(jv.ids, jv.rows, jv.targets)).logp };
}

/** The saliency entry of a record from its views' scores and the saliency result. */
export function saliencyEntry(
  s: NlftSample,
  step: number | null,
  scores: { logpb: ArrayLike<number>; logpc: ArrayLike<number>; logpj: ArrayLike<number> | null },
  r: SaliencyResult,
  tokenText: (id: number) => string,
): SaliencyEntry {
  return {
    id: s.id,
    index: s.index,
    polarity: s.polarity,
    step,
    loss: r.loss ?? NaN,
    unlikelyFraction: r.unlikelyFraction,
    sixPercentRule: r.sixPercentRule,
    skipped: r.skipped,
    tokens: s.responseIds.map((id, t) => ({
      id,
      text: tokenText(id),
      pb: Math.exp(scores.logpb[t]),
      pc: Math.exp(scores.logpc[t]),
      pj: scores.logpj ? Math.exp(scores.logpj[t]) : null,
      class: r.classes[t],
      coefficient: r.coefficients[t],
      kind: r.kinds[t],
    })),
  };
}

/** Saliency of one record from its base-view scores and hidden states. */
export function recordSaliency(
  s: NlftSample,
  base: { logp: ArrayLike<number>; log1mq: ArrayLike<number>; hidden: ArrayLike<number> },
  side: { logpc: ArrayLike<number>; logpj: ArrayLike<number> | null },
  hiddenSize: number,
  opts: Partial<SaliencyOptions>,
): SaliencyResult {
  return saliency(
    { polarity: s.polarity, logpb: base.logp, log1mpb: base.log1mq, logpc: side.logpc, logpj: side.logpj ?? undefined, hb: base.hidden, hiddenSize },
    opts,
  );
}

/**
 * The NLFT loss for the trainer: scores the side views with the current adapters (no gradient),
 * weights the base view's tokens, and reports each visit through `onEntry`.
 */
export function nlftTerms(model: GpuLlama, opts: Partial<SaliencyOptions>, tokenText: (id: number) => string, onEntry?: (e: SaliencyEntry) => void, stepOf: () => number | null = () => null): TermsFn {
  return async (sample: TrainSample, pass: TrainPass) => {
    const s = sample as NlftSample;
    if (!s.standardIds) throw new NlftError(`record ${s.index} (id ${s.id}) has no NLFT views`, 'dataset');
    const side = await scoreSideViews(model, s);
    const base = { logp: pass.scores.logp, log1mq: pass.scores.log1mq, hidden: await pass.hiddenRows() };
    const r = recordSaliency(s, base, side, model.config.hiddenSize, opts);
    onEntry?.(saliencyEntry(s, stepOf(), { logpb: base.logp, logpc: side.logpc, logpj: side.logpj }, r, tokenText));
    return { kinds: r.kinds, weights: r.weights, extra: r.extra };
  };
}

/** Dataset-level view of a scoring pass (printed by the CLI, stored with the run). */
export interface SaliencySummary {
  records: number;
  positives: number;
  negatives: number;
  /** Negatives with no unlikely token: under the authors' rules they are trained towards their wrong response (weights sqrt(pc)). */
  negativesWithoutUnlikely: number;
  /** Negatives whose unlikely fraction exceeded unlikelyFractionMax (non-unlikely weights zeroed). */
  sixPercentRule: number;
  /** How `negativesWithoutSaliency` treats those records, and how many it affects. */
  negativesWithoutSaliency: 'train' | 'skip';
  affected: number;
  meanCoefficient: Record<TokenClass, number | null>;
  tokensByClass: Record<TokenClass, number>;
}

export function saliencySummary(entries: readonly SaliencyEntry[], mode: 'train' | 'skip'): SaliencySummary {
  const classes: TokenClass[] = ['correct', 'cluster', 'unlikely', 'plain'];
  const sum = Object.fromEntries(classes.map((c) => [c, 0])) as Record<TokenClass, number>;
  const count = Object.fromEntries(classes.map((c) => [c, 0])) as Record<TokenClass, number>;
  let negativesWithoutUnlikely = 0;
  for (const e of entries) {
    for (const t of e.tokens) {
      sum[t.class] += t.coefficient;
      count[t.class]++;
    }
    if (e.polarity === 'negative' && !e.tokens.some((t) => t.class === 'unlikely')) negativesWithoutUnlikely++;
  }
  return {
    records: entries.length,
    positives: entries.filter((e) => e.polarity === 'positive').length,
    negatives: entries.filter((e) => e.polarity === 'negative').length,
    negativesWithoutUnlikely,
    sixPercentRule: entries.filter((e) => e.sixPercentRule).length,
    negativesWithoutSaliency: mode,
    affected: negativesWithoutUnlikely,
    meanCoefficient: Object.fromEntries(classes.map((c) => [c, count[c] ? sum[c] / count[c] : null])) as Record<TokenClass, number | null>,
    tokensByClass: count,
  };
}

/** Score every sample without training (`nlft score`, and the summary before `nlft train`). */
export async function scoreSamples(model: GpuLlama, samples: readonly NlftSample[], opts: Partial<SaliencyOptions>, tokenText: (id: number) => string, onProgress?: (done: number) => void): Promise<SaliencyEntry[]> {
  const out: SaliencyEntry[] = [];
  for (const s of samples) {
    const side = await scoreSideViews(model, s);
    const bv = viewSequence(s.promptIds, s.responseIds);
    const base = await model.score(bv.ids, bv.rows, bv.targets, { hidden: true });
    const r = recordSaliency(s, { logp: base.logp, log1mq: base.log1mq, hidden: base.hidden! }, side, model.config.hiddenSize, opts);
    out.push(saliencyEntry(s, null, { logpb: base.logp, logpc: side.logpc, logpj: side.logpj }, r, tokenText));
    onProgress?.(out.length);
  }
  return out;
}
