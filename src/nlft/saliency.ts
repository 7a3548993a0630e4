/**
 * NLFT token saliency (docs/method.md §3–§4): from the three views' probabilities of one response and the
 * base view's final hidden states, the class of every response token and the per-token loss terms
 * the engine trains with (`TermKind` + weight w_t, the loss being sum_t w_t * term_t, see
 * `engine/train-pass.ts`). Pure CPU code: the hidden states are read back once per record.
 *
 * Positive record (no judgment):
 *   C = { t : pc > tauC },  K = expand(C),
 *   s = (pc/tauC)^0.6;  in K: (pc/tauC)^0.3;  in C: 1 + ((pc - tauC)/(1 - tauC))^5  (later overrides),
 *   every token a likelihood term with weight lambda * (1 + s) / N.
 * Negative record (with a judgment), r1 = pj/pb, r2 = pj/pc:
 *   U = { t : r1 > rho and r2 > rho and pj > pjMin },  K = expand(U),
 *   w = sqrt(pc) (0 for every token when |U|/N > unlikelyFractionMax);  in K: 0;  in U: 2*sigmoid(r1 - theta),
 *   U tokens an unlikelihood term, the others a likelihood term, weight lambda * w / N.
 * Negative record under `negatives: 'anchor'` (docs/method.md §3, anchored negatives): U as above with
 *   the same unlikelihood weights, every other token weight 0; plus the anchor, the record's standard
 *   answer under the base prompt, every token a likelihood term of weight lambda * anchorWeight / N_answer.
 */
import type { TermKind } from '../engine/train-pass.ts';
import { NlftError } from '../errors.ts';
import { checkRule, finiteNumber, isBoolean, isNonNegative, isOneOf, isPositive, type OptionRule } from '../util/options.ts';

/** How `expandClusters` decides whether a neighbour joins the cluster (docs/method.md §4). */
export type ClusterCriterion = 'distance' | 'similarity';

/** The constants of docs/method.md §3–§4, all with the spec's defaults (`DEFAULT_SALIENCY`). */
export interface SaliencyOptions {
  /** Overall loss scale. Default 10. */
  lambda: number;
  /** A positive record's token is *correct* when pc > tauC. In (0, 1). Default 0.95. */
  tauC: number;
  /** A negative record's token is *unlikely* only when both pj/pb and pj/pc exceed rho. Default 1.5. */
  rho: number;
  /** Offset of the unlikelihood weight 2*sigmoid(pj/pb - theta). Default 1.5 (the authors' run script). */
  theta: number;
  /** Cluster expansion threshold (see `clusterCriterion`). Default 0.4. */
  delta: number;
  /** A token is unlikely only when pj > pjMin. Default 0.01. */
  pjMin: number;
  /** When more than this fraction of a negative's tokens is unlikely, its other tokens get weight 0. Default 0.06. */
  unlikelyFractionMax: number;
  /**
   * 'distance' (default, the authors' code): a neighbour joins while 1 - cos(centre, hb[j]) > delta,
   * i.e. clusters grow across *dissimilar* neighbours. 'similarity': while cos(centre, hb[j]) > 1 - delta.
   */
  clusterCriterion: ClusterCriterion;
  /**
   * Add a plain SFT term, lambda * (1/N) * sum_t -log pb[t], on a negative record's own tokens
   * (correctly aligned; the authors' misaligned version is not reproduced). Default false.
   * It comes back as `SaliencyResult.extra`, a second term set (see there).
   */
  sftOnNegatives: boolean;
  /**
   * A negative record with no unlikely token: 'train' (default, the authors' behaviour) keeps its
   * weights sqrt(pc) on likelihood terms, i.e. trains *towards* the wrong response; 'skip' gives it
   * all-zero weights (and no SFT term) and sets `skipped`.
   */
  negativesWithoutSaliency: 'train' | 'skip';
  /**
   * How a negative record trains (docs/method.md §3). 'authors' (default): the rules above.
   * 'anchor': its response keeps only the unlikelihood terms of its unlikely tokens (every other
   * token weight 0), and the record also trains its standard answer (the anchor, `SaliencyResult.anchor`).
   */
  negatives: 'authors' | 'anchor';
  /** Under `negatives: 'anchor'`: the anchor's total weight before lambda, spread over its N_answer tokens. Default 1. */
  anchorWeight: number;
}

