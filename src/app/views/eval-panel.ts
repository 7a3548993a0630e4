/**
 * The Evaluate panel (docs/method.md §7): the loaded model — with the adapter trained last, if any —
 * answers the first N questions of the loaded model's sample test file (toy-math's easy set for the
 * demo, the GSM8K sample otherwise) or a picked file greedily; each answer's final number is
 * compared with the standard answer's. Shows progress, each item, the accuracy with its counts,
 * and every earlier evaluation (kept across reloads) as a table, newest first. Records
 * without an instruction are asked under an editable system text that defaults to the base text
 * the last run trained with (docs/method.md §7).
 */
import { DEFAULT_INSTRUCTION } from '../../data/prompt.ts';
import type { EvalDraft, EvalHistory } from '../../storage/db.ts';
import type { StoredRun } from '../../storage/runs.ts';
import type { EvalOutcome } from '../../session/requests.ts';
import { errorLine, h, panel } from '../dom.ts';
import { fetchSample, GENERAL_SAMPLES, type ModelSamples, readPickedFile, SAMPLES } from '../samples.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';
import { truncate } from './data-panel.ts';

export interface EvalPanelOptions {
  trainer: TrainerClient;
  history: EvalHistory;
  /** The stored draft (absent: follow the last run's base text). */
  draft: EvalDraft | undefined;
  /** Persists the draft. */
  onDraftChange(draft: EvalDraft): Promise<void>;
  /** Called with true while an evaluation holds the worker, false after. */
  onBusyChange(busy: boolean): void;
  /** Called with every stored evaluation (newest last) when the list is shown. */
  onHistoryChange(all: EvalOutcome[]): void;
}

export interface EvalPanelView {
  el: HTMLElement;
  /** Lists the stored evaluations (call once at start). */
  restore(): Promise<void>;
  setModelReady(ready: boolean): void;
  /**
   * The last stored run: its base text (`trainedSystemOf`) is the system text's default, and an
   * evaluation with a trained adapter names it (`runDescription`).
   */
  setTrainedRun(run: StoredRun | undefined): void;
  /**
   * Follows a newly loaded model: its sample test file, its question count while the field holds the
   * previous model's, and the base text of its templates.json (the system text's default until a run trains).
   */
  useSamples(samples: ModelSamples, modelSystem?: string | null): void;
}

/**
 * The system text a stored run asked records without an instruction under: its templates' base
 * text (NLFT), the default instruction (SFT, or no run).
 */
export function trainedSystemOf(run: Pick<StoredRun, 'request'> | undefined): string {
  return run?.request.method === 'nlft' ? run.request.templates.baseSystem : DEFAULT_INSTRUCTION;
}

/** What an evaluation's adapter says of the run that trained it: method, data, start time and what it changed from the authors'. */
export function runDescription(run: Pick<StoredRun, 'request' | 'startedAt'>): string {
  const r = run.request;
  const when = new Date(run.startedAt).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
  const how = [
    r.method === 'nlft' && r.saliency.negatives === 'anchor' ? 'anchored negatives' : null,
    r.method === 'nlft' && r.saliencyMode ? `${r.saliencyMode} saliency` : null,
    r.scorer ? `scorer ${r.scorer}` : null,
  ].filter((x) => x !== null);
  return `${r.method} run of ${when} on ${r.data.name}${how.length ? ` (${how.join(', ')})` : ''}`;
}

const percent = (o: EvalOutcome) => `${o.summary.correct}/${o.summary.total} = ${(100 * o.summary.accuracy).toFixed(1)}%`;

/** One stored evaluation as a row: model and adapter, data, system text (shortened; whole in the tooltip), items, accuracy. */
function historyRow(o: EvalOutcome): HTMLTableRowElement {
  const model = o.model ?? o.label.split(';')[0];
  const adapter = o.adapter ? o.adapter.description : 'no adapter';
  const when = new Date(o.at).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
  const system = o.system ?? '';
  const { correct, total, accuracy } = o.summary;
  return h(
    'tr',
    { testid: 'eval-history-row', title: o.label },
    h('td', { title: adapter }, model, h('br', {}), h('span', { class: 'hint' }, truncate(adapter, 64))),
    h('td', { class: 'wrap' }, o.dataName ?? '–', h('br', {}), h('span', { class: 'hint' }, when)),
    h('td', { title: system }, system ? truncate(system, 24) : '–'),
    h('td', { class: 'num' }, `${total}${o.stopped ? ' (stopped)' : ''}`),
    h(
      'td',
      { class: 'num', 'data-accuracy': accuracy },
      h('strong', {}, `${(100 * accuracy).toFixed(1)}%`),
      h('br', {}),
      `${correct}/${total}`,
    ),
  );
}

