/**
 * The Library: every training run kept in this browser and every imported adapter (src/storage/runs.ts),
 * newest first, in a table with its name, date, method (and NLFT preset), data, steps, status and
 * accuracy (the latest evaluation made with its adapter). Per entry: open (its settings, loss
 * chart, saliency map and downloads, as the Train panel shows the last run: run-view.ts), rename,
 * delete (after a confirmation), and use its adapter (the worker checks it against the loaded model
 * and puts it on: the playground, generation and evaluation then use it). A PEFT adapter folder
 * trained elsewhere is imported the same way: checked by the worker, then kept as an entry.
 */
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, type PeftAdapterFiles } from '../../export/peft.ts';
import type { EvalOutcome } from '../../session/requests.ts';
import { presetOf } from '../../session/presets.ts';
import { entryName, type ImportedAdapter, type LibraryItem, type RunStore, type StoredRun } from '../../storage/runs.ts';
import { errorLine, h, panel } from '../dom.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';
import { createRunView } from './run-view.ts';

export interface LibraryViewOptions {
  runs: RunStore;
  trainer: TrainerClient;
  /** The adapter on the model is now this entry's (null: none from the library). */
  onAdapterChange(item: LibraryItem | null): void;
  /** Called with true while the worker checks and loads an adapter, false after. */
  onBusyChange(busy: boolean): void;
  /** An entry was added, renamed or deleted (the Storage view lists again). */
  onChange(): void;
}

export interface LibraryView {
  el: HTMLElement;
  /** Lists the stored entries again. */
  refresh(): Promise<void>;
  /** Takes the accuracies from these evaluations (newest last). */
  showEvaluations(all: readonly EvalOutcome[]): void;
  /** Enables the adapter buttons when a model is ready and the worker is free. */
  setModelReady(ready: boolean): void;
  /** The run being trained now (it cannot be deleted meanwhile), or null. */
  setTraining(id: string | null): void;
  /** The entry whose adapter is on the model (a run just trained), or null (a new model has none). */
  setInUse(id: string | null): void;
}

/** The method column: SFT, NLFT with its preset (or custom), or an imported adapter's rank. */
function methodOf(item: LibraryItem): string {
  if (item.kind === 'imported') return `imported LoRA (r ${item.imported.lora.r})`;
  if (item.kind !== 'run') return '–';
  const r = item.run.request;
  if (r.method === 'sft') return 'SFT';
  const preset = presetOf({ ...r.saliency, saliencyMode: r.saliencyMode ?? (r.scorer ? 'static' : 'dynamic') });
  return `NLFT (${preset?.id ?? 'custom'})`;
}

/** The latest evaluation made with an entry's adapter, as "correct/total = p%". */
function accuracyOf(id: string, evals: readonly EvalOutcome[]): string {
  const mine = evals.filter((o) => o.adapter?.runId === id);
  const o = mine.at(-1);
  if (!o) return '–';
  const more = mine.length > 1 ? ` (${mine.length} evaluations)` : '';
  return `${o.summary.correct}/${o.summary.total} = ${(100 * o.summary.accuracy).toFixed(1)}%${more}`;
}