export const DEFAULT_SALIENCY: Readonly<SaliencyOptions> = Object.freeze({
  lambda: 10,
  tauC: 0.95,
  rho: 1.5,
  theta: 1.5,
  delta: 0.4,
  pjMin: 0.01,
  unlikelyFractionMax: 0.06,
  clusterCriterion: 'distance',
  sftOnNegatives: false,
  negativesWithoutSaliency: 'train',
  negatives: 'authors',
  anchorWeight: 1,
});

export type Polarity = 'positive' | 'negative';

/**
 * One record's scores. Each view is given either as probabilities (`pb`, `pc`, `pj`) or as
 * log-probabilities (`logpb`, `logpc`, `logpj`, e.g. the engine's `PositionScores.logp`); when a
 * view has both, the log-probabilities are used. N (the response length) is the length of the
 * standard view. The ratios r1 = pj/pb and r2 = pj/pc are computed as exp(logpj - logpb) when both
 * views come as log-probabilities (exact for probabilities too small for their quotient to be
 * formed from the probabilities themselves), else as the quotient of the probabilities.
 */
export interface SaliencyInput {
  polarity: Polarity;
  /** Base view (the trained one). Required for negatives; for positives only needed for `loss`. */
  pb?: ArrayLike<number>;
  logpb?: ArrayLike<number>;
  /** log(1 - pb) as the engine computes it (`PositionScores.log1mq`), for `loss`; else log1p(-pb). */
  log1mpb?: ArrayLike<number>;
  /** Standard view. Required. */
  pc?: ArrayLike<number>;
  logpc?: ArrayLike<number>;
  /** Judge view. Required for negatives. */
  pj?: ArrayLike<number>;
  logpj?: ArrayLike<number>;
  /** Base view's final hidden states, (N, hiddenSize) row-major. */
  hb: ArrayLike<number>;
  hiddenSize: number;
  /** N_answer, the tokens of the record's anchor (standard answer + end-of-sequence): needed for a negative under `negatives: 'anchor'`. */
  anchorTokens?: number;
}

/**
 * A token's saliency class: 'correct' (positive, pc > tauC), 'unlikely' (negative, in U),
 * 'cluster' (reached by the expansion of those seeds without being one), 'plain' (the rest).
 */
export type TokenClass = 'correct' | 'cluster' | 'unlikely' | 'plain';

/** A set of per-token terms in the engine's form. */
export interface TermSet {
  kinds: TermKind[];
  /** The engine's per-token coefficient w_t (lambda and 1/N included). */
  weights: Float64Array;
}

export interface SaliencyResult extends TermSet {
  classes: TokenClass[];
  /** s[t] (positive) or w[t] (negative) before lambda and 1/N, for the saliency map. */
  coefficients: Float64Array;
  /**
   * `sftOnNegatives` on a negative record that is not skipped: the plain SFT term set (every token
   * a likelihood term of weight lambda/N). It is a second term set rather than merged into
   * `weights` because an unlikely token would need a likelihood and an unlikelihood term at once,
   * and the engine takes one (kind, weight) per position: their sum has no constant coefficient of
   * one kind (it equals a likelihood term of weight lambda/N - u*pb/(1-pb), which depends on the
   * current pb and has a different loss value). The engine's backward is linear in its per-row
   * coefficient pairs, so a caller trains both sets in one pass by adding
   * `lossCoefficients(extra...)` to `lossCoefficients(main...)` elementwise, and reports the sum of
   * the two `lossValue`s.
   */
  extra?: TermSet;
  /**
   * `negatives: 'anchor'` on a negative record that is not skipped (and anchorWeight > 0): the
   * terms of its anchor sequence (base prompt + standard answer + end-of-sequence), every token a
   * likelihood term of weight lambda * anchorWeight / N_answer. The anchor is another sequence, so
   * it is trained in a pass of its own (the trainer's `SampleTerms.second`); its pb comes from that
   * pass, and `loss` does not include it.
   */
  anchor?: TermSet;
  /** The record's loss (main terms plus `extra`), present when the base view was given. */
  loss?: number;
  /** |U|/N for a negative record, 0 for a positive one. */
  unlikelyFraction: number;
  /** Whether the |U|/N > unlikelyFractionMax rule zeroed the negative's non-unlikely tokens. */
  sixPercentRule: boolean;
  /** A negative without unlikely tokens under negativesWithoutSaliency 'skip': all weights are 0. */
  skipped: boolean;
}

