/**
 * The Data panel: the GSM8K sample's records as `parseDataset` reads them (their count and
 * polarities in the status line), one of which the user picks for the playground.
 */
import { parseDataset, type DatasetRecord, type Polarity } from '../../data/dataset.ts';
import { errorLine, formatCount, h, panel } from '../dom.ts';
import { fetchSample } from '../samples.ts';
import { errorMessage } from '../trainer-client.ts';

/** What the Data panel needs from the app. */
export interface DataPanelOptions {
  /** Index of the record to show as picked (restored from storage), if any. */
  picked: number | null;
  /** Called when the user picks a record. */
  onPick(record: DatasetRecord, index: number): void;
}

/** The Data panel's element and controls. */
export interface DataPanelView {
  el: HTMLElement;
  /** Fetches and lists the sample dataset; resolves with its records (empty on failure). */
  load(): Promise<DatasetRecord[]>;
  /** Picks a record as if the user had clicked it. */
  pick(index: number): void;
}

/** `text` on one line, cut to `max` characters with an ellipsis. */
function truncate(text: string, max: number): string {
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

/** Builds the Data panel; the list fills on `load()`. */
export function createDataPanel(opts: DataPanelOptions): DataPanelView {
  const { el, body } = panel('Data', 'data-panel');
  const status = h('p', { class: 'status', testid: 'dataset-status' }, 'Loading the sample dataset…');
  const error = errorLine('dataset-error');
  const list = h('ol', { class: 'records', testid: 'dataset-list' });
  body.append(status, error.el, list);

  let records: DatasetRecord[] = [];
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

  return {
    el,
    pick,
    async load() {
      try {
        const file = await fetchSample('gsm8k-sample.jsonl');
        records = parseDataset(file.bytes, file.name).records;
      } catch (e) {
        status.textContent = 'No dataset.';
        error.show(errorMessage(e));
        return [];
      }
      status.textContent = `GSM8K sample, ${describeRecords(records)} (OpenAI, MIT licence). Pick one to try it in the playground.`;
      list.replaceChildren(
        ...records.map((r, i) => {
          const button = h(
            'button',
            { type: 'button', class: 'record', title: r.input },
            h('span', { class: 'record-index' }, `#${i + 1}`),
            h('span', { class: 'record-question' }, truncate(r.input, 140)),
            h('span', { class: 'record-answer' }, truncate(r.answer, 90)),
          );
          button.addEventListener('click', () => pick(i));
          return h('li', {}, button);
        }),
      );
      markPicked();
      return records;
    },
  };
}
