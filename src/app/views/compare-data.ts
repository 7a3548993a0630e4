/**
 * What the Compare view shows, without any DOM (docs/method.md §7.1): which stored evaluations can
 * be compared (the same test file and the same items), the columns of its chart and per-item grid,
 * how many items each pair of columns disagrees on, each column's difference to the first with a
 * paired bootstrap over the items, and a `compare.json` written by `nlft compare --out` read into
 * the same columns (one per arm, its items scored by the fraction of seeds that got them right).
 */
import { NlftError } from '../../errors.ts';
import { describeSystem } from '../../eval/accuracy.ts';
import { type ArmRow, mean, type PairedDifference, pairedBootstrap } from '../../eval/compare.ts';
import type { EvalOutcome } from '../../session/requests.ts';
import { describeJsonValue, isRecord } from '../../util/json.ts';

/** A test item as the grid lists it. */
export interface CompareItem {
  index: number;
  /** The standard answer's final number (null: it has none). */
  expected: string | null;
}

/** One thing evaluated: a bar of the chart and a column of the grid. */
export interface CompareColumn {
  /** What was evaluated: "base model", the adapter or run, or the arm. */
  title: string;
  /** The rest of what the bar says: model, system text, seeds (may be empty). */
  detail: string;
  /** Per item: 1 right, 0 wrong, or the fraction of seeds that got it right. */
  scores: number[];
  /** Per evaluation behind the column (one, or one per seed): the seed (null: none) and its counts. */
  runs: { seed: number | null; correct: number; total: number }[];
}

/** Columns over the same items. */
export interface Comparison {
  items: CompareItem[];
  columns: CompareColumn[];
}

/** The test file of a stored evaluation: its `dataName`, else read from its label; null when neither says. */
export function evalDataName(o: EvalOutcome): string | null {
  return o.dataName ?? /; (.+?), greedy, /.exec(o.label)?.[1] ?? null;
}

/**
 * Why `other` cannot stand next to `first` (another test file, another number of items, or other
 * expected answers in order), or null when it can.
 */
export function whyNotComparable(first: EvalOutcome, other: EvalOutcome): string | null {
  const [a, b] = [evalDataName(first), evalDataName(other)];
  if (a !== null && b !== null && a !== b) return `another test file (${b}, not ${a})`;
  if (other.items.length !== first.items.length) {
    const stopped = other.stopped ? ', stopped early' : '';
    return `another number of items (${other.items.length}${stopped}, not ${first.items.length})`;
  }
  const k = other.items.findIndex((it, i) => it.expected !== first.items[i].expected);
  if (k >= 0) {
    const show = (v: string | null) => v ?? 'none';
    return `other items: item #${other.items[k].index} expects ${show(other.items[k].expected)}, not ${show(first.items[k].expected)}`;
  }
  return null;
}

/** What a stored evaluation evaluated, for its bar: the adapter (or the base model) and, apart, model and system text. */
export function evalTitle(o: EvalOutcome): { title: string; detail: string } {
  if (o.adapter === undefined || o.model === undefined || o.system === undefined) return { title: o.label, detail: '' };
  return { title: o.adapter ? o.adapter.description : 'base model', detail: `${o.model} · ${describeSystem(o.system)}` };
}

/** The column of one stored evaluation (every item right or wrong). */
function evalColumn(o: EvalOutcome): CompareColumn {
  const scores = o.items.map((it) => (it.correct ? 1 : 0));
  const correct = scores.filter((s) => s === 1).length;
  return { ...evalTitle(o), scores, runs: [{ seed: null, correct, total: scores.length }] };
}

/**
 * The chosen evaluations that can be compared with the first of them, in the order given, and
 * each one left out with the reason.
 */
export function comparableEvals(chosen: readonly EvalOutcome[]): {
  kept: EvalOutcome[];
  left: { outcome: EvalOutcome; why: string }[];
} {
  const kept: EvalOutcome[] = [];
  const left: { outcome: EvalOutcome; why: string }[] = [];
  for (const o of chosen) {
    const why = kept.length ? whyNotComparable(kept[0], o) : null;
    if (why) left.push({ outcome: o, why });
    else kept.push(o);
  }
  return { kept, left };
}