/**
 * docs/method.md §4. For each seed i (ascending, each independently): centre = hb[i]; walk left
 * j = i-1, i-2, ... adding j and setting centre = (centre + hb[j]) / 2 while the criterion holds,
 * stopping at the first j where it fails; then walk right j = i+1, ... the same way, *continuing
 * with the centre the left walk ended with* (not reset to hb[i], as in the authors' code). The
 * seeds themselves are in the result. Criterion 'distance': 1 - cos(centre, hb[j]) > delta;
 * 'similarity': cos(centre, hb[j]) > 1 - delta.
 */
export function expandClusters(
  seeds: Iterable<number>,
  hb: ArrayLike<number>,
  N: number,
  C: number,
  delta: number,
  criterion: ClusterCriterion,
): Set<number> {
  if (hb.length !== N * C) throw new NlftError(`hidden states hold ${hb.length} values, expected ${N} x ${C}`, 'bad-position');
  const joins = criterion === 'distance' ? (cos: number) => 1 - cos > delta : (cos: number) => cos > 1 - delta;
  // Squared norms of the rows, once; the centre's alongside its updates (the same sums, in the same
  // order, as a cosine computing both each time, so the result is unchanged, about twice as fast).
  const rowSq = new Float64Array(N);
  for (let j = 0; j < N; j++) for (let k = 0; k < C; k++) rowSq[j] += hb[j * C + k] * hb[j * C + k];
  /** cos(centre, hb[j]) in f64; 0 when either vector is zero (as a norm-clamped cosine gives). */
  const cosine = (centre: Float64Array, centreSq: number, j: number) => {
    let dot = 0;
    const row = j * C;
    for (let k = 0; k < C; k++) dot += centre[k] * hb[row + k];
    return centreSq === 0 || rowSq[j] === 0 ? 0 : dot / Math.sqrt(centreSq * rowSq[j]);
  };
  const out = new Set<number>();
  const sorted = [...seeds].sort((a, b) => a - b);
  for (const i of sorted) {
    if (!Number.isInteger(i) || i < 0 || i >= N)
      throw new NlftError(`cluster seed ${i} is outside the response (0..${N - 1})`, 'bad-position');
  }
  for (const i of sorted) {
    if (out.size === N) break; // every position is in: later walks cannot add one
    out.add(i);
    const centre = Float64Array.from({ length: C }, (_, k) => hb[i * C + k]);
    let centreSq = rowSq[i];
    const walk = (from: number, step: number) => {
      for (let j = from; j >= 0 && j < N && joins(cosine(centre, centreSq, j)); j += step) {
        out.add(j);
        centreSq = 0;
        const row = j * C;
        for (let k = 0; k < C; k++) {
          centre[k] = (centre[k] + hb[row + k]) / 2;
          centreSq += centre[k] * centre[k];
        }
      }
    };
    walk(i - 1, -1);
    walk(i + 1, +1);
  }
  return out;
}

/** Sum over tokens of weights[t] * (-log pb[t]) (likelihood) or weights[t] * (-log(1 - pb[t])) (unlikelihood). */
export function recordLoss(
  kinds: readonly TermKind[],
  weights: ArrayLike<number>,
  logpb: ArrayLike<number>,
  log1mpb: ArrayLike<number>,
): number {
  let s = 0;
  for (let t = 0; t < kinds.length; t++) s += weights[t] * -(kinds[t] === 'likelihood' ? logpb[t] : log1mpb[t]);
  return s;
}

