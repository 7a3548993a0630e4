/**
 * NLFT training and scoring on top of the engine (docs/architecture.md §3): no-grad passes over the
 * standard and (negatives) judge views give pc and pj, several records packed per pass; the base
 * view's forward gives pb and its final hidden states hb; `saliency` turns them into per-token
 * classes, coefficients and term kinds, which the fused cross-entropy backward consumes. Every visit of a record is kept as
 * a saliency entry (the app's saliency map, the run's saliency record).
 */
import type { DatasetRecord } from '../data/dataset.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import type { GpuLlama, ScoreRequest } from '../engine/llama.ts';
import type { TrainPass } from '../engine/train-pass.ts';
import { NlftError } from '../errors.ts';
import { sequenceOf, type TrainSample } from '../data/prompt.ts';
import { answerSample } from '../train/samples.ts';
import type { LossMethod, SampleTerms } from '../train/trainer.ts';
import {
  recordLoss,
  saliency,
  type Polarity,
  type SaliencyOptions,
  type SaliencyResult,
  type TermSet,
  type TokenClass,
} from './saliency.ts';
import type { NlftTemplates } from './templates.ts';
import { buildViews, viewSequence } from './views.ts';

/** A training sample with its NLFT views (the base view is `promptIds`). */
export interface NlftSample extends TrainSample {
  polarity: Polarity;
  standardIds: number[];
  judgeIds: number[] | null;
  /**
   * A negative's anchor (docs/method.md §3, anchored negatives): its standard answer + end-of-sequence
   * under the base prompt, cut to fit maxLen as SFT cuts it; trained only under `negatives: 'anchor'`.
   * Null (or absent) for a positive.
   */
  anchor?: TrainSample | null;
}