/** Stored evaluations side by side (they must be comparable: see `comparableEvals`); no columns for none. */
export function evalComparison(outcomes: readonly EvalOutcome[]): Comparison {
  const items = (outcomes[0]?.items ?? []).map((it) => ({ index: it.index, expected: it.expected }));
  return { items, columns: outcomes.map(evalColumn) };
}

/** A column's accuracy: its mean item score (the mean over seeds of their accuracies). */
export const columnAccuracy = (c: CompareColumn): number => mean(c.scores);

/** Where the columns differ: per item whether any two disagree, and per pair of columns (i < j) on how many items. */
export function disagreements(c: Comparison): { items: boolean[]; pairs: { a: number; b: number; count: number }[] } {
  const items = c.items.map((_, k) => c.columns.some((col) => col.scores[k] !== c.columns[0].scores[k]));
  const pairs: { a: number; b: number; count: number }[] = [];
  for (let a = 0; a < c.columns.length; a++)
    for (let b = a + 1; b < c.columns.length; b++) {
      const count = c.items.filter((_, k) => c.columns[a].scores[k] !== c.columns[b].scores[k]).length;
      pairs.push({ a, b, count });
    }
  return { items, pairs };
}

/** Each column's accuracy minus the first's, with a paired bootstrap interval over the items (null for the first). */
export function differencesToFirst(c: Comparison): (PairedDifference | null)[] {
  return c.columns.map((col, i) => (i === 0 || c.items.length === 0 ? null : pairedBootstrap(col.scores, c.columns[0].scores)));
}

/** A compare.json as the view shows it: its columns (the base model, then one per arm) and its table rows. */
export interface ImportedComparison {
  file: string;
  command: string | null;
  /** The test file as the command named it. */
  eval: string | null;
  reference: string;
  comparison: Comparison;
  rows: ArmRow[];
}

/**
 * Reads a `compare.json` written by `nlft compare --out`: its items, the base model's and every
 * run's per-item correctness, and the table rows. Other fields are kept as written, not checked.
 *
 * @throws NlftError ('compare-file') naming the file and the field that is wrong, what was expected and what was found
 */
