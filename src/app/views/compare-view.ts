/**
 * The Compare view (docs/method.md §7.1): stored evaluations of the same test file side by side —
 * the user ticks them, or every evaluation of one file at once; ones over other items are left out
 * with the reason — as a bar chart of accuracy with the counts, each one's difference to the first
 * with a paired bootstrap interval over the items, and a per-item grid (right/wrong per evaluation,
 * a filter for the items where they disagree, and how many items each pair disagrees on). It also
 * opens a `compare.json` written by `nlft compare --out`: the same chart (mean over seeds, each seed
 * a dot), the grid (fraction of seeds right) and the file's table. The selection survives a reload.
 */
import type { PairedDifference } from '../../eval/compare.ts';
import type { EvalOutcome } from '../../session/requests.ts';
import type { CompareSelection } from '../../storage/db.ts';
import { errorLine, h, panel } from '../dom.ts';
import { errorMessage } from '../trainer-client.ts';
import { compareChart } from './compare-chart.ts';
import {
  columnAccuracy,
  comparableEvals,
  type Comparison,
  differencesToFirst,
  disagreements,
  evalComparison,
  evalDataName,
  evalTitle,
  type ImportedComparison,
  readCompareJson,
  whyNotComparable,
} from './compare-data.ts';

export interface CompareViewOptions {
  /** The stored selection (absent: nothing chosen yet). */
  selection: CompareSelection | undefined;
  /** Persists the selection. */
  onSelectionChange(selection: CompareSelection): Promise<void>;
}

export interface CompareView {
  el: HTMLElement;
  /** Shows the stored evaluations (newest last): call at start and whenever the history changes. */
  show(all: readonly EvalOutcome[]): void;
}

/** Points with their sign, from a difference of accuracies. */
const points = (x: number) => `${x < 0 ? '−' : '+'}${Math.abs(100 * x).toFixed(1)}`;
const pct = (x: number) => (100 * x).toFixed(1);
const UNKNOWN_FILE = '(file not recorded)';

/** A difference in points with its interval, e.g. "+5.0 points [−2.0, +12.0]". */
function describeDifference(d: PairedDifference): string {
  return `${points(d.diff)} points [${points(d.lo)}, ${points(d.hi)}]`;
}

/** One grid cell: ✓/✗ for one evaluation, the fraction of seeds right for several. */
function gridCell(score: number, seeds: number): HTMLTableCellElement {
  const text = seeds === 1 ? (score === 1 ? '✓' : '✗') : `${Math.round(score * seeds)}/${seeds}`;
  const td = h('td', { class: 'grid-mark', 'data-score': score }, text);
  td.style.setProperty('--right', String(score)); // not a style attribute: the page's policy refuses inline styles
  return td;
}

/**
 * The per-item grid of `c` under its filter: a line with the pairs' disagreement counts, a
 * checkbox for the items where the columns disagree, and the table (one row per item).
 */
function comparisonGrid(c: Comparison, disagreeOnly: boolean, onFilter: (on: boolean) => void): HTMLElement {
  const d = disagreements(c);
  const differing = d.items.filter(Boolean).length;
  const filter = h('input', { type: 'checkbox', testid: 'compare-disagree', checked: disagreeOnly });
  filter.addEventListener('change', () => onFilter(filter.checked));
  const pairs = d.pairs.map((p) => `${p.a + 1} vs ${p.b + 1}: ${p.count}`).join(' · ');
  const head = h(
    'tr',
    {},
    h('th', {}, '#'),
    h('th', {}, 'expected'),
    ...c.columns.map((col, i) => h('th', { title: `${col.title}${col.detail ? ` — ${col.detail}` : ''}` }, String(i + 1))),
  );
  const rows = c.items.flatMap((it, k) =>
    disagreeOnly && !d.items[k]
      ? []
      : [
          h(
            'tr',
            { 'data-item': it.index, 'data-disagree': d.items[k] },
            h('td', {}, String(it.index)),
            h('td', {}, it.expected ?? '–'),
            ...c.columns.map((col) => gridCell(col.scores[k], col.runs.length)),
          ),
        ],
  );
  return h(
    'div',
    { class: 'compare-grid-box' },
    h(
      'div',
      { class: 'actions' },
      h('label', { class: 'check' }, filter, ` Only items where they disagree (${differing} of ${c.items.length})`),
    ),
    h('p', { class: 'hint', testid: 'compare-pairs' }, `Items each pair disagrees on: ${pairs || 'one column, no pairs'}`),
    h(
      'div',
      { class: 'grid-scroll' },
      h('table', { class: 'compare-grid', testid: 'compare-grid' }, h('thead', {}, head), h('tbody', {}, ...rows)),
      rows.length === 0 && h('p', { class: 'hint' }, 'No item where they disagree: they got the same items right.'),
    ),
  );
}

