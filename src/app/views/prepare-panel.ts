/**
 * The Prepare panel (docs/method.md §6), the app's `nlft prepare`: questions with standard answers
 * (the GSM8K sample or a picked JSON/JSONL file) are answered by the loaded model in the worker
 * (with the adapter in use, if any), graded by final number, and the wrong ones judged — by the
 * template from the grade (offline) or by a judge model at an OpenAI-compatible endpoint the user
 * enters. Its API key stays in this page's memory unless the user ticks "remember", which keeps it
 * in the settings store. The records are reviewed in a table (a judgment edited, a record dropped),
 * kept as a draft across reloads, saved as a dataset and handed to the Train panel.
 */
import { DEFAULT_INSTRUCTION } from '../../data/prompt.ts';
import { DEFAULT_PREPARE } from '../../eval/prepare.ts';
import type { JudgeSpec, PrepareRequest } from '../../session/prepare.ts';
import type { DatasetFile } from '../../session/requests.ts';
import {
  type DatasetStore,
  DRAFT_ID,
  keptItems,
  type PreparedDataset,
  preparedFile,
  type ReviewedItem,
  reviewProblem,
} from '../../storage/datasets.ts';
import type { JudgeSettings } from '../../storage/db.ts';
import { errorLine, h, panel } from '../dom.ts';
import { fetchSample, type ModelSamples, readPickedFile, SAMPLES, type SampleName } from '../samples.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';

export interface PreparePanelOptions {
  trainer: TrainerClient;
  datasets: DatasetStore;
  /** The stored judge settings (absent: the template). */
  judge: JudgeSettings | undefined;
  /** Persists the judge settings (the key only when the user asked to remember it). */
  onJudgeChange(judge: JudgeSettings): Promise<void>;
  /** Called with true while a preparation holds the worker, false after. */
  onBusyChange(busy: boolean): void;
  /** Hands a saved dataset to the Train panel. */
  onTrain(data: DatasetFile): void;
  /** Called after a dataset is stored or deleted (the Storage view lists them). */
  onChange(): void;
}

export interface PreparePanelView {
  el: HTMLElement;
  /** Shows the draft under review and the saved datasets (call once at start). */
  restore(): Promise<void>;
  /** Lists the saved datasets again (after the Storage view deleted one). */
  refresh(): Promise<void>;
  setModelReady(ready: boolean): void;
  /**
   * Follows a newly loaded model: its questions (unless a file is picked) and its own system text
   * (its templates.json's base text, while the field holds the previous default).
   */
  useModel(samples: ModelSamples, baseSystem: string | undefined): void;
}

/** Where a remembered key is kept, as the panel says it. */
const KEY_KEPT = "Kept in this browser's IndexedDB (database nlft-studio, store settings), unencrypted, until you untick this.";
const KEY_MEMORY = 'The key stays in this page’s memory only: a reload forgets it. It is sent to the endpoint above and nowhere else.';

/** A labelled input in the settings grid (`wide`: two columns). */
function setting(id: string, label: string, input: HTMLInputElement, wide = false): HTMLElement {
  input.id = id;
  input.dataset.testid = id;
  return h('label', { class: wide ? 'setting wide' : 'setting', for: id }, h('span', {}, label), input);
}

/** The grade in words: right, or what was expected against what the answer gave. */
const gradeText = (i: ReviewedItem) => (i.correct ? 'right' : `wrong: expected ${i.expected ?? '–'}, got ${i.got ?? '–'}`);

/** "5 records: 2 right, 3 wrong; 1 dropped" */
function describeItems(items: readonly ReviewedItem[]): string {
  const right = items.filter((i) => i.correct).length;
  const dropped = items.length - keptItems({ items }).length;
  return `${items.length} records: ${right} right, ${items.length - right} wrong${dropped ? `; ${dropped} left out` : ''}`;
}

