/**
 * The Storage view: what the app keeps in this browser (Hub model files, runs and imported
 * adapters, their checkpoints and data, evaluations, the explorer's scores, kernel tiles), each
 * with its size and a Delete that asks first; the browser's usage and quota for the app
 * (`navigator.storage.estimate()`) and whether its storage is persistent, with a button to ask for
 * it (the app also asks before the first Hub download: `askPersistence`).
 */
import { formatBytes } from '../../engine/buffers.ts';
import type { StorageUsage } from '../../storage/db.ts';
import type { RunStore } from '../../storage/runs.ts';
import { requestPersistence, type StoredItem, storageEstimate } from '../../storage/usage.ts';
import { errorLine, h, panel } from '../dom.ts';
import { errorMessage } from '../trainer-client.ts';

export interface StorageViewOptions {
  /** The database's items, or null when IndexedDB could not be opened. */
  usage: StorageUsage | null;
  runs: RunStore;
  /** An item was deleted (the Library and Evaluate panels list again). */
  onDelete(item: StoredItem): void;
}

export interface StorageView {
  el: HTMLElement;
  /** Measures and lists again. */
  refresh(): Promise<void>;
  /** Asks the browser for persistent storage unless it is already (call before a large download); shows the answer. */
  askPersistence(): Promise<void>;
}

/** What the kind column says. */
const KIND: Record<StoredItem['kind'], string> = {
  model: 'model files',
  run: 'run',
  imported: 'imported adapter',
  unreadable: 'unreadable record',
  dataset: 'training data',
  checkpoint: 'checkpoint',
  evaluations: 'evaluations',
  scores: 'scores',
  tuning: 'kernel tiles',
  prepared: 'prepared data',
};

export function createStorageView(opts: StorageViewOptions): StorageView {
  const { el, body } = panel('Storage', 'storage-panel');
  const estimate = h('p', { class: 'status', testid: 'storage-estimate' }, 'Measuring…');
  const persisted = h('span', { class: 'hint', testid: 'storage-persisted' });
  const persist = h('button', { type: 'button', testid: 'storage-persist' }, 'Ask to keep this data');
  const refresh = h('button', { type: 'button', testid: 'storage-refresh' }, 'Measure again');
  const error = errorLine('storage-error');
  const rows = h('tbody', {});
  const table = h(
    'table',
    { class: 'explorer-records library-table', testid: 'storage-table' },
    h('thead', {}, h('tr', {}, ...['Item', 'Kind', 'Size', ''].map((t) => h('th', {}, t)))),
    rows,
  );
  body.append(estimate, h('div', { class: 'actions' }, persisted, persist, refresh), error.el, h('div', { class: 'table-scroll' }, table));

  let items: StoredItem[] = [];
  /** The item whose delete waits for a confirmation (its kind and id), or null. */
  let confirming: string | null = null;
  const keyOf = (i: StoredItem) => `${i.kind}:${i.id}`;

  const showPersisted = (p: boolean | null) => {
    persisted.dataset.state = String(p);
    persisted.textContent =
      p === null
        ? 'This browser does not say whether it keeps the data.'
        : p
          ? 'Persistent: the browser keeps this data under storage pressure.'
          : 'Not persistent: the browser may clear this data when the disk runs low.';
    persist.hidden = p !== false;
  };

  const render = () => {
    rows.replaceChildren(
      ...items.map((item) => {
        const key = keyOf(item);
        const action = h('td', { class: 'row-actions' });
        const button = (testid: string, text: string, onClick: () => void) => {
          const b = h('button', { type: 'button', testid }, text);
          b.addEventListener('click', onClick);
          action.append(b);
        };
        if (confirming === key) {
          action.append(h('span', {}, 'Delete it? '));
          button('storage-confirm-delete', 'Delete', () => void remove(item));
          button('storage-cancel-delete', 'Keep', () => {
            confirming = null;
            render();
          });
        } else
          button('storage-delete', 'Delete', () => {
            confirming = key;
            render();
          });
        return h(
          'tr',
          { testid: 'storage-row', 'data-kind': item.kind, 'data-id': item.id, 'data-bytes': item.bytes },
          h('td', {}, item.label),
          h('td', {}, KIND[item.kind]),
          h('td', { class: 'num' }, formatBytes(item.bytes)),
          action,
        );
      }),
    );
  };

  const remove = async (item: StoredItem) => {
    confirming = null;
    error.show(null);
    try {
      await opts.usage?.remove(item, opts.runs);
      opts.onDelete(item);
    } catch (e) {
      error.show(`${item.label} could not be deleted: ${errorMessage(e)}`);
    }
    await view.refresh();
  };

  persist.addEventListener('click', () => void view.askPersistence());
  refresh.addEventListener('click', () => void view.refresh());

  const view: StorageView = {
    el,
    async refresh() {
      const [e, listed] = await Promise.all([storageEstimate(), opts.usage?.items().catch((err: unknown) => err) ?? []]);
      if (listed instanceof Error || !Array.isArray(listed)) error.show(`What is stored could not be listed: ${errorMessage(listed)}`);
      else items = listed;
      const ours = items.reduce((n, i) => n + i.bytes, 0);
      estimate.dataset.usage = String(e.usage ?? '');
      estimate.dataset.quota = String(e.quota ?? '');
      estimate.textContent =
        e.usage !== null && e.quota !== null
          ? `The browser counts ${formatBytes(e.usage)} used of the ${formatBytes(e.quota)} it allows this app (${((100 * e.usage) / Math.max(1, e.quota)).toFixed(1)}%); the items below hold about ${formatBytes(ours)}.`
          : `The items below hold about ${formatBytes(ours)} (this browser does not report its quota).`;
      showPersisted(e.persisted);
      render();
    },
    async askPersistence() {
      try {
        showPersisted(await requestPersistence());
      } catch (e) {
        error.show(`Persistent storage could not be asked for: ${errorMessage(e)}`);
      }
    },
  };
  return view;
}