/** The file's table: per arm the accuracy of each seed, mean ± sd, the difference to the reference and the training time. */
function importedTable(x: ImportedComparison): HTMLElement {
  const level = x.rows.find((r) => r.vsReference)?.vsReference?.level ?? 0.95;
  const baseAccuracy = columnAccuracy(x.comparison.columns[0]);
  return h(
    'table',
    { class: 'compare-rows', testid: 'compare-rows' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', {}, 'arm'),
        h('th', {}, 'accuracy per seed (%)'),
        h('th', {}, 'mean ± sd (%)'),
        h('th', {}, `vs ${x.reference} (${Math.round(100 * level)} % interval)`),
        h('th', {}, 'train s'),
      ),
    ),
    h(
      'tbody',
      {},
      h('tr', {}, h('td', {}, 'base model'), h('td', {}, pct(baseAccuracy)), h('td', {}, pct(baseAccuracy)), h('td', {}), h('td', {})),
      ...x.rows.map((r) =>
        h(
          'tr',
          { 'data-arm': r.arm },
          h('td', {}, r.arm),
          h('td', {}, r.accuracy.map((a, i) => `${pct(a)} (seed ${r.seeds[i]})`).join(', ')),
          h('td', {}, `${pct(r.mean)}${r.sd === null ? '' : ` ± ${pct(r.sd)}`}`),
          h('td', {}, r.vsReference ? describeDifference(r.vsReference) : r.arm === x.reference ? '(reference)' : ''),
          h('td', {}, r.trainSeconds.toFixed(1)),
        ),
      ),
    ),
  );
}