export function createPreparePanel(opts: PreparePanelOptions): PreparePanelView {
  const { el, body } = panel('Prepare data', 'prepare-panel');
  const file = h('input', { type: 'file', id: 'prepare-file', testid: 'prepare-file', accept: '.json,.jsonl,application/json' });
  let sample: SampleName = 'gsm8k-sample.jsonl';
  const dataName = h('span', { class: 'hint', testid: 'prepare-data' }, SAMPLES[sample].label);
  const limit = h('input', { type: 'number', value: 5, min: 1, step: '1' });
  const temperature = h('input', { type: 'number', value: DEFAULT_PREPARE.temperature, min: 0, step: '0.1' });
  const maxNew = h('input', { type: 'number', value: 256, min: 1, step: '1' });
  const seed = h('input', { type: 'number', value: DEFAULT_PREPARE.seed, step: '1' });
  const system = h('textarea', { id: 'prepare-system', testid: 'prepare-system', rows: 2, spellcheck: false });
  system.value = DEFAULT_INSTRUCTION;
  /** The system text the field was last given by the app (not typed): replaced when another model brings its own. */
  let defaultSystem = DEFAULT_INSTRUCTION;
  const judgeKind = h(
    'select',
    { id: 'prepare-judge', testid: 'prepare-judge' },
    h('option', { value: 'template' }, 'Template judgment (offline, from the grade)'),
    h('option', { value: 'chat' }, 'A judge model at an OpenAI-compatible endpoint'),
  );
  const url = h('input', { type: 'url', placeholder: 'https://api.openai.com/v1' });
  const judgeModel = h('input', { type: 'text', placeholder: 'gpt-4o-mini' });
  const apiKey = h('input', { type: 'password', autocomplete: 'off', placeholder: 'sk-…' });
  const remember = h('input', { type: 'checkbox', id: 'prepare-judge-remember', testid: 'prepare-judge-remember' });
  const keyHint = h('p', { class: 'hint', testid: 'prepare-judge-key-hint' }, KEY_MEMORY);
  const endpoint = h(
    'div',
    { class: 'panel-body', testid: 'prepare-endpoint', hidden: true },
    h(
      'div',
      { class: 'settings' },
      setting('prepare-judge-url', 'Endpoint URL', url, true),
      setting('prepare-judge-model', 'Judge model', judgeModel),
      setting('prepare-judge-key', 'API key', apiKey),
    ),
    h('label', { class: 'check', for: 'prepare-judge-remember' }, remember, 'Remember the key on this device'),
    keyHint,
    h('p', { class: 'hint' }, 'The worker calls the endpoint from this page: it must allow requests from this site (CORS).'),
  );
  const start = h('button', { type: 'button', class: 'primary', testid: 'prepare-start', disabled: true }, 'Prepare');
  const stop = h('button', { type: 'button', testid: 'prepare-stop', disabled: true }, 'Stop');
  const progress = h('progress', { max: 1, value: 0, hidden: true });
  const status = h(
    'p',
    { class: 'status', testid: 'prepare-status', 'data-state': 'idle' },
    'The model answers each question; wrong answers get a judgment. Review the records, then save them as a dataset.',
  );
  const error = errorLine('prepare-error');
  const rows = h('tbody', {});
  const review = h(
    'div',
    { class: 'panel-body', testid: 'prepare-review', hidden: true },
    h('p', { class: 'hint', testid: 'prepare-summary' }),
    h(
      'div',
      { class: 'table-scroll' },
      h(
        'table',
        { class: 'explorer-records prepare-table', testid: 'prepare-table' },
        h(
          'thead',
          {},
          h('tr', {}, ...['#', 'Question', 'The model’s answer', 'Grade', 'Judgment', 'Leave out'].map((t) => h('th', {}, t))),
        ),
        rows,
      ),
    ),
  );
  const name = h('input', { type: 'text', id: 'prepare-name', testid: 'prepare-name' });
  const save = h('button', { type: 'button', testid: 'prepare-save' }, 'Save as dataset');
  const train = h('button', { type: 'button', class: 'primary', testid: 'prepare-train' }, 'Train on it');
  const saveRow = h(
    'div',
    { class: 'actions', hidden: true },
    h('label', { class: 'field', for: 'prepare-name' }, 'Name'),
    name,
    save,
    train,
  );
  const savedRows = h('tbody', {});
  const saved = h(
    'div',
    { class: 'panel-body', testid: 'prepare-saved', hidden: true },
    h('strong', {}, 'Saved datasets'),
    h(
      'div',
      { class: 'table-scroll' },
      h(
        'table',
        { class: 'explorer-records library-table', testid: 'prepare-saved-table' },
        h('thead', {}, h('tr', {}, ...['Name', 'Saved', 'Records', 'Judge', ''].map((t) => h('th', {}, t)))),
        savedRows,
      ),
    ),
  );
  body.append(
    h(
      'div',
      { class: 'actions' },
      h('span', { class: 'field' }, 'Questions'),
      dataName,
      h('label', { class: 'file', for: 'prepare-file' }, 'Choose a file…', file),
    ),
    h(
      'div',
      { class: 'settings' },
      setting('prepare-limit', 'How many', limit),
      setting('prepare-temperature', 'Temperature', temperature),
      setting('prepare-max-new', 'Max tokens per answer', maxNew),
      setting('prepare-seed', 'Seed', seed),
    ),
    h('label', { class: 'field', for: 'prepare-system' }, 'System text (questions without an instruction)'),
    system,
    h('div', { class: 'actions' }, h('label', { class: 'field', for: 'prepare-judge' }, 'Judge of wrong answers'), judgeKind),
    endpoint,
    h('div', { class: 'actions' }, start, stop),
    progress,
    status,
    error.el,
    review,
    saveRow,
    saved,
  );

  let ready = false;
  let busy = false;
  let picked: File | null = null;
  /** The preparation under review (stored under `DRAFT_ID`), or null before the first. */
  let current: PreparedDataset | null = null;
  /** The saved dataset whose Delete waits for a second click. */
  let confirmDelete: string | null = null;

  const setStatus = (state: string, text: string) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  const update = () => {
    start.disabled = !ready || busy;
    stop.disabled = !busy;
    for (const c of [file, limit, temperature, maxNew, seed, system, judgeKind, url, judgeModel, apiKey, remember, save, train, name])
      c.disabled = busy;
    for (const c of rows.querySelectorAll<HTMLInputElement | HTMLTextAreaElement>('input, textarea'))
      c.disabled = busy || c.dataset.locked === 'true';
  };

  // The judge: settings kept as the user asked (the key only with "remember").
  const stored = opts.judge;
  if (stored) {
    judgeKind.value = stored.kind;
    url.value = stored.url;
    judgeModel.value = stored.model;
    apiKey.value = stored.apiKey ?? '';
    remember.checked = stored.apiKey !== undefined;
  }
  const showJudge = () => {
    endpoint.hidden = judgeKind.value !== 'chat';
    keyHint.textContent = remember.checked ? KEY_KEPT : KEY_MEMORY;
  };
  showJudge();
  const saveJudge = () => {
    showJudge();
    const j: JudgeSettings = {
      kind: judgeKind.value === 'chat' ? 'chat' : 'template',
      url: url.value.trim(),
      model: judgeModel.value.trim(),
    };
    if (remember.checked) j.apiKey = apiKey.value;
    opts.onJudgeChange(j).catch((e: unknown) => error.show(`The judge settings could not be saved in this browser: ${errorMessage(e)}`));
  };
  for (const c of [judgeKind, url, judgeModel, remember]) c.addEventListener('change', saveJudge);
  apiKey.addEventListener('change', () => {
    if (remember.checked) saveJudge();
  });
  const judgeSpec = (): JudgeSpec =>
    judgeKind.value === 'chat'
      ? { kind: 'chat', url: url.value, model: judgeModel.value, apiKey: apiKey.value || null }
      : { kind: 'template' };

  /** Stores the draft; a refused write shows its message (the draft stays on the page). */
  const keepDraft = async () => {
    if (!current) return;
    await opts.datasets.put(current).catch((e: unknown) => error.show(errorMessage(e)));
    opts.onChange();
  };
  const showSummary = () => {
    if (!current) return;
    const s = review.querySelector<HTMLElement>('[data-testid=prepare-summary]')!;
    s.textContent = `${describeItems(current.items)} · ${current.source}, judged by ${current.judge || '…'}${current.savedAs ? ` · saved as “${current.name}”` : ''}`;
  };

  /** One review row: the judgment of a wrong answer is editable; any record can be left out. */
  const itemRow = (item: ReviewedItem, index: number) => {
    const { record } = item;
    const noAnswer = record.output.trim() === '';
    const drop = h('input', { type: 'checkbox', testid: 'prepare-drop', 'aria-label': `Leave out record ${record.id}` });
    drop.checked = item.dropped;
    drop.dataset.locked = String(noAnswer); // a record without an answer cannot be trained on: it stays left out
    drop.disabled = noAnswer || busy;
    const tr = h('tr', {
      testid: 'prepare-row',
      'data-correct': String(item.correct),
      'data-dropped': String(item.dropped),
      'data-index': index,
    });
    drop.addEventListener('change', () => {
      item.dropped = drop.checked;
      tr.dataset.dropped = String(item.dropped);
      showSummary();
      void keepDraft();
    });
    let judgment: HTMLElement;
    if (item.correct) {
      judgment = h('span', { class: 'hint' }, 'none: a right answer trains as a positive');
    } else {
      const text = h('textarea', { testid: 'prepare-judgment', rows: 4, 'aria-label': `Judgment of record ${record.id}` });
      text.value = record.judgment ?? '';
      text.disabled = busy;
      text.addEventListener('input', () => {
        record.judgment = text.value;
      });
      text.addEventListener('change', () => void keepDraft());
      judgment = text;
    }
    tr.append(
      h('td', { class: 'num' }, record.id),
      h('td', {}, h('div', { class: 'cell-text' }, record.input)),
      h(
        'td',
        {},
        h('div', { class: 'cell-text', testid: 'prepare-output' }, noAnswer ? '(no answer: cannot be trained on)' : record.output),
      ),
      h('td', { testid: 'prepare-grade' }, gradeText(item)),
      h('td', { class: 'judgment' }, judgment),
      h('td', {}, drop),
    );
    return tr;
  };
  const showReview = () => {
    review.hidden = saveRow.hidden = !current;
    if (!current) return;
    rows.replaceChildren(...current.items.map(itemRow));
    name.value = current.name;
    showSummary();
  };

  const showSaved = async () => {
    const all = await opts.datasets.list().catch(() => []);
    saved.hidden = all.length === 0;
    savedRows.replaceChildren(
      ...all.map((d) => {
        const open = h('button', { type: 'button', testid: 'prepare-saved-open' }, 'Open');
        const trainOn = h('button', { type: 'button', testid: 'prepare-saved-train' }, 'Train on it');
        const del = h(
          'button',
          { type: 'button', testid: 'prepare-saved-delete' },
          confirmDelete === d.id ? 'Delete? Click again' : 'Delete',
        );
        open.addEventListener('click', () => {
          current = { ...d, id: DRAFT_ID, savedAs: d.id };
          showReview();
          void keepDraft();
        });
        trainOn.addEventListener('click', () => handOver(d));
        del.addEventListener('click', async () => {
          if (confirmDelete !== d.id) {
            confirmDelete = d.id;
            return void showSaved();
          }
          confirmDelete = null;
          await opts.datasets.remove(d.id).catch((e: unknown) => error.show(errorMessage(e)));
          opts.onChange();
          await showSaved();
        });
        return h(
          'tr',
          { testid: 'prepare-saved-row', 'data-id': d.id },
          h('td', {}, d.name),
          h('td', {}, new Date(d.id).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' })),
          h('td', { class: 'num' }, `${keptItems(d).length} of ${d.items.length}`),
          h('td', {}, d.judge),
          h('td', { class: 'row-actions' }, open, trainOn, del),
        );
      }),
    );
  };

  /** Saves the reviewed records under the typed name; resolves the saved dataset, or null with the problem shown. */
  const saveCurrent = async (): Promise<PreparedDataset | null> => {
    error.show(null);
    if (!current) return null;
    const problem = reviewProblem(current);
    if (problem) {
      error.show(problem);
      return null;
    }
    const typed = name.value.trim();
    if (!typed) {
      error.show('Name: give the dataset a name to save it under.');
      return null;
    }
    const d: PreparedDataset = { ...current, id: current.savedAs ?? new Date().toISOString(), name: typed, savedAs: null };
    try {
      await opts.datasets.put(d);
    } catch (e) {
      error.show(errorMessage(e));
      return null;
    }
    current = { ...current, name: typed, savedAs: d.id };
    await keepDraft();
    showSummary();
    await showSaved();
    setStatus('done', `Saved “${typed}”: ${keptItems(d).length} records to train on.`);
    return d;
  };
  const handOver = (d: PreparedDataset) => {
    const data = preparedFile(d);
    opts.onTrain(data);
    setStatus('done', `The Train panel now trains on ${data.name} (${keptItems(d).length} records).`);
  };
  save.addEventListener('click', () => void saveCurrent());
  train.addEventListener('click', async () => {
    const d = await saveCurrent();
    if (d) handOver(d);
  });

  file.addEventListener('change', () => {
    picked = file.files?.[0] ?? null;
    if (picked) dataName.textContent = picked.name;
  });
  stop.addEventListener('click', () => void opts.trainer.stopPreparation());

  /** The request as typed, or an error naming the field that does not hold an allowed number. */
  const readSettings = (): Omit<PrepareRequest, 'data'> => {
    const n = Number(limit.value);
    const t = Number(temperature.value);
    const m = Number(maxNew.value);
    const s = Number(seed.value);
    if (!Number.isInteger(n) || n < 1) throw new Error(`How many: expected a positive whole number, found "${limit.value}"`);
    if (temperature.value.trim() === '' || !Number.isFinite(t) || t < 0)
      throw new Error(`Temperature: expected a number of 0 or more (0 = greedy), found "${temperature.value}"`);
    if (!Number.isInteger(m) || m < 1) throw new Error(`Max tokens per answer: expected a positive whole number, found "${maxNew.value}"`);
    if (seed.value.trim() === '' || !Number.isInteger(s)) throw new Error(`Seed: expected a whole number, found "${seed.value}"`);
    return { limit: n, temperature: t, maxNewTokens: m, seed: s, system: system.value, judge: judgeSpec() };
  };

  start.addEventListener('click', async () => {
    error.show(null);
    let settings: Omit<PrepareRequest, 'data'>;
    try {
      settings = readSettings();
    } catch (e) {
      error.show(errorMessage(e));
      return;
    }
    busy = true;
    update();
    opts.onBusyChange(true);
    progress.hidden = false;
    progress.value = 0;
    setStatus('running', 'Loading the questions…');
    try {
      const data = picked ? await readPickedFile(picked) : await fetchSample(sample);
      const stem = data.name.replace(/\.jsonl?$/i, '');
      const draft: PreparedDataset = {
        id: DRAFT_ID,
        name: `${stem}-prepared`,
        at: new Date().toISOString(),
        source: data.name,
        judge: '',
        model: '',
        items: [],
        judgeError: null,
        savedAs: null,
      };
      current = draft;
      showReview();
      setStatus('running', 'Answering…');
      const outcome = await opts.trainer.prepare({ ...settings, data }, (item, done, total) => {
        const reviewed: ReviewedItem = { ...item, dropped: item.record.output.trim() === '' };
        draft.items.push(reviewed);
        rows.append(itemRow(reviewed, draft.items.length - 1));
        progress.value = done / total;
        setStatus('running', `Prepared ${done} of ${total}…`);
        showSummary();
        void keepDraft();
      });
      Object.assign(draft, { judge: outcome.judge, model: outcome.model, judgeError: outcome.judgeError });
      showSummary();
      await keepDraft();
      const n = outcome.items.length;
      if (outcome.judgeError) {
        setStatus('error', `The judge failed after ${n} of ${outcome.total} records.`);
        error.show(`${outcome.judgeError}. The ${n} records prepared before it are kept below.`);
      } else {
        setStatus('done', `Prepared ${n} of ${outcome.total}${outcome.stopped ? ' (stopped)' : ''}: review the records, then save them.`);
      }
    } catch (e) {
      setStatus('error', 'The preparation failed.');
      error.show(errorMessage(e));
    } finally {
      busy = false;
      progress.hidden = true;
      update();
      opts.onBusyChange(false);
    }
  });

  return {
    el,
    async restore() {
      current = (await opts.datasets.get(DRAFT_ID).catch(() => undefined)) ?? null;
      showReview();
      await showSaved();
    },
    refresh: showSaved,
    setModelReady(r) {
      ready = r;
      update();
    },
    useModel(samples, baseSystem) {
      sample = samples.prepare;
      if (!picked) dataName.textContent = SAMPLES[sample].label;
      const text = baseSystem ?? DEFAULT_INSTRUCTION;
      if (system.value === defaultSystem) system.value = text;
      defaultSystem = text;
    },
  };
}
