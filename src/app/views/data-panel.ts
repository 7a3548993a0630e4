/**
 * The Data panel: the dataset in use — the file picked in the Train panel, else the sample Train
 * uses for the loaded model — as `parseDataset` reads it: its records and polarity counts, every
 * problem found (each naming the record, its line and the field), and, under the loaded model's
 * tokenizer (a CPU call to the worker), the token lengths of prompts (the base view), responses
 * and both (percentiles) and how many records will be cut at the app's sequence length. A record
 * picked here fills the playground.
 */
import { type DatasetRecord, parseDataset, type Polarity } from '../../data/dataset.ts';
import type { DatasetSummary, TokenPercentiles } from '../../data/summary.ts';
import { DatasetError, type DatasetProblem } from '../../errors.ts';
import type { DatasetFile } from '../../session/requests.ts';
import { errorLine, formatCount, h, panel } from '../dom.ts';
import { errorMessage } from '../trainer-client.ts';

/** What the Data panel needs from the app. */
export interface DataPanelOptions {
  /** Index of the record to show as picked (restored from storage), if any. */
  picked: number | null;
  /** Called when the user picks a record. */
  onPick(record: DatasetRecord, index: number): void;
  /** Token lengths of the data under the loaded model's tokenizer (the worker's `summarizeData`). */
  summarize(data: DatasetFile, maxLen: number): Promise<DatasetSummary>;
  /** The sequence length training cuts records to. */
  maxLen: number;
}

/** The Data panel's element and controls. */
export interface DataPanelView {
  el: HTMLElement;
  /** Shows `data` (the dataset in use); resolves with its valid records (empty when none could be read). */
  show(data: DatasetFile): Promise<DatasetRecord[]>;
  /** Measures the shown data's token lengths again (a model was loaded); a no-op before `show`. */
  measure(): Promise<void>;
  /** Picks a record as if the user had clicked it. */
  pick(index: number): void;
  /** Shows why the dataset in use could not be read (e.g. the sample could not be fetched). */
  fail(message: string): void;
}

/** `text` on one line, cut to `max` characters with an ellipsis. */
export function truncate(text: string, max: number): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length <= max ? line : `${line.slice(0, max - 1).trimEnd()}…`;
}

/** "20 records: 3 positive, 3 negative, 14 without a response yet" (the polarities present). */
function describeRecords(records: readonly DatasetRecord[]): string {
  const count = (p: Polarity) => records.filter((r) => r.polarity === p).length;
  const parts = [
    [count('positive'), 'positive'],
    [count('negative'), 'negative'],
    [count('unknown'), 'without a response yet'],
  ] as const;
  const present = parts.filter(([n]) => n > 0).map(([n, what]) => `${formatCount(n)} ${what}`);
  return `${formatCount(records.length)} records: ${present.join(', ')}`;
}

/** "record 3 (line 4), field "answer": …" */
function describeProblem(p: DatasetProblem): string {
  const where = `record ${p.record}${p.line === undefined ? '' : ` (line ${p.line})`}`;
  return `${where}${p.field ? `, field "${p.field}"` : ''}: ${p.message}`;
}

/**
 * The records of `data`, the problems found, and the file of the valid records (what the token
 * lengths are measured on). A file with invalid records is read again without them, so the valid
 * ones still show; a file that cannot be read at all yields its one message.
 */
function readRecords(data: DatasetFile): { records: DatasetRecord[]; problems: string[]; valid: DatasetFile | null } {
  try {
    const records = parseDataset(data.bytes, data.name).records;
    const noResponse = records.filter((r) => r.output === null).map((r) => r.index);
    const problems =
      noResponse.length > 0 && noResponse.length < records.length
        ? [`records ${noResponse.join(', ')}: field "output": missing, so NLFT cannot train on them (SFT and evaluation can)`]
        : [];
    return { records, problems, valid: data };
  } catch (e) {
    if (!(e instanceof DatasetError) || e.problems.length === 0) return { records: [], problems: [errorMessage(e)], valid: null };
    return { ...validRecords(data, e.problems), problems: e.problems.map(describeProblem) };
  }
}

/** The records of `data` without those `problems` name (numbered as the file numbers them), and a file of them. */
function validRecords(data: DatasetFile, problems: readonly DatasetProblem[]): { records: DatasetRecord[]; valid: DatasetFile | null } {
  const bad = new Set(problems.map((p) => p.record));
  const text = new TextDecoder().decode(data.bytes).trim();
  let values: unknown[];
  try {
    values = text.startsWith('[') ? (JSON.parse(text) as unknown[]) : text.split('\n').flatMap((l) => (l.trim() ? [JSON.parse(l)] : []));
  } catch {
    return { records: [], valid: null }; // a line that is not JSON: its problem is listed, and the records cannot be told apart
  }
  const kept = values.flatMap((v, i) => (bad.has(i + 1) ? [] : [v]));
  if (kept.length === 0) return { records: [], valid: null };
  const valid = { name: data.name, bytes: new TextEncoder().encode(JSON.stringify(kept)) };
  const records = parseDataset(valid.bytes, data.name).records;
  const numbers = values.flatMap((_, i) => (bad.has(i + 1) ? [] : [i + 1]));
  return { records: records.map((r, i) => ({ ...r, index: numbers[i], id: r.id === `#${i + 1}` ? `#${numbers[i]}` : r.id })), valid };
}