/** Build NLFT samples; every record needs an `output` and a known polarity. */
export function nlftSamples(
  records: readonly DatasetRecord[],
  tok: TextTokenizer,
  templates: NlftTemplates,
  maxLen: number,
): { samples: NlftSample[]; truncated: number } {
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
      anchor: r.polarity === 'negative' ? answerSample(r, v.base, tok, maxLen) : null, // v.base fits, so the anchor cannot be refused
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

/** A negative's anchor as NLFT trained it (`negatives: 'anchor'`): its tokens with pb, the per-token weight, its loss. */
export interface SaliencyAnchor {
  tokens: Array<{ id: number; text: string; pb: number }>;
  /** The engine weight of every anchor token, lambda * anchorWeight / N_answer. */
  weight: number;
  /** sum_t weight * -log pb[t] over the anchor's tokens (included in the entry's `loss`). */
  loss: number;
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
  /** Present when the record trained its anchor (`negatives: 'anchor'`, a negative not skipped). */
  anchor?: SaliencyAnchor;
}

/** log pc of a record's response under the standard view and, for negatives, log pj under the judge view. */
export interface SideScores {
  logpc: Float32Array;
  logpj: Float32Array | null;
}

/** Tokens one packed no-grad pass takes when the caller sets no limit (see `scoreBatchTokens`). */
export const DEFAULT_SCORE_BATCH_TOKENS = 2048;

function sideRequests(s: NlftSample): ScoreRequest[] {
  const std = viewSequence(s.standardIds, s.responseIds);
  if (s.polarity !== 'negative' || !s.judgeIds) return [std];
  return [std, viewSequence(s.judgeIds, s.responseIds)];
}

/**
 * The no-grad views of several records (standard, and judge for negatives), packed into passes of
 * at most `maxTokens` tokens: each record's scores equal a pass of its own.
 */
export async function scoreSideViews(
  model: GpuLlama,
  samples: readonly NlftSample[],
  maxTokens = DEFAULT_SCORE_BATCH_TOKENS,
): Promise<SideScores[]> {
  const reqs = samples.map(sideRequests);
  const scored = await model.scoreAll(reqs.flat(), maxTokens);
  let at = 0;
  return reqs.map((r) => {
    const logpc = scored[at].logp;
    const logpj = r.length > 1 ? scored[at + 1].logp : null;
    at += r.length;
    return { logpc, logpj };
  });
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

/**
 * The entry of an anchored record: `anchor` filled from the anchor pass's log pb and its loss
 * added to the record's.
 */
function withAnchor(
  e: SaliencyEntry,
  anchor: TrainSample,
  terms: TermSet,
  logpb: ArrayLike<number>,
  loss: number,
  tokenText: (id: number) => string,
): SaliencyEntry {
  const tokens = anchor.responseIds.map((id, t) => ({ id, text: tokenText(id), pb: Math.exp(logpb[t]) }));
  return { ...e, loss: e.loss + loss, anchor: { tokens, weight: terms.weights[0], loss } };
}

/** The anchor's model input and terms, as the trainer's second sequence. */
function anchorSequence(anchor: TrainSample, terms: TermSet): Omit<NonNullable<SampleTerms['second']>, 'onForward'> {
  return { ...sequenceOf(anchor), kinds: terms.kinds, weights: terms.weights };
}

/** The anchors of the samples that have one (a run that trains them sizes its memory on them too). */
export function anchorSamples(samples: readonly TrainSample[]): TrainSample[] {
  return samples.flatMap((s) => (s as NlftSample).anchor ?? []);
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
    {
      polarity: s.polarity,
      logpb: base.logp,
      log1mpb: base.log1mq,
      logpc: side.logpc,
      logpj: side.logpj ?? undefined,
      hb: base.hidden,
      hiddenSize,
      anchorTokens: s.anchor?.responseIds.length,
    },
    opts,
  );
}

/** What NLFT training reports and how it batches (see `nlftMethod`). */
export interface NlftMethodOptions {
  saliency?: Partial<SaliencyOptions>;
  tokenText: (id: number) => string;
  /** Called with every visit's saliency entry (the run's saliency record). */
  onEntry?: (e: SaliencyEntry) => void;
  /** The optimizer step the next entries belong to. */
  stepOf?: () => number | null;
  /** Tokens per packed no-grad pass (the step's side views are scored together). */
  maxBatchTokens?: number;
}

/**
 * NLFT for the trainer: at the start of each optimizer step, the side views of all its records are
 * scored with the current adapters (no gradient, packed passes); after each record's base forward,
 * its tokens are weighted by `saliency` and the visit is reported through `onEntry`.
 */
export function nlftMethod(model: GpuLlama, o: NlftMethodOptions): LossMethod {
  let side = new Map<TrainSample, SideScores>();
  const check = (s: TrainSample): NlftSample => {
    if (!(s as NlftSample).standardIds) throw new NlftError(`record ${s.index} (id ${s.id}) has no NLFT views`, 'dataset');
    return s as NlftSample;
  };
  return {
    async beginStep(samples) {
      const unique = [...new Set(samples)].map(check);
      const scores = await scoreSideViews(model, unique, o.maxBatchTokens);
      side = new Map(unique.map((s, i) => [s, scores[i]]));
    },
    async terms(sample: TrainSample, pass: TrainPass) {
      const s = check(sample);
      const sc = side.get(s) ?? (await scoreSideViews(model, [s], o.maxBatchTokens))[0];
      const base = { logp: pass.scores.logp, log1mq: pass.scores.log1mq, hidden: await pass.hiddenRows() };
      const r = recordSaliency(s, base, sc, model.config.hiddenSize, o.saliency ?? {});
      const entry = saliencyEntry(s, o.stepOf?.() ?? null, { logpb: base.logp, logpc: sc.logpc, logpj: sc.logpj }, r, o.tokenText);
      const terms = { kinds: r.kinds, weights: r.weights, extra: r.extra };
      if (!r.anchor || !s.anchor) {
        o.onEntry?.(entry);
        return terms;
      }
      const [anchor, at] = [s.anchor, r.anchor];
      const onForward = (scores: { logp: ArrayLike<number> }, loss: number) =>
        o.onEntry?.(withAnchor(entry, anchor, at, scores.logp, loss, o.tokenText));
      return { ...terms, second: { ...anchorSequence(anchor, at), onForward } };
    },
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
  /** How negatives train (the option `negatives`), and how many trained their anchor. */
  negativesRule: 'authors' | 'anchor';
  anchored: number;
  meanCoefficient: Record<TokenClass, number | null>;
  tokensByClass: Record<TokenClass, number>;
}

export function saliencySummary(
  entries: readonly SaliencyEntry[],
  mode: 'train' | 'skip',
  negatives: 'authors' | 'anchor' = 'authors',
): SaliencySummary {
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
    negativesRule: negatives,
    anchored: entries.filter((e) => e.anchor).length,
    meanCoefficient: Object.fromEntries(classes.map((c) => [c, count[c] ? sum[c] / count[c] : null])) as Record<TokenClass, number | null>,
    tokensByClass: count,
  };
}

/**
 * Score every sample without training (`nlft score`, and the summary before `nlft train`): all three
 * views of the records in packed passes of at most `maxTokens` tokens; `onProgress` gets the number
 * of records done.
 */
export async function scoreSamples(
  model: GpuLlama,
  samples: readonly NlftSample[],
  opts: Partial<SaliencyOptions>,
  tokenText: (id: number) => string,
  o: { maxTokens?: number; onProgress?: (done: number) => void } = {},
): Promise<SaliencyEntry[]> {
  const anchored = (s: NlftSample) => (opts.negatives === 'anchor' && s.polarity === 'negative' && s.anchor ? s.anchor : null);
  const reqs = samples.map((s) => {
    const anchor = anchored(s);
    return [{ ...viewSequence(s.promptIds, s.responseIds), hidden: true }, ...sideRequests(s), ...(anchor ? [sequenceOf(anchor)] : [])];
  });
  const ends = reqs.map((_, i) => reqs.slice(0, i + 1).reduce((a, r) => a + r.length, 0));
  const onDone = o.onProgress && ((n: number) => o.onProgress!(ends.filter((e) => e <= n).length));
  const scored = await model.scoreAll(reqs.flat(), o.maxTokens ?? DEFAULT_SCORE_BATCH_TOKENS, onDone);
  let at = 0;
  return samples.map((s, i) => {
    const [base, ...rest] = scored.slice(at, at + reqs[i].length);
    at += reqs[i].length;
    const anchor = anchored(s);
    const a = anchor ? rest.pop()! : null;
    const [std, judge] = rest;
    const side = { logpc: std.logp, logpj: judge ? judge.logp : null };
    const r = recordSaliency(s, { logp: base.logp, log1mq: base.log1mq, hidden: base.hidden! }, side, model.config.hiddenSize, opts);
    const e = saliencyEntry(s, null, { logpb: base.logp, logpc: side.logpc, logpj: side.logpj }, r, tokenText);
    if (!anchor || !a || !r.anchor) return e;
    return withAnchor(e, anchor, r.anchor, a.logp, recordLoss(r.anchor.kinds, r.anchor.weights, a.logp, a.log1mq), tokenText);
  });
}