export function readCompareJson(text: string, file: string): ImportedComparison {
  const fail = (field: string, expected: string, found: unknown) =>
    new NlftError(`${file}: field "${field}": expected ${expected}, found ${describeJsonValue(found)}`, 'compare-file');
  let top: unknown;
  try {
    top = JSON.parse(text);
  } catch (e) {
    throw new NlftError(
      `${file}: not JSON (${(e as Error).message}); expected the compare.json that nlft compare --out writes`,
      'compare-file',
    );
  }
  if (!isRecord(top)) throw fail('(top level)', 'an object', top);
  const str = (v: unknown, field: string): string => {
    if (typeof v !== 'string') throw fail(field, 'a string', v);
    return v;
  };
  const num = (v: unknown, field: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw fail(field, 'a number', v);
    return v;
  };
  const list = (v: unknown, field: string, what: string): unknown[] => {
    if (!Array.isArray(v)) throw fail(field, `a list of ${what}`, v);
    return v;
  };
  const obj = (v: unknown, field: string): Record<string, unknown> => {
    if (!isRecord(v)) throw fail(field, 'an object', v);
    return v;
  };
  const rawItems = list(top.items, 'items', 'test items');
  if (rawItems.length === 0) throw fail('items', 'at least one test item', rawItems);
  const items = rawItems.map((v, i) => {
    const it = obj(v, `items[${i}]`);
    if (!Number.isInteger(it.index)) throw fail(`items[${i}].index`, 'a whole number', it.index);
    if (it.expected !== null && typeof it.expected !== 'string') throw fail(`items[${i}].expected`, 'a string or null', it.expected);
    return { index: it.index as number, expected: it.expected as string | null };
  });
  const correctness = (v: unknown, field: string): boolean[] => {
    const xs = list(v, field, `${items.length} true/false values`);
    if (xs.length !== items.length || !xs.every((x) => typeof x === 'boolean'))
      throw fail(field, `a list of ${items.length} true/false values (one per item)`, v);
    return xs as boolean[];
  };
  const base = obj(top.base, 'base');
  const baseCorrect = correctness(base.correct, 'base.correct');
  const runs = list(top.runs, 'runs', 'runs').map((v, i) => {
    const r = obj(v, `runs[${i}]`);
    if (!Number.isInteger(r.seed)) throw fail(`runs[${i}].seed`, 'a whole number', r.seed);
    const system = r.system === undefined ? null : str(r.system, `runs[${i}].system`);
    return { arm: str(r.arm, `runs[${i}].arm`), seed: r.seed as number, system, correct: correctness(r.correct, `runs[${i}].correct`) };
  });
  const reference = str(top.reference, 'reference');
  const rows = list(top.rows, 'rows', 'table rows').map((v, i): ArmRow => {
    const r = obj(v, `rows[${i}]`);
    const at = (k: string) => `rows[${i}].${k}`;
    const arm = str(r.arm, at('arm'));
    if (!runs.some((run) => run.arm === arm)) throw fail(at('arm'), 'an arm that has runs in "runs"', arm);
    const seeds = list(r.seeds, at('seeds'), 'seeds').map((s, k) => num(s, `${at('seeds')}[${k}]`));
    const accuracy = list(r.accuracy, at('accuracy'), 'accuracies').map((a, k) => num(a, `${at('accuracy')}[${k}]`));
    if (accuracy.length !== seeds.length) throw fail(at('accuracy'), `${seeds.length} accuracies (one per seed)`, r.accuracy);
    const sd = r.sd === null ? null : num(r.sd, at('sd'));
    let vsReference: PairedDifference | null = null;
    if (r.vsReference !== null) {
      const d = obj(r.vsReference, at('vsReference'));
      const f = (k: string) => num(d[k], `${at('vsReference')}.${k}`);
      vsReference = { diff: f('diff'), lo: f('lo'), hi: f('hi'), level: f('level'), resamples: f('resamples'), seed: f('seed') };
    }
    return { arm, seeds, accuracy, mean: num(r.mean, at('mean')), sd, vsReference, trainSeconds: num(r.trainSeconds, at('trainSeconds')) };
  });
  if (rows.length === 0) throw fail('rows', 'at least one table row', top.rows);
  const orphan = runs.find((run) => !rows.some((r) => r.arm === run.arm));
  if (orphan) throw fail(`runs[${runs.indexOf(orphan)}].arm`, 'an arm with a row in "rows"', orphan.arm);
  const count = (xs: readonly boolean[]) => xs.filter(Boolean).length;
  const columns: CompareColumn[] = [
    {
      title: 'base model',
      detail: typeof base.label === 'string' ? base.label : '',
      scores: baseCorrect.map((x) => (x ? 1 : 0)),
      runs: [{ seed: null, correct: count(baseCorrect), total: items.length }],
    },
    ...rows.map((row) => {
      const mine = runs.filter((r) => r.arm === row.arm);
      const system = mine[0].system;
      return {
        title: row.arm,
        detail: `${mine.length} seed${mine.length === 1 ? '' : 's'}${system === null ? '' : ` · ${describeSystem(system)}`}`,
        scores: items.map((_, k) => mean(mine.map((r) => (r.correct[k] ? 1 : 0)))),
        runs: mine.map((r) => ({ seed: r.seed, correct: count(r.correct), total: items.length })),
      };
    }),
  ];
  return {
    file,
    command: typeof top.command === 'string' ? top.command : null,
    eval: typeof top.eval === 'string' ? top.eval : null,
    reference,
    comparison: { items, columns },
    rows,
  };
}