/** The token-length table: prompt, response and total rows, percentile columns. */
function lengthTable(s: DatasetSummary): HTMLTableElement {
  const row = (what: string, p: TokenPercentiles) =>
    h('tr', {}, h('th', {}, what), ...[p.p50, p.p90, p.p99, p.max].map((n) => h('td', { class: 'num' }, formatCount(n))));
  return h(
    'table',
    { class: 'results-table', testid: 'dataset-lengths' },
    h('thead', {}, h('tr', {}, ...['tokens', 'p50', 'p90', 'p99', 'max'].map((c, i) => h('th', { class: i > 0 ? 'num' : null }, c)))),
    h('tbody', {}, row('prompt (base view)', s.promptTokens), row('response', s.responseTokens), row('total', s.totalTokens)),
  );
}

/** Builds the Data panel; it fills on `show()`. */
export function createDataPanel(opts: DataPanelOptions): DataPanelView {
  const { el, body } = panel('Data', 'data-panel');
  const status = h('p', { class: 'status', testid: 'dataset-status' }, 'Loading the dataset in use…');
  const error = errorLine('dataset-error');
  const problems = h('ul', { class: 'problems', testid: 'dataset-problems', hidden: true });
  const lengths = h('div', { testid: 'dataset-summary' }, h('p', { class: 'hint' }, 'Token lengths appear once a model is loaded.'));
  const list = h('ol', { class: 'records', testid: 'dataset-list' });
  body.append(status, error.el, problems, lengths, list);

  let records: DatasetRecord[] = [];
  let shown: DatasetFile | null = null;
  /** The valid records of the shown file, as a file (what `summarize` measures). */
  let measured: DatasetFile | null = null;
  let picked = opts.picked;
  const markPicked = () => {
    list.querySelectorAll('button').forEach((b, i) => b.setAttribute('aria-pressed', String(i === picked)));
  };
  const pick = (index: number) => {
    const record = records[index];
    if (!record) return;
    picked = index;
    markPicked();
    opts.onPick(record, index);
  };
  const measure = async () => {
    const data = shown;
    const valid = measured;
    if (!data) return;
    if (!valid) {
      lengths.replaceChildren(h('p', { class: 'hint' }, 'Token lengths: no record of this file can be read.'));
      lengths.dataset.state = 'error';
      return;
    }
    lengths.dataset.state = 'measuring';
    try {
      const s = await opts.summarize(valid, opts.maxLen);
      if (data !== shown) return; // another dataset is shown by now
      const cut =
        s.truncated > 0
          ? `${formatCount(s.truncated)} of ${formatCount(s.records)} records are longer than ${opts.maxLen} tokens: training cuts their responses.`
          : `No record is longer than ${opts.maxLen} tokens: none will be cut.`;
      lengths.replaceChildren(
        lengthTable(s),
        h('p', { class: s.truncated > 0 ? 'warning' : 'hint', testid: 'dataset-truncated', 'data-count': s.truncated }, cut),
      );
      lengths.dataset.state = 'done';
    } catch (e) {
      if (data !== shown) return;
      lengths.replaceChildren(h('p', { class: 'hint' }, `Token lengths: ${errorMessage(e)}`));
      lengths.dataset.state = 'error';
    }
  };

  return {
    el,
    pick,
    measure,
    fail(message) {
      shown = null;
      measured = null;
      records = [];
      list.replaceChildren();
      status.textContent = 'No dataset.';
      error.show(message);
    },
    async show(data) {
      shown = data;
      error.show(null);
      const read = readRecords(data);
      records = read.records;
      measured = read.valid;
      problems.replaceChildren(...read.problems.map((p) => h('li', {}, p)));
      problems.hidden = read.problems.length === 0;
      status.textContent =
        records.length > 0
          ? `${data.name}: ${describeRecords(records)}. Pick one to try it in the playground.`
          : `${data.name}: no record can be read.`;
      status.dataset.name = data.name;
      list.replaceChildren(
        ...records.map((r, i) => {
          const button = h(
            'button',
            { type: 'button', class: 'record', title: r.input, 'data-polarity': r.polarity },
            h('span', { class: 'record-index' }, `#${r.index}`),
            h('span', { class: 'record-question' }, truncate(r.input, 140)),
            h('span', { class: 'record-answer' }, truncate(r.output ?? r.answer, 90)),
          );
          button.addEventListener('click', () => pick(i));
          return h('li', {}, button);
        }),
      );
      markPicked();
      await measure();
      return records;
    },
  };
}
