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
import type { SequenceForward } from '../engine/train-pass.ts';
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

/** What classifying a record needs of it besides its scores. */
export type ScoredRecord = Pick<NlftSample, 'id' | 'index' | 'polarity' | 'responseIds' | 'anchor'>;

/** The saliency entry of a record from its views' scores and the saliency result. */
export function saliencyEntry(
  s: ScoredRecord,
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
function anchorSequence(anchor: TrainSample, terms: TermSet): NonNullable<SampleTerms['second']> {
  return { ...sequenceOf(anchor), kinds: terms.kinds, weights: terms.weights };
}

/**
 * The trainer's terms of one visit, and its report once the trainer ran it: an anchored record
 * trains its anchor as the second sequence and is reported with the anchor's pb and loss.
 */
function visitTerms(
  s: NlftSample,
  r: SaliencyResult,
  entry: SaliencyEntry,
  o: Pick<NlftMethodOptions, 'onEntry' | 'tokenText'>,
): SampleTerms {
  const terms = { kinds: r.kinds, weights: r.weights, extra: r.extra };
  if (!r.anchor || !s.anchor) return { ...terms, report: () => o.onEntry?.(entry) };
  const [anchor, at] = [s.anchor, r.anchor];
  return {
    ...terms,
    second: anchorSequence(anchor, at),
    report: (second) => second && o.onEntry?.(withAnchor(entry, anchor, at, second.scores.logp, second.loss, o.tokenText)),
  };
}

/** The anchors of the samples that have one (a run that trains them sizes its memory on them too). */
export function anchorSamples(samples: readonly TrainSample[]): TrainSample[] {
  return samples.flatMap((s) => (s as NlftSample).anchor ?? []);
}

/** Saliency of one record from its base-view scores and hidden states. */
export function recordSaliency(
  s: Pick<NlftSample, 'polarity' | 'anchor'>,
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
 * its tokens are weighted by `saliency` from that record's own scores and hidden states (so the
 * trainer may pack the step's base views in one pass) and the visit is reported through `onEntry`.
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
    async terms(sample: TrainSample, pass: SequenceForward) {
      const s = check(sample);
      const sc = side.get(s) ?? (await scoreSideViews(model, [s], o.maxBatchTokens))[0];
      const base = { logp: pass.scores.logp, log1mq: pass.scores.log1mq, hidden: await pass.hiddenRows() };
      const r = recordSaliency(s, base, sc, model.config.hiddenSize, o.saliency ?? {});
      const entry = saliencyEntry(s, o.stepOf?.() ?? null, { logpb: base.logp, logpc: sc.logpc, logpj: sc.logpj }, r, o.tokenText);
      return visitTerms(s, r, entry, o);
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
 * The warning a summary calls for, in words (docs/method.md §3): when most negatives have no unlikely
 * token and the authors' rule trains them towards their own wrong response, what is happening and
 * the settings that avoid it; null when that is not the case.
 */
export function towardsWarning(s: SaliencySummary): string | null {
  if (s.negativesRule !== 'authors' || s.negativesWithoutSaliency !== 'train' || s.negatives === 0) return null;
  if (s.negativesWithoutUnlikely * 2 <= s.negatives) return null;
  return (
    `${s.negativesWithoutUnlikely} of ${s.negatives} negatives have no unlikely token, so the authors' rule trains them towards ` +
    `their own wrong answers. To avoid it, train with anchored negatives (negatives: anchor), or leave those records out ` +
    `(negatives without an unlikely token: skip).`
  );
}

/**
 * One record's cached view scores (docs/method.md §3.1): everything `saliency` reads, so that any
 * constants re-classify the record on the CPU without a GPU pass. `hb` is (N, hiddenSize) row-major.
 */
export interface RecordScores {
  logpb: Float32Array;
  log1mpb: Float32Array;
  logpc: Float32Array;
  /** Negatives only. */
  logpj: Float32Array | null;
  hb: Float32Array;
  /**
   * A negative's anchor (its standard answer under the base prompt, docs/method.md §3), when scored
   * for `negatives anchor`: log q and log(1 − q) of each anchor token; otherwise null or absent.
   */
  anchor?: { logp: Float32Array; log1mq: Float32Array } | null;
}

/** The cached scores of a dataset, and the hidden size of the model that scored it. */
export interface DatasetScores {
  hiddenSize: number;
  records: RecordScores[];
}

/**
 * Scores every sample's three views without training (the GPU half of `nlft score`, of the summary
 * before `nlft train` and of static saliency; `classifyScores` is the CPU half): packed passes of at
 * most `maxTokens` tokens; with `anchors`, the negatives' anchors too (for `negatives anchor`);
 * `onProgress` gets the number of records done.
 */
export async function scoreRecords(
  model: GpuLlama,
  samples: readonly NlftSample[],
  o: { maxTokens?: number; anchors?: boolean; onProgress?: (done: number) => void } = {},
): Promise<DatasetScores> {
  const anchorOf = (s: NlftSample) => (o.anchors && s.polarity === 'negative' && s.anchor ? s.anchor : null);
  const reqs = samples.map((s) => {
    const anchor = anchorOf(s);
    return [{ ...viewSequence(s.promptIds, s.responseIds), hidden: true }, ...sideRequests(s), ...(anchor ? [sequenceOf(anchor)] : [])];
  });
  const ends = reqs.map((_, i) => reqs.slice(0, i + 1).reduce((a, r) => a + r.length, 0));
  const onDone = o.onProgress && ((n: number) => o.onProgress!(ends.filter((e) => e <= n).length));
  const scored = await model.scoreAll(reqs.flat(), o.maxTokens ?? DEFAULT_SCORE_BATCH_TOKENS, onDone);
  let at = 0;
  const records = samples.map((s, i) => {
    const [base, ...rest] = scored.slice(at, at + reqs[i].length);
    at += reqs[i].length;
    const a = anchorOf(s) ? rest.pop()! : null;
    const [std, judge] = rest;
    return {
      logpb: base.logp,
      log1mpb: base.log1mq,
      logpc: std.logp,
      logpj: judge ? judge.logp : null,
      hb: base.hidden!,
      anchor: a ? { logp: a.logp, log1mq: a.log1mq } : null,
    };
  });
  return { hiddenSize: model.config.hiddenSize, records };
}

/**
 * The CPU half (docs/method.md §3.1): classes, coefficients and terms of every record from its
 * cached scores under `opts`, with the saliency entries they give. No GPU; the same result as
 * scoring afresh with the same constants, bit for bit.
 */
export function classifyScores(
  records: readonly ScoredRecord[],
  scores: DatasetScores,
  opts: Partial<SaliencyOptions>,
  tokenText: (id: number) => string,
): { results: SaliencyResult[]; entries: SaliencyEntry[] } {
  if (scores.records.length !== records.length) {
    throw new NlftError(`${scores.records.length} records scored, ${records.length} to classify`, 'bad-position');
  }
  const results = records.map((s, i) => {
    const sc = scores.records[i];
    if (opts.negatives === 'anchor' && s.polarity === 'negative' && !(s.anchor && sc.anchor)) {
      throw new NlftError(
        `record ${s.index} (id ${s.id}): negatives anchor needs its anchor's scores; score the data again with negatives anchor`,
        'score-dump',
      );
    }
    return recordSaliency(s, { logp: sc.logpb, log1mq: sc.log1mpb, hidden: sc.hb }, sc, scores.hiddenSize, opts);
  });
  const entries = records.map((s, i) => {
    const [sc, r] = [scores.records[i], results[i]];
    const e = saliencyEntry(s, null, { logpb: sc.logpb, logpc: sc.logpc, logpj: sc.logpj }, r, tokenText);
    if (!r.anchor || !s.anchor || !sc.anchor) return e;
    const loss = recordLoss(r.anchor.kinds, r.anchor.weights, sc.anchor.logp, sc.anchor.log1mq);
    return withAnchor(e, s.anchor, r.anchor, sc.anchor.logp, loss, tokenText);
  });
  return { results, entries };
}

/**
 * NLFT with saliency fixed before training (docs/method.md §3.1, static saliency): each sample's
 * classes, coefficients and term kinds come from `fixed` (computed once from cached scores, by the
 * initial model or a scorer), so a step has no side-view pass and no hidden-state readback, as an
 * SFT step; the loss terms still use the trained model's own log pb of the visit, and each visit's
 * saliency entry reports that pb with the cached pc and pj.
 */
export function staticNlftMethod(
  fixed: ReadonlyMap<TrainSample, { scores: Pick<RecordScores, 'logpc' | 'logpj'>; result: SaliencyResult }>,
  o: Pick<NlftMethodOptions, 'tokenText' | 'onEntry' | 'stepOf'>,
): LossMethod {
  return {
    terms(sample: TrainSample, pass: SequenceForward) {
      const f = fixed.get(sample);
      if (!f) throw new NlftError(`record ${sample.index} (id ${sample.id}) has no saliency fixed before training`, 'dataset');
      const { result: r, scores: sc } = f;
      const { logp, log1mq } = pass.scores;
      const loss = recordLoss(r.kinds, r.weights, logp, log1mq) + (r.extra ? recordLoss(r.extra.kinds, r.extra.weights, logp, log1mq) : 0);
      const s = sample as NlftSample;
      const entry = saliencyEntry(s, o.stepOf?.() ?? null, { logpb: logp, logpc: sc.logpc, logpj: sc.logpj }, { ...r, loss }, o.tokenText);
      return visitTerms(s, r, entry, o);
    },
  };
}