export function createCompareView(opts: CompareViewOptions): CompareView {
  const { el, body } = panel('Compare', 'compare-panel');
  const fileSelect = h('select', { testid: 'compare-file', 'aria-label': 'Test file' });
  const all = h('button', { type: 'button', testid: 'compare-all' }, 'Compare all evaluations of this file');
  const clear = h('button', { type: 'button', testid: 'compare-clear' }, 'Clear');
  const list = h('ul', { class: 'compare-evals', testid: 'compare-evals' });
  const status = h('p', { class: 'status', testid: 'compare-status' });
  const stored = h('div', { class: 'compare-result', testid: 'compare-stored' });
  const picker = h('input', { type: 'file', id: 'compare-import', testid: 'compare-import', accept: '.json,application/json' });
  const error = errorLine('compare-error');
  const imported = h('div', { class: 'compare-result', testid: 'compare-imported', hidden: true });
  body.append(
    h('p', { class: 'hint' }, 'Evaluations of the same test file side by side; the first ticked (the earliest) is the reference.'),
    h('div', { class: 'actions' }, fileSelect, all, clear),
    list,
    status,
    stored,
    h('strong', {}, 'A comparison from the CLI'),
    h(
      'div',
      { class: 'actions' },
      h('label', { class: 'file', for: 'compare-import' }, 'Open a compare.json…', picker),
      h('span', { class: 'hint' }, 'written by nlft compare --out'),
    ),
    error.el,
    imported,
  );

  let history: readonly EvalOutcome[] = [];
  let chosen = new Set(opts.selection?.evals ?? []);
  let disagreeOnly = opts.selection?.disagreeOnly ?? false;
  let file: ImportedComparison | null = null;

  /** Keeps the selection; `data-saved` on the list says when the store has it. */
  let latest: CompareSelection | null = null;
  const save = () => {
    const selection = { evals: [...chosen], disagreeOnly };
    latest = selection;
    list.dataset.saved = 'false';
    opts.onSelectionChange(selection).then(
      () => {
        if (latest === selection) list.dataset.saved = 'true';
      },
      (e: unknown) => error.show(`The comparison's selection could not be saved in this browser: ${errorMessage(e)}`),
    );
  };
  const setFilter = (on: boolean) => {
    disagreeOnly = on;
    save();
    render();
  };

  const renderStored = () => {
    const picked = history.filter((o) => chosen.has(o.at));
    const { kept, left } = comparableEvals(picked);
    const first = kept[0];
    list.replaceChildren(
      ...history.map((o) => {
        const on = chosen.has(o.at);
        const why = first && o !== first ? whyNotComparable(first, o) : null;
        const box = h('input', { type: 'checkbox', testid: 'compare-pick', checked: on, disabled: !on && why !== null });
        box.addEventListener('change', () => {
          if (box.checked) chosen.add(o.at);
          else chosen.delete(o.at);
          save();
          render();
        });
        const { title, detail } = evalTitle(o);
        const summary = `${o.summary.correct}/${o.summary.total}${o.stopped ? ' (stopped)' : ''}`;
        return h(
          'li',
          { class: 'compare-eval', 'data-comparable': why === null },
          h(
            'label',
            { class: 'check' },
            box,
            h('strong', {}, ` ${summary}`),
            ` ${title}${detail ? ` · ${detail}` : ''} · ${evalDataName(o) ?? UNKNOWN_FILE} · ${new Date(o.at).toLocaleString()}`,
          ),
          why ? h('span', { class: 'why', testid: 'compare-why' }, `Cannot be compared with the first ticked: ${why}.`) : null,
        );
      }),
    );
    const files = [...new Set(history.map((o) => evalDataName(o) ?? UNKNOWN_FILE))];
    const current = fileSelect.value || (first ? (evalDataName(first) ?? UNKNOWN_FILE) : files.at(-1));
    fileSelect.replaceChildren(...files.map((f) => h('option', { value: f, selected: f === current }, f)));
    all.disabled = files.length === 0;
    if (left.length) status.textContent = `Left out: ${left.map((l) => `${evalTitle(l.outcome).title} (${l.why})`).join('; ')}.`;
    else if (kept.length < 2)
      status.textContent = history.length
        ? 'Tick two or more evaluations of the same test file, or compare all of one file.'
        : 'No evaluations yet: run one in the Evaluate panel.';
    else status.textContent = `${kept.length} evaluations of ${evalDataName(first) ?? UNKNOWN_FILE}, ${first.items.length} items each.`;
    if (kept.length === 0) {
      stored.replaceChildren();
      return;
    }
    const c = evalComparison(kept);
    const diffs = differencesToFirst(c);
    stored.replaceChildren(
      compareChart(c.columns),
      h(
        'div',
        {},
        kept.length > 1 &&
          h(
            'ul',
            { class: 'compare-diffs', testid: 'compare-diffs' },
            ...c.columns.slice(1).map((col, i) => h('li', {}, `${i + 2} vs 1: ${describeDifference(diffs[i + 1]!)} — ${col.title}`)),
            h(
              'li',
              { class: 'hint' },
              `95 % paired bootstrap over the ${c.items.length} items only: each is one evaluation (one seed), so the variation between training runs is not in it.`,
            ),
          ),
      ),
      comparisonGrid(c, disagreeOnly, setFilter),
    );
  };

  const renderImported = () => {
    imported.hidden = file === null;
    if (!file) return;
    const x = file;
    const close = h('button', { type: 'button', testid: 'compare-close' }, 'Close');
    close.addEventListener('click', () => {
      file = null;
      picker.value = '';
      render();
    });
    imported.replaceChildren(
      h('div', { class: 'actions' }, h('strong', { testid: 'compare-import-name' }, x.file), close),
      h('code', { class: 'compare-command', hidden: x.command === null }, x.command ?? ''),
      compareChart(x.comparison.columns),
      importedTable(x),
      h('p', { class: 'hint' }, `The grid: per arm, how many of its seeds got the item right${x.eval ? ` (${x.eval})` : ''}.`),
      comparisonGrid(x.comparison, disagreeOnly, setFilter),
    );
  };

  const render = () => {
    renderStored();
    renderImported();
  };

  all.addEventListener('click', () => {
    const name = fileSelect.value;
    const ofFile = history.filter((o) => (evalDataName(o) ?? UNKNOWN_FILE) === name);
    const newest = ofFile.at(-1);
    if (!newest) return;
    chosen = new Set(ofFile.filter((o) => whyNotComparable(newest, o) === null).map((o) => o.at));
    save();
    render();
  });
  clear.addEventListener('click', () => {
    chosen = new Set();
    save();
    render();
  });
  fileSelect.addEventListener('change', () => render());
  picker.addEventListener('change', async () => {
    const f = picker.files?.[0];
    if (!f) return;
    error.show(null);
    try {
      file = readCompareJson(await f.text(), f.name);
    } catch (e) {
      file = null;
      error.show(errorMessage(e));
    }
    render();
  });

  return {
    el,
    show(outcomes) {
      history = outcomes;
      render();
    },
  };
}
