/**
 * The statistics and the table of a method comparison (docs/method.md §7.1): per arm the accuracy of
 * every seed, their mean and sample standard deviation, and the difference to a reference arm (SFT)
 * with a paired bootstrap interval over the test items. Pure: no GPU, no files.
 */
import { UsageError } from '../errors.ts';
import { Rng } from '../util/rng.ts';

/** The arithmetic mean (NaN for no values). */
export function mean(xs: readonly number[]): number {
  return xs.reduce((a, x) => a + x, 0) / xs.length;
}

/** The sample standard deviation (n − 1 in the denominator); null for fewer than two values. */
export function sampleSd(xs: readonly number[]): number | null {
  if (xs.length < 2) return null;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

/** The q-quantile of ascending `sorted` values, interpolated linearly between order statistics (R's type 7). */
export function quantile(sorted: readonly number[], q: number): number {
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

/** A difference of means with its bootstrap interval. */
export interface PairedDifference {
  /** mean(a) − mean(b) over the items. */
  diff: number;
  lo: number;
  hi: number;
  level: number;
  resamples: number;
  seed: number;
}

export interface BootstrapOptions {
  resamples: number;
  /** Central coverage of the interval, e.g. 0.95. */
  level: number;
  seed: number;
}

export const DEFAULT_BOOTSTRAP: BootstrapOptions = { resamples: 10_000, level: 0.95, seed: 0 };

/**
 * mean(a) − mean(b) of two per-item scores of the same items, with a percentile bootstrap interval:
 * each resample draws items with replacement (a seeded `Rng`, so the interval is the same for the
 * same seed) and keeps the pairs together; the interval is the central `level` of the resampled
 * differences.
 *
 * @throws UsageError when the lengths differ or there are no items
 */
export function pairedBootstrap(a: readonly number[], b: readonly number[], o: BootstrapOptions = DEFAULT_BOOTSTRAP): PairedDifference {
  if (a.length !== b.length || a.length === 0)
    throw new UsageError(`paired bootstrap: expected two equal, non-empty lists of item scores, found ${a.length} and ${b.length}`);
  const n = a.length;
  const d = a.map((x, i) => x - b[i]);
  const rng = new Rng(o.seed);
  const diffs = new Float64Array(o.resamples);
  for (let r = 0; r < o.resamples; r++) {
    let sum = 0;
    for (let k = 0; k < n; k++) sum += d[rng.int(n)];
    diffs[r] = sum / n;
  }
  const sorted = Array.from(diffs).sort((x, y) => x - y);
  const tail = (1 - o.level) / 2;
  return {
    diff: mean(d),
    lo: quantile(sorted, tail),
    hi: quantile(sorted, 1 - tail),
    level: o.level,
    resamples: o.resamples,
    seed: o.seed,
  };
}

/** One arm of a comparison as evaluated: per seed, which test items it got right, and the training time. */
export interface ArmOutcome {
  /** The arm as written in --arms, e.g. "nlft:negatives=anchor". */
  arm: string;
  seeds: number[];
  /** correct[s][i]: whether seed s's adapter answered test item i right. */
  correct: boolean[][];
  /** Training wall time per seed, in seconds. */
  trainSeconds: number[];
}

/** An arm's row of the comparison table. */
export interface ArmRow {
  arm: string;
  seeds: number[];
  /** Accuracy per seed, in [0, 1]. */
  accuracy: number[];
  mean: number;
  sd: number | null;
  /** Against the reference arm (per item, correctness averaged over seeds); null for the reference itself or without one. */
  vsReference: PairedDifference | null;
  trainSeconds: number;
}

/** Per item, the fraction of seeds that got it right. */
export function itemScores(correct: readonly boolean[][]): number[] {
  return correct[0].map((_, i) => mean(correct.map((c) => (c[i] ? 1 : 0))));
}

/**
 * The rows of the table: every arm's accuracies, mean ± sd, training time, and its difference to
 * the arm named `reference` (when there is one) as a paired bootstrap over the items.
 *
 * @throws UsageError when an arm was evaluated on other items than the reference
 */
export function compareRows(arms: readonly ArmOutcome[], reference: string, o: BootstrapOptions = DEFAULT_BOOTSTRAP): ArmRow[] {
  const ref = arms.find((a) => a.arm === reference);
  const refScores = ref ? itemScores(ref.correct) : null;
  return arms.map((a) => {
    const accuracy = a.correct.map((c) => mean(c.map((x) => (x ? 1 : 0))));
    return {
      arm: a.arm,
      seeds: a.seeds,
      accuracy,
      mean: mean(accuracy),
      sd: sampleSd(accuracy),
      vsReference: refScores && a !== ref ? pairedBootstrap(itemScores(a.correct), refScores, o) : null,
      trainSeconds: mean(a.trainSeconds),
    };
  });
}

const pct = (x: number) => `${(100 * x).toFixed(1)}`;
const signed = (x: number) => `${x >= 0 ? '+' : '−'}${pct(Math.abs(x))}`;

/** What the table was measured on, for its heading. */
export interface CompareSetting {
  /** The test file and how many items. */
  eval: string;
  items: number;
  /** The base model's accuracy on the same items. */
  base: number;
  reference: string;
}

/** The comparison as a Markdown table (accuracies in %, differences in points with their interval). */
export function compareMarkdown(rows: readonly ArmRow[], s: CompareSetting): string {
  const level = rows.find((r) => r.vsReference)?.vsReference?.level ?? DEFAULT_BOOTSTRAP.level;
  const lines = [
    `| arm | accuracy per seed (%) | mean ± sd (%) | vs ${s.reference} (points, ${Math.round(100 * level)} % CI) | train s |`,
    '|---|---|---|---|---|',
    `| base model | ${pct(s.base)} | ${pct(s.base)} | | |`,
    ...rows.map((r) => {
      const perSeed = r.accuracy.map((a, i) => `${pct(a)} (seed ${r.seeds[i]})`).join(', ');
      const sd = r.sd === null ? '' : ` ± ${pct(r.sd)}`;
      const v = r.vsReference;
      const vs = v ? `${signed(v.diff)} [${signed(v.lo)}, ${signed(v.hi)}]` : r.arm === s.reference ? '(reference)' : '';
      return `| ${r.arm} | ${perSeed} | ${pct(r.mean)}${sd} | ${vs} | ${r.trainSeconds.toFixed(1)} |`;
    }),
  ];
  return `${lines.join('\n')}\n\n${s.eval}: ${s.items} items, greedy, graded by the final number.\n`;
}