/** The rule of each NLFT constant and safeguard (docs/method.md §3). */
export const SALIENCY_OPTION_RULES = {
  lambda: { expected: 'a non-negative number', ok: isNonNegative },
  tauC: { expected: 'a number in (0, 1)', ok: finiteNumber((v) => v > 0 && v < 1) },
  rho: { expected: 'a positive number', ok: isPositive },
  theta: { expected: 'a number', ok: finiteNumber(() => true) },
  delta: { expected: 'a number in [0, 2]', ok: finiteNumber((v) => v >= 0 && v <= 2) },
  pjMin: { expected: 'a probability in [0, 1)', ok: finiteNumber((v) => v >= 0 && v < 1) },
  unlikelyFractionMax: { expected: 'a fraction in [0, 1]', ok: finiteNumber((v) => v >= 0 && v <= 1) },
  clusterCriterion: { expected: 'distance or similarity', ok: isOneOf('distance', 'similarity') },
  sftOnNegatives: { expected: 'true or false', ok: isBoolean },
  negativesWithoutSaliency: { expected: 'train or skip', ok: isOneOf('train', 'skip') },
  negatives: { expected: 'authors or anchor', ok: isOneOf('authors', 'anchor') },
  anchorWeight: { expected: 'a non-negative number', ok: isNonNegative },
} satisfies Record<keyof SaliencyOptions, OptionRule>;

/**
 * Checks every NLFT constant and safeguard, and that `sftOnNegatives` is not combined with
 * `negatives: 'anchor'` (it would train every token of the response the anchor replaces).
 *
 * @throws UsageError naming the first bad one
 */
export function checkSaliencyOptions(o: SaliencyOptions): void {
  for (const [name, rule] of Object.entries(SALIENCY_OPTION_RULES)) checkRule(name, rule, o[name as keyof SaliencyOptions]);
  if (o.negatives === 'anchor') {
    checkRule(
      'sftOnNegatives',
      { expected: 'false with negatives anchor (the anchor trains the standard answer instead)', ok: (v) => v === false },
      o.sftOnNegatives,
    );
  }
}

/** One view as probabilities and log-probabilities, and whether it came as log-probabilities. */
interface View {
  p: Float64Array;
  logp: Float64Array;
  fromLog: boolean;
}

function view(name: 'base' | 'standard' | 'judge', p: ArrayLike<number> | undefined, logp: ArrayLike<number> | undefined, N: number): View {
  const src = logp ?? p;
  const key = { base: 'b', standard: 'c', judge: 'j' }[name];
  if (!src) throw new NlftError(`saliency needs the ${name} view's probabilities (p${key} or logp${key})`, 'usage');
  if (src.length !== N) throw new NlftError(`the ${name} view scores ${src.length} tokens, the standard view ${N}`, 'bad-position');
  if (logp) return { logp: Float64Array.from(logp), p: Float64Array.from(logp, Math.exp), fromLog: true };
  return { p: Float64Array.from(p!), logp: Float64Array.from(p!, Math.log), fromLog: false };
}