/** The settings of a run or an imported adapter, as a definition list. */
function settingsOf(item: LibraryItem): HTMLElement {
  const rows: Array<[string, string]> = [];
  if (item.kind === 'run') {
    const { request: r, model } = item.run;
    rows.push(
      ['Method', methodOf(item)],
      ['Data', `${r.data.name} (${r.data.bytes} bytes)`],
      ['Model', model ? `${model.id}, ${model.quant}` : '–'],
      ['Training', `${r.train.epochs} epochs, batch ${r.train.batch}, learning rate ${r.train.lr}, seed ${r.train.seed}`],
      ['LoRA', `r ${r.lora.r}, alpha ${r.lora.alpha ?? r.lora.r}, dropout ${r.lora.dropout}, on ${r.lora.targets.join(', ')}`],
    );
    if (r.method === 'nlft')
      rows.push([
        'NLFT',
        `negatives ${r.saliency.negatives}, saliency ${r.saliencyMode ?? 'dynamic'}${r.scorer ? `, scorer ${r.scorer}` : ''}`,
      ]);
  } else if (item.kind === 'imported') {
    const a = item.imported;
    rows.push(
      ['Folder', a.folder],
      ['Base model', `${a.baseModel ?? '(not named)'}; checked against ${a.checkedOn}`],
      ['LoRA', `r ${a.lora.r}, alpha ${a.lora.alpha}, dropout ${a.lora.dropout}, on ${a.lora.targets.join(', ')}`],
    );
  }
  return h('dl', { class: 'facts', testid: 'library-settings' }, ...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/** The adapter files of an entry, or null when it has none. */
function adapterOf(item: LibraryItem): PeftAdapterFiles | null {
  return item.kind === 'run' ? item.run.adapter : item.kind === 'imported' ? item.imported.adapter : null;
}

/**
 * An evaluation as the Library attributes it: one made while an imported adapter was on the model
 * names that entry (a run's evaluations are named by the Evaluate panel).
 */
export function attributeEvaluation(o: EvalOutcome, inUse: LibraryItem | null): EvalOutcome {
  if (!o.adapter || o.adapter.runId || inUse?.kind !== 'imported') return o;
  return { ...o, adapter: { runId: inUse.id, description: `imported adapter ${entryName(inUse)}, ${o.adapter.description}` } };
}

/** The folder name of picked files (the first part of their relative path), or the first file's name. */
function folderName(files: readonly File[]): string {
  const rel = (files[0] as File & { webkitRelativePath?: string }).webkitRelativePath;
  return rel ? rel.split('/')[0] : files[0].name;
}

export function createLibraryView(opts: LibraryViewOptions): LibraryView {
  const { el, body } = panel('Library', 'library-panel');
  const inUseLine = h('p', { class: 'hint', testid: 'library-in-use' }, 'The model runs without an adapter from the library.');
  const takeOff = h('button', { type: 'button', class: 'link', testid: 'library-take-off', hidden: true }, 'Use the base model alone');
  const picker = h('input', { type: 'file', id: 'library-import', testid: 'library-import', webkitdirectory: true, multiple: true });
  const status = h('p', { class: 'status', testid: 'library-status', 'data-state': 'idle' });
  const error = errorLine('library-error');
  const rows = h('tbody', {});
  const table = h(
    'table',
    { class: 'explorer-records library-table', testid: 'library-table' },
    h('thead', {}, h('tr', {}, ...['Name', 'Date', 'Method', 'Data', 'Steps', 'Status', 'Accuracy', ''].map((t) => h('th', {}, t)))),
    rows,
  );
  const empty = h('p', { class: 'hint', testid: 'library-empty' }, 'Runs you train and adapters you import are kept here.');
  const detail = h('div', { class: 'library-detail', testid: 'library-detail', hidden: true });
  body.append(
    h('div', { class: 'actions' }, inUseLine, takeOff),
    h(
      'div',
      { class: 'actions' },
      h('label', { class: 'file', for: 'library-import' }, 'Import a PEFT adapter folder…', picker),
      h('span', { class: 'hint' }, 'adapter_config.json and adapter_model.safetensors, checked against the loaded model.'),
    ),
    status,
    error.el,
    h('div', { class: 'table-scroll' }, table),
    empty,
    detail,
  );

  let items: LibraryItem[] = [];
  let evals: readonly EvalOutcome[] = [];
  let ready = false;
  let busy = false;
  let training: string | null = null;
  let inUse: string | null = null;
  /** The open entry's id, or null. */
  let open: string | null = null;
  /** The id whose delete waits for a confirmation, or null. */
  let confirming: string | null = null;
  /** The id being renamed, or null. */
  let renaming: string | null = null;

  const setStatus = (state: string, text: string) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  /** Runs a library change; its failure (a full quota, say) is shown, and the table lists what is stored. */
  const change = async (what: string, job: () => Promise<void>) => {
    error.show(null);
    try {
      await job();
      opts.onChange();
    } catch (e) {
      error.show(`${what}: ${errorMessage(e)}`);
    }
    await view.refresh();
  };

  const statusOf = (item: LibraryItem): string => {
    if (item.kind === 'imported') return 'imported';
    if (item.kind === 'unreadable') return 'unreadable';
    const s = item.run.status;
    return s === 'running' && item.id !== training ? 'interrupted' : s;
  };

  /** Puts an entry's adapter on the model (or takes the library's off, for null). */
  const useAdapter = async (item: LibraryItem | null) => {
    error.show(null);
    busy = true;
    opts.onBusyChange(true);
    render();
    setStatus('loading', item ? `Checking and loading the adapter of ${entryName(item)}…` : 'Taking the adapter off…');
    try {
      const files = item && adapterOf(item);
      await opts.trainer.useAdapter(files && item ? { label: entryName(item), files } : null);
      inUse = item?.id ?? null;
      opts.onAdapterChange(item);
      setStatus(
        'ready',
        item ? `The playground and Evaluate now use the adapter of ${entryName(item)}.` : 'The model runs without an adapter.',
      );
    } catch (e) {
      setStatus('error', 'The adapter was not loaded; the model keeps the adapter it had.');
      error.show(errorMessage(e));
    } finally {
      busy = false;
      opts.onBusyChange(false);
      render();
    }
  };

  /** Shows an entry's settings, chart, saliency and downloads below the table (built on open, so its controls exist only then). */
  const showDetail = () => {
    const item = items.find((i) => i.id === open);
    detail.hidden = !item;
    if (!item) return detail.replaceChildren();
    const head = h('div', { class: 'actions' }, h('strong', {}, entryName(item)));
    const close = h('button', { type: 'button', class: 'link', testid: 'library-close' }, 'Close');
    close.addEventListener('click', () => {
      open = null;
      showDetail();
    });
    head.append(close);
    if (item.kind === 'unreadable') return detail.replaceChildren(head, h('p', { class: 'error' }, item.message));
    const runView = createRunView();
    if (item.kind === 'run') runView.show(item.run);
    runView.showAdapter(adapterOf(item));
    detail.replaceChildren(head, settingsOf(item), ...runView.els);
  };

  /** One row's actions: open, rename, delete (confirmed), use its adapter. */
  const actionsOf = (item: LibraryItem): HTMLElement => {
    const cell = h('td', { class: 'row-actions' });
    const button = (testid: string, text: string, onClick: () => void, disabled = false) => {
      const b = h('button', { type: 'button', testid, disabled }, text);
      b.addEventListener('click', onClick);
      cell.append(b);
    };
    if (confirming === item.id) {
      cell.append(h('span', {}, 'Delete it and its files? '));
      button('library-confirm-delete', 'Delete', () => {
        confirming = null;
        if (open === item.id) open = null;
        void change('The entry could not be deleted', () => opts.runs.remove(item.id));
      });
      button('library-cancel-delete', 'Keep', () => {
        confirming = null;
        render();
      });
      return cell;
    }
    button('library-open', 'Open', () => {
      open = item.id;
      showDetail();
      detail.scrollIntoView({ block: 'nearest' });
    });
    if (item.kind !== 'unreadable')
      button('library-rename', 'Rename', () => {
        renaming = item.id;
        render();
      });
    button(
      'library-delete',
      'Delete',
      () => {
        confirming = item.id;
        render();
      },
      item.id === training,
    );
    const canUse = adapterOf(item) !== null && ready && !busy;
    button('library-use', item.id === inUse ? 'In use' : 'Use adapter', () => void useAdapter(item), !canUse || item.id === inUse);
    return cell;
  };

  /** The name cell: the name, or the rename field with Save and Cancel. */
  const nameOf = (item: LibraryItem): HTMLElement => {
    if (renaming !== item.id) return h('td', { class: 'name' }, entryName(item));
    const field = h('input', { type: 'text', testid: 'library-name', value: entryName(item), 'aria-label': 'New name' });
    const save = h('button', { type: 'button', testid: 'library-save-name' }, 'Save');
    const cancel = h('button', { type: 'button', testid: 'library-cancel-name' }, 'Cancel');
    save.addEventListener('click', () => {
      renaming = null;
      void change('The entry could not be renamed', () => opts.runs.rename(item.id, field.value));
    });
    cancel.addEventListener('click', () => {
      renaming = null;
      render();
    });
    return h('td', { class: 'name' }, field, save, cancel);
  };

  const render = () => {
    empty.hidden = items.length > 0;
    table.hidden = items.length === 0;
    rows.replaceChildren(
      ...items.map((item) => {
        const run: StoredRun | null = item.kind === 'run' ? item.run : null;
        const last = run?.metrics.at(-1);
        const data = run ? run.request.data.name : item.kind === 'imported' ? `(trained elsewhere, ${item.imported.folder})` : '–';
        const cells = [
          new Date(item.id).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' }),
          methodOf(item),
          data,
          run ? `${last?.step ?? 0}/${run.totalSteps}` : '–',
          statusOf(item),
          accuracyOf(item.id, evals),
        ].map((text, i) => h('td', { 'data-col': ['date', 'method', 'data', 'steps', 'status', 'accuracy'][i] }, text));
        return h(
          'tr',
          { testid: 'library-row', 'data-id': item.id, 'data-kind': item.kind, 'data-in-use': String(item.id === inUse) },
          nameOf(item),
          ...cells,
          actionsOf(item),
        );
      }),
    );
    const current = items.find((i) => i.id === inUse);
    inUseLine.textContent = current
      ? `Adapter on the model: ${entryName(current)}.`
      : 'The model runs without an adapter from the library.';
    takeOff.hidden = !current;
    takeOff.disabled = !ready || busy;
    picker.disabled = !ready || busy;
  };

  takeOff.addEventListener('click', () => void useAdapter(null));
  picker.addEventListener('change', async () => {
    const files = [...(picker.files ?? [])];
    picker.value = '';
    if (files.length === 0) return;
    const folder = folderName(files);
    const byName = new Map(files.map((f) => [f.name, f]));
    const missing = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE].filter((n) => !byName.has(n));
    if (missing.length) {
      setStatus('error', 'Nothing was imported.');
      error.show(
        `${folder}: ${missing.join(' and ')} not found; a PEFT adapter folder holds ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}.`,
      );
      return;
    }
    error.show(null);
    busy = true;
    opts.onBusyChange(true);
    render();
    setStatus('loading', `Checking ${folder} against the loaded model…`);
    try {
      const adapterFiles = {
        [ADAPTER_CONFIG_FILE]: await byName.get(ADAPTER_CONFIG_FILE)!.text(),
        [ADAPTER_WEIGHTS_FILE]: new Uint8Array(await byName.get(ADAPTER_WEIGHTS_FILE)!.arrayBuffer()),
      };
      const checked = await opts.trainer.useAdapter({ label: folder, files: adapterFiles });
      if (!checked) throw new Error('the worker loaded no adapter');
      const entry: ImportedAdapter = {
        kind: 'imported',
        importedAt: new Date().toISOString(),
        name: null,
        folder,
        lora: checked.lora,
        baseModel: checked.baseModel,
        checkedOn: checked.model,
        adapter: { ...adapterFiles, 'adapter.gguf': checked.gguf },
      };
      inUse = entry.importedAt;
      const note =
        checked.baseModel && checked.baseModel !== checked.model
          ? ` (its config names ${checked.baseModel} as its base; the shapes fit)`
          : '';
      setStatus('ready', `Imported ${folder}${note}; the playground and Evaluate now use it.`);
      await change('The imported adapter is on the model but could not be kept in this browser', () => opts.runs.addImported(entry));
      opts.onAdapterChange(items.find((i) => i.id === entry.importedAt) ?? null);
    } catch (e) {
      setStatus('error', `${folder} was not imported: it does not fit the loaded model.`);
      error.show(errorMessage(e));
    } finally {
      busy = false;
      opts.onBusyChange(false);
      render();
    }
  });

  const view: LibraryView = {
    el,
    async refresh() {
      try {
        items = await opts.runs.list();
      } catch (e) {
        error.show(`The library could not be read: ${errorMessage(e)}`);
      }
      render();
      if (open !== null) showDetail();
    },
    showEvaluations(all) {
      evals = all;
      render();
    },
    setModelReady(r) {
      ready = r;
      render();
    },
    setTraining(id) {
      training = id;
      render();
    },
    setInUse(id) {
      inUse = id;
      render();
    },
  };
  return view;
}