export function createEvalPanel(opts: EvalPanelOptions): EvalPanelView {
  const { el, body } = panel('Evaluate', 'eval-panel');
  let samples: ModelSamples = GENERAL_SAMPLES;
  const limit = h('input', { type: 'number', id: 'eval-limit', testid: 'eval-limit', value: samples.evalLimit, min: 1, step: '1' });
  const maxNew = h('input', { type: 'number', id: 'eval-max-new', testid: 'eval-max-new', value: 256, min: 1, step: '1' });
  const file = h('input', { type: 'file', id: 'eval-file', testid: 'eval-file', accept: '.json,.jsonl,application/json' });
  const dataName = h('span', { class: 'hint', testid: 'eval-data' }, SAMPLES[samples.eval].label);
  const system = h('textarea', { id: 'eval-system', testid: 'eval-system', rows: 2, spellcheck: false });
  const systemHint = h('span', { class: 'hint', testid: 'eval-system-hint' });
  const systemReset = h('button', { type: 'button', testid: 'eval-system-reset' }, 'Use the run’s text');
  const run = h('button', { type: 'button', class: 'primary', testid: 'eval-start', disabled: true }, 'Evaluate');
  const stop = h('button', { type: 'button', testid: 'eval-stop', disabled: true }, 'Stop');
  const progress = h('progress', { max: 1, value: 0, hidden: true });
  const status = h('p', { class: 'status', testid: 'eval-status', 'data-state': 'idle' }, 'Greedy answers, graded by their final number.');
  const error = errorLine('eval-error');
  const items = h('ol', { class: 'eval-items', testid: 'eval-items' });
  const historyRows = h('tbody', {});
  const history = h(
    'table',
    { class: 'results-table', testid: 'eval-history' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ...['Model + adapter', 'Data', 'System prompt', 'Items', 'Accuracy'].map((c, i) => h('th', { class: i > 2 ? 'num' : null }, c)),
      ),
    ),
    historyRows,
  );
  body.append(
    h(
      'div',
      { class: 'actions' },
      h('span', { class: 'field' }, 'Questions'),
      dataName,
      h('label', { class: 'file', for: 'eval-file' }, 'Choose a file…', file),
    ),
    h(
      'div',
      { class: 'settings' },
      h('label', { class: 'setting', for: 'eval-limit' }, h('span', {}, 'How many'), limit),
      h('label', { class: 'setting', for: 'eval-max-new' }, h('span', {}, 'Max tokens per answer'), maxNew),
    ),
    h('label', { class: 'field', for: 'eval-system' }, 'System text (records without an instruction)'),
    system,
    h('div', { class: 'actions' }, systemHint, systemReset),
    h('div', { class: 'actions' }, run, stop),
    progress,
    status,
    error.el,
    items,
    h('strong', {}, 'Results so far (newest first)'),
    h('div', { class: 'table-scroll' }, history),
  );

  let ready = false;
  let busy = false;
  let picked: File | null = null;
  let trained = DEFAULT_INSTRUCTION;
  let trainedRun: StoredRun | undefined;
  /** The loaded model's own base text (its templates.json), if any. */
  let modelSystem: string | null = null;
  /**
   * The system text's default: the base text the last NLFT run trained with, else the model's own (an
   * SFT run trains under the records' instruction or the default one; the model's fits toy-math's records), else ours.
   */
  const followSystem = () => {
    trained = trainedRun?.request.method === 'nlft' ? trainedSystemOf(trainedRun) : (modelSystem ?? DEFAULT_INSTRUCTION);
    showSystem();
  };
  let draft: EvalDraft = opts.draft ?? { system: null };
  const showSystem = () => {
    system.value = draft.system ?? trained;
    const source =
      trainedRun?.request.method === 'nlft'
        ? 'The base text the last run trained with.'
        : modelSystem
          ? 'The model’s base text (its templates.json).'
          : 'The default base text.';
    systemHint.textContent = draft.system === null || draft.system === trained ? source : 'Edited: not the last run’s text.';
  };
  /** Keeps the draft; `data-saved` on the field says when the store has it. */
  const saveDraft = (d: EvalDraft) => {
    draft = d;
    system.dataset.saved = 'false';
    opts.onDraftChange(d).then(
      () => {
        if (draft === d) system.dataset.saved = 'true';
      },
      (e: unknown) => error.show(`The system text could not be saved in this browser: ${errorMessage(e)}`),
    );
  };
  showSystem();
  const update = () => {
    run.disabled = !ready || busy;
    stop.disabled = !busy;
    for (const c of [limit, maxNew, file, system, systemReset]) c.disabled = busy;
  };
  const setStatus = (state: string, text: string) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  const showHistory = (all: EvalOutcome[]) => {
    opts.onHistoryChange(all);
    historyRows.replaceChildren(...all.map(historyRow).reverse());
  };

  file.addEventListener('change', () => {
    picked = file.files?.[0] ?? null;
    if (picked) dataName.textContent = picked.name;
  });
  system.addEventListener('input', () => {
    saveDraft({ system: system.value === trained ? null : system.value });
    showSystem();
  });
  systemReset.addEventListener('click', () => {
    saveDraft({ system: null });
    showSystem();
  });
  stop.addEventListener('click', () => void opts.trainer.stopEvaluation());
  run.addEventListener('click', async () => {
    error.show(null);
    const n = Number(limit.value);
    const m = Number(maxNew.value);
    if (!Number.isInteger(n) || n < 1 || !Number.isInteger(m) || m < 1) {
      error.show(`How many and Max tokens must be positive whole numbers (got "${limit.value}", "${maxNew.value}")`);
      return;
    }
    busy = true;
    update();
    opts.onBusyChange(true);
    items.replaceChildren();
    progress.hidden = false;
    progress.value = 0;
    setStatus('running', 'Loading the questions…');
    try {
      const data = picked ? await readPickedFile(picked) : await fetchSample(samples.eval);
      setStatus('running', 'Answering…');
      const request = { data, limit: n, maxNewTokens: m, system: draft.system ?? trained };
      const adapterRun = trainedRun;
      const result = await opts.trainer.evaluate(request, (it, done, total) => {
        progress.value = done / total;
        setStatus('running', `Answered ${done} of ${total}…`);
        items.append(
          h(
            'li',
            { 'data-correct': it.correct },
            `#${it.index} ${it.correct ? 'right' : 'wrong'}: expected ${it.expected ?? '–'}, got ${it.got ?? '–'} (${it.tokens} tokens)`,
          ),
        );
      });
      // The worker knows the adapter's settings; the page knows the stored run that trained it.
      const out: EvalOutcome =
        result.adapter && adapterRun
          ? {
              ...result,
              adapter: { runId: adapterRun.startedAt, description: `${runDescription(adapterRun)}, ${result.adapter.description}` },
            }
          : result;
      // Saved and listed before the status says done: 'done' means the whole result is on the page.
      await opts.history.add(out).catch((e: unknown) => error.show(`The result could not be saved in this browser: ${errorMessage(e)}`));
      showHistory(await opts.history.list());
      setStatus('done', `Accuracy ${percent(out)}${out.stopped ? ' (stopped early)' : ''} — ${out.label}`);
    } catch (e) {
      setStatus('error', 'The evaluation failed.');
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
      showHistory(await opts.history.list().catch(() => []));
    },
    setModelReady(r) {
      ready = r;
      update();
    },
    useSamples(next, system = null) {
      if (limit.value === String(samples.evalLimit)) limit.value = String(next.evalLimit);
      samples = next;
      if (!picked) dataName.textContent = SAMPLES[samples.eval].label;
      modelSystem = system;
      followSystem();
    },
    setTrainedRun(run) {
      trainedRun = run;
      followSystem();
    },
  };
}