/** a/b for token t, in log space when both views came as log-probabilities. */
function ratio(a: View, b: View, t: number): number {
  return a.fromLog && b.fromLog ? Math.exp(a.logp[t] - b.logp[t]) : a.p[t] / b.p[t];
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** Classes and loss terms of one record (docs/method.md §3). */
export function saliency(input: SaliencyInput, options: Partial<SaliencyOptions> = {}): SaliencyResult {
  const o: SaliencyOptions = { ...DEFAULT_SALIENCY, ...options };
  checkSaliencyOptions(o);
  const N = (input.logpc ?? input.pc)?.length ?? 0;
  if (N === 0) throw new NlftError('saliency needs a response of at least one token (and the standard view scored)', 'empty-input');
  const standard = view('standard', input.pc, input.logpc, N);
  const pc = standard.p;
  const base = input.pb || input.logpb ? view('base', input.pb, input.logpb, N) : undefined;
  if (input.hb.length !== N * input.hiddenSize) {
    throw new NlftError(`hidden states hold ${input.hb.length} values, expected ${N} tokens x ${input.hiddenSize}`, 'bad-position');
  }
  const expand = (seeds: number[]) => expandClusters(seeds, input.hb, N, input.hiddenSize, o.delta, o.clusterCriterion);
  const classes: TokenClass[] = new Array(N).fill('plain');
  const coefficients = new Float64Array(N);
  const weights = new Float64Array(N);
  const kinds: TermKind[] = new Array(N).fill('likelihood');
  let unlikelyFraction = 0;
  let sixPercentRule = false;
  let skipped = false;
  let extra: TermSet | undefined;
  let anchor: TermSet | undefined;

  if (input.polarity === 'positive') {
    const correct = [...pc.keys()].filter((t) => pc[t] > o.tauC);
    const cluster = expand(correct);
    for (let t = 0; t < N; t++) {
      const q = pc[t] / o.tauC;
      if (pc[t] > o.tauC) {
        classes[t] = 'correct';
        coefficients[t] = 1 + ((pc[t] - o.tauC) / (1 - o.tauC)) ** 5;
      } else if (cluster.has(t)) {
        classes[t] = 'cluster';
        coefficients[t] = q ** 0.3;
      } else {
        coefficients[t] = q ** 0.6;
      }
      weights[t] = (o.lambda * (1 + coefficients[t])) / N;
    }
  } else {
    if (!base) throw new NlftError('saliency of a negative record needs the base view (pb or logpb)', 'usage');
    const judge = view('judge', input.pj, input.logpj, N);
    const r1 = Float64Array.from({ length: N }, (_, t) => ratio(judge, base, t));
    const unlikely = [...r1.keys()].filter((t) => r1[t] > o.rho && ratio(judge, standard, t) > o.rho && judge.p[t] > o.pjMin);
    unlikelyFraction = unlikely.length / N;
    sixPercentRule = unlikelyFraction > o.unlikelyFractionMax;
    skipped = unlikely.length === 0 && o.negativesWithoutSaliency === 'skip';
    const anchored = o.negatives === 'anchor';
    const inU = new Set(unlikely);
    const cluster = expand(unlikely);
    for (let t = 0; t < N; t++) {
      if (inU.has(t)) {
        classes[t] = 'unlikely';
        kinds[t] = 'unlikelihood';
        coefficients[t] = 2 * sigmoid(r1[t] - o.theta);
      } else if (cluster.has(t)) {
        classes[t] = 'cluster';
      } else if (!sixPercentRule && !skipped && !anchored) {
        coefficients[t] = Math.sqrt(pc[t]);
      }
      weights[t] = (o.lambda * coefficients[t]) / N;
    }
    if (o.sftOnNegatives && !skipped) {
      extra = { kinds: new Array<TermKind>(N).fill('likelihood'), weights: new Float64Array(N).fill(o.lambda / N) };
    }
    if (anchored && !skipped && o.anchorWeight > 0) anchor = anchorTerms(input.anchorTokens, o);
  }

  let loss: number | undefined;
  if (base) {
    const log1mpb = input.log1mpb ?? Float64Array.from(base.p, (p) => Math.log1p(-p));
    if (log1mpb.length !== N) throw new NlftError(`log1mpb scores ${log1mpb.length} tokens, the standard view ${N}`, 'bad-position');
    loss = recordLoss(kinds, weights, base.logp, log1mpb) + (extra ? recordLoss(extra.kinds, extra.weights, base.logp, log1mpb) : 0);
  }
  return { classes, kinds, weights, coefficients, extra, anchor, loss, unlikelyFraction, sixPercentRule, skipped };
}

/** The anchor's terms (docs/method.md §3, anchored negatives): N_answer likelihood terms of weight lambda * anchorWeight / N_answer. */
function anchorTerms(n: number | undefined, o: SaliencyOptions): TermSet {
  if (n === undefined || !Number.isInteger(n) || n < 1) {
    throw new NlftError(`negatives anchor: a negative record needs its anchor (the standard answer's tokens), got ${n} tokens`, 'usage');
  }
  return { kinds: new Array<TermKind>(n).fill('likelihood'), weights: new Float64Array(n).fill((o.lambda * o.anchorWeight) / n) };
}
