/**
 * The Saliency explorer (docs/method.md §3.1, §3.2): scores the Train panel's dataset and templates
 * once in the worker — with the loaded model, or with a scorer model chosen here (a Hub id or a
 * picked folder; refused when its vocabulary differs) — and shows what NLFT finds: the dataset
 * summary, a histogram of pj/pb over the negatives' tokens with ρ marked, every record with its
 * polarity and class counts, and the saliency map of the record picked. Every change of a constant
 * re-classifies on this page from the cached scores (`classifyScores`, no worker call, no GPU pass)
 * and says how long it took. The scores are kept in IndexedDB (src/storage/explorer.ts), so a
 * reload shows them again. "Train with these settings" hands the constants (and the scorer) to the
 * Train panel.
 */
import { classifyScores, type SaliencyEntry, type SaliencySummary, saliencySummary, towardsWarning } from '../../nlft/method.ts';
import { checkSaliencyOptions, type SaliencyOptions, type TokenClass } from '../../nlft/saliency.ts';
import type { NlftTemplates } from '../../nlft/templates.ts';
import type { DatasetFile } from '../../session/requests.ts';
import type { ScoredDataset } from '../../session/scoring.ts';
import type { ExplorerStore } from '../../storage/explorer.ts';
import { DEFAULT_HUB_URL } from '../../model/hub.ts';
import type { ModelSpec } from '../../../workers/protocol.ts';
import { errorLine, formatCount, h, panel } from '../dom.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';
import { createNlftOptionsForm } from './nlft-options.ts';
import { judgeRatios, renderRatioHistogram } from './ratio-histogram.ts';
import { describeEntry, renderSaliency, renderSaliencyLegend } from './saliency-map.ts';

/** What "Train with these settings" hands the Train panel. */
export interface ExplorerSettings {
  saliency: SaliencyOptions;
  /** The templates the scores were made with. */
  templates: NlftTemplates;
  /** The scorer that scored (its name, and its files when still at hand), or null: the trained model. */
  scorer: { name: string; spec: ModelSpec | null } | null;
}

export interface ExplorerPanelOptions {
  trainer: TrainerClient;
  store: ExplorerStore;
  /** The Train panel's dataset, templates and sequence length (read when "Score dataset" is pressed). */
  scoringInput(): Promise<{ data: DatasetFile; templates: NlftTemplates; maxLen: number }>;
  /** "Train with these settings". */
  onTrain(settings: ExplorerSettings): void;
  /** Called with true while scoring holds the worker, false after. */
  onBusyChange(busy: boolean): void;
}

export interface ExplorerPanelView {
  el: HTMLElement;
  /** Shows the scores stored last, if any (call once at start). */
  restore(): Promise<void>;
  /** Enables scoring when a model is ready and no other job holds the worker. */
  setModelReady(ready: boolean): void;
}

const COUNTED: TokenClass[] = ['unlikely', 'cluster', 'correct'];

/** What happens to a record under the constants, in a few words (empty when nothing stands out). */
function recordNote(e: SaliencyEntry, s: SaliencyOptions): string {
  const notes: string[] = [];
  if (e.skipped) notes.push('skipped: no unlikely token');
  else if (e.polarity === 'negative' && !e.tokens.some((t) => t.class === 'unlikely'))
    notes.push(
      s.negatives === 'anchor' ? 'no unlikely token; trains its standard answer' : '⚠ no unlikely token: trains towards its response',
    );
  else if (e.anchor) notes.push('trains its standard answer too');
  if (e.sixPercentRule) notes.push('6% rule');
  return notes.join('; ');
}

/** The scorer's folder label from its picked files (the folder's name). */
function folderLabel(files: File[]): string {
  const rel = (files[0] as File & { webkitRelativePath?: string }).webkitRelativePath;
  return rel ? rel.split('/')[0] : files[0].name;
}

export function createExplorerPanel(opts: ExplorerPanelOptions): ExplorerPanelView {
  const { el, body } = panel('Saliency explorer', 'explorer-panel');
  const scorerKind = h(
    'select',
    { id: 'explorer-scorer', testid: 'explorer-scorer' },
    h('option', { value: 'none' }, 'none: the trained model scores'),
    h('option', { value: 'hub' }, 'a Hugging Face Hub model'),
    h('option', { value: 'folder' }, 'a model folder on this computer'),
  );
  const hubId = h('input', { type: 'text', id: 'explorer-scorer-hub-id', testid: 'explorer-scorer-hub-id', spellcheck: false });
  hubId.placeholder = 'HuggingFaceTB/SmolLM2-360M';
  const hubUrl = h('input', { type: 'url', id: 'explorer-scorer-hub-url', testid: 'explorer-scorer-hub-url', spellcheck: false });
  hubUrl.placeholder = DEFAULT_HUB_URL;
  const folder = h('input', {
    type: 'file',
    id: 'explorer-scorer-folder',
    testid: 'explorer-scorer-folder',
    multiple: true,
    webkitdirectory: true,
  });
  const hubRow = h(
    'div',
    { class: 'settings', hidden: true },
    h('label', { class: 'setting', for: 'explorer-scorer-hub-id' }, h('span', {}, 'Scorer repository'), hubId),
    h('label', { class: 'setting', for: 'explorer-scorer-hub-url' }, h('span', {}, 'Hub URL'), hubUrl),
  );
  const folderRow = h('label', { class: 'field inline', for: 'explorer-scorer-folder', hidden: true }, 'Scorer folder', folder);
  const score = h('button', { type: 'button', class: 'primary', testid: 'explorer-score', disabled: true }, 'Score dataset');
  const stop = h('button', { type: 'button', testid: 'explorer-stop', disabled: true }, 'Stop');
  const progress = h('progress', { testid: 'explorer-progress', max: 1, value: 0, hidden: true });
  const status = h(
    'p',
    { class: 'status', testid: 'explorer-status', 'data-state': 'idle' },
    'Score the Train panel’s dataset to see what NLFT finds in it before training.',
  );
  const error = errorLine('explorer-error');
  const form = createNlftOptionsForm({
    prefix: 'explorer-',
    templates: false,
    title: 'Constants (re-classify at once)',
    onReset: () => reclassify(),
  });
  (form.el as HTMLDetailsElement).open = true;
  const timing = h('p', { class: 'hint', testid: 'explorer-timing', 'data-runs': 0 });
  const summary = h('dl', { class: 'facts', testid: 'explorer-summary' });
  const useAnchor = h('button', { type: 'button', class: 'link', testid: 'explorer-use-anchor' }, 'Use anchored negatives');
  const warningText = h('span', {});
  const warning = h('p', { class: 'warning', testid: 'explorer-warning', hidden: true }, warningText, ' ', useAnchor);
  const histogram = h('div', {});
  const list = h('tbody', {});
  const table = h(
    'table',
    { class: 'explorer-records', testid: 'explorer-records' },
    h(
      'thead',
      {},
      h('tr', {}, ...['#', 'id', 'polarity', 'unlikely', 'cluster', 'correct', 'tokens', ''].map((c) => h('th', { scope: 'col' }, c))),
    ),
    list,
  );
  const mapLine = h('p', { class: 'hint', testid: 'explorer-map-line' });
  const mapBody = h('div', { class: 'result' });
  const map = h('div', { class: 'saliency-box', testid: 'explorer-map', hidden: true }, mapLine, mapBody, renderSaliencyLegend());
  const train = h('button', { type: 'button', testid: 'explorer-train', disabled: true }, 'Train with these settings');
  const results = h(
    'div',
    { hidden: true },
    timing,
    summary,
    warning,
    histogram,
    h('div', { class: 'table-scroll' }, table),
    map,
    h('p', { class: 'actions' }, train),
  );
  body.append(
    h(
      'p',
      { class: 'hint' },
      'Scores every record’s three views once on the GPU; any change of a constant then re-classifies here, from the cached scores, ' +
        'with no GPU pass. With a scorer (same tokenizer, e.g. a larger model of the family), its scores decide the classes; ' +
        '“Train with these settings” then trains with saliency fixed before training (static), re-scored by the same scorer.',
    ),
    h('label', { class: 'field inline', for: 'explorer-scorer' }, 'Scorer', scorerKind),
    hubRow,
    folderRow,
    h('div', { class: 'actions' }, score, stop),
    progress,
    status,
    error.el,
    form.el,
    results,
  );

  /** The scores shown, and the scorer's files when picked in this page (a reload loses a folder's). */
  let current: { scored: ScoredDataset; scorerSpec: ModelSpec | null } | null = null;
  let picked: string | null = null;
  let entries: SaliencyEntry[] = [];
  let ratios: number[] = [];
  let modelReady = false;
  let busy = false;
  let runs = 0;

  const setStatus = (state: string, text: string) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  const updateButtons = () => {
    score.disabled = !modelReady || busy;
    stop.disabled = !busy;
    for (const c of [scorerKind, hubId, hubUrl, folder]) c.disabled = busy;
    train.disabled = !current || busy;
  };
  const setBusy = (on: boolean) => {
    busy = on;
    updateButtons();
    opts.onBusyChange(on);
  };
  scorerKind.addEventListener('change', () => {
    hubRow.hidden = scorerKind.value !== 'hub';
    folderRow.hidden = scorerKind.value !== 'folder';
  });

  /** The scorer chosen, or null; throws naming what is missing. */
  const scorerSpec = (): ModelSpec | null => {
    if (scorerKind.value === 'hub') {
      const id = hubId.value.trim();
      if (!id) throw new Error('Scorer: type the Hub repository of the scorer (org/name), or choose none.');
      return { kind: 'hub', id, baseUrl: hubUrl.value.trim() || DEFAULT_HUB_URL };
    }
    if (scorerKind.value === 'folder') {
      const files = [...(folder.files ?? [])];
      if (files.length === 0) throw new Error('Scorer: pick the scorer’s model folder, or choose none.');
      return { kind: 'files', label: folderLabel(files), files };
    }
    return null;
  };

  const showSummary = (s: SaliencySummary, o: SaliencyOptions) => {
    const row = (key: string, term: string, value: string) => [h('dt', {}, term), h('dd', { testid: `explorer-count-${key}` }, value)];
    const towards = o.negatives === 'authors' && o.negativesWithoutSaliency === 'train' ? s.negativesWithoutUnlikely : 0;
    const fate =
      o.negativesWithoutSaliency === 'skip' ? ' (skipped)' : o.negatives === 'anchor' ? ' (anchored: no term on their response)' : '';
    const c = s.tokensByClass;
    summary.replaceChildren(
      ...row('records', 'Records', `${s.records}: ${s.positives} positive, ${s.negatives} negative`),
      ...row('withUnlikely', 'Negatives with an unlikely token', String(s.negatives - s.negativesWithoutUnlikely)),
      ...row('withoutUnlikely', 'Negatives without one', `${s.negativesWithoutUnlikely}${fate}`),
      ...row('towards', 'Trained towards their own response', String(towards)),
      ...row('sixPercent', 'Hit the 6% rule', String(s.sixPercentRule)),
      ...row('anchored', 'Train their standard answer (anchor)', String(s.anchored)),
      ...row(
        'classes',
        'Tokens per class',
        `correct ${formatCount(c.correct)} · cluster ${formatCount(c.cluster)} · unlikely ${formatCount(c.unlikely)} · plain ${formatCount(c.plain)}`,
      ),
    );
    const warn = towardsWarning(s);
    warning.hidden = !warn;
    warningText.textContent = warn ?? '';
  };

  /** Shows the saliency map of the record at `i` of the list. */
  const openRecord = (i: number) => {
    const e = entries[i];
    if (!e) return;
    for (const tr of list.children) tr.setAttribute('aria-selected', String((tr as HTMLElement).dataset.row === String(i)));
    map.hidden = false;
    map.dataset.row = String(i);
    mapLine.textContent = describeEntry(e);
    const strip = renderSaliency(e);
    strip.dataset.testid = 'explorer-tokens';
    mapBody.replaceChildren(strip);
  };

  const showList = (o: SaliencyOptions) => {
    list.replaceChildren(
      ...entries.map((e, i) => {
        const n = (c: TokenClass) => e.tokens.filter((t) => t.class === c).length;
        const note = recordNote(e, o);
        const tr = h(
          'tr',
          {
            testid: 'explorer-record',
            'data-row': i,
            'data-index': e.index,
            'data-polarity': e.polarity,
            'data-unlikely': n('unlikely'),
            tabindex: 0,
            class: note.startsWith('⚠') ? 'towards' : null,
          },
          h('td', {}, String(e.index)),
          h('td', {}, e.id),
          h('td', {}, e.polarity),
          ...COUNTED.map((c) => h('td', { class: 'num' }, String(n(c)))),
          h('td', { class: 'num' }, String(e.tokens.length)),
          h('td', { class: 'hint' }, note),
        );
        tr.addEventListener('click', () => openRecord(i));
        tr.addEventListener('keydown', (ev) => {
          if (ev.key === 'Enter' || ev.key === ' ') openRecord(i);
        });
        return tr;
      }),
    );
  };

  /** Re-classifies the cached scores under the form's constants, on this page, and redraws. */
  function reclassify(): void {
    if (!current) return;
    let o: SaliencyOptions;
    try {
      o = form.read().saliency;
      checkSaliencyOptions(o);
    } catch (e) {
      error.show(errorMessage(e));
      train.disabled = true;
      return;
    }
    error.show(null);
    const { scored } = current;
    const t0 = performance.now();
    entries = classifyScores(scored.records, scored.scores, o, (id) => scored.tokenTexts[id] ?? `<${id}>`).entries;
    const s = saliencySummary(entries, o.negativesWithoutSaliency, o.negatives);
    const ms = performance.now() - t0;
    runs++;
    timing.dataset.runs = String(runs);
    timing.dataset.ms = ms.toFixed(2);
    timing.textContent = `Re-classified ${s.records} records in ${ms.toFixed(1)} ms on this page, from the cached scores (no GPU pass).`;
    showSummary(s, o);
    histogram.replaceChildren(renderRatioHistogram(ratios, o.rho));
    showList(o);
    openRecord(Number(map.dataset.row ?? 0));
    updateButtons();
    opts.store.saveOptions(o).catch(() => undefined); // the scores are kept; only the constants' draft is lost
  }
  form.el.addEventListener('input', () => reclassify());
  form.el.addEventListener('change', () => reclassify());
  useAnchor.addEventListener('click', () => {
    const { saliency, templates } = form.read();
    form.fill({ ...saliency, negatives: 'anchor', sftOnNegatives: false }, templates);
    reclassify();
  });

  /** Shows a scoring (fresh or restored) under `saliency`. */
  const show = (scored: ScoredDataset, scorerSpec: ModelSpec | null, saliency: SaliencyOptions) => {
    current = { scored, scorerSpec };
    ratios = judgeRatios(scored.records, scored.scores);
    form.fill(saliency, scored.templates);
    results.hidden = false;
    delete map.dataset.row;
    reclassify();
  };
  const describe = (s: ScoredDataset) =>
    `${s.dataset}: ${s.records.length} records scored by ${s.scorer ? `the scorer ${s.scorer}` : s.model}` +
    `${s.truncated ? ` (${s.truncated} truncated to ${s.maxLen} tokens)` : ''}, ${new Date(s.scoredAt).toLocaleString()}.`;

  score.addEventListener('click', async () => {
    error.show(null);
    let spec: ModelSpec | null;
    let saliency: SaliencyOptions;
    try {
      spec = scorerSpec();
      saliency = form.read().saliency;
    } catch (e) {
      error.show(errorMessage(e));
      return;
    }
    setBusy(true); // at once: no second click while the data loads
    setStatus('scoring', 'Reading the data…');
    progress.hidden = false;
    progress.value = 0;
    try {
      const input = await opts.scoringInput();
      const scored = await opts.trainer.scoreDataset({ ...input, anchors: true }, spec, (p) => {
        progress.value = p.fraction;
        status.textContent = `${p.stage}…`;
      });
      if (!scored) {
        setStatus('stopped', current ? 'Stopped; the scores shown are the earlier ones.' : 'Stopped; nothing was scored.');
        return;
      }
      picked = spec?.kind === 'files' ? spec.label : null;
      show(scored, spec, saliency);
      setStatus('done', `Scored ${describe(scored)}`);
      opts.store
        .save({ scored, saliency })
        .catch((e: unknown) => error.show(`The scores could not be kept in this browser: ${errorMessage(e)}`));
    } catch (e) {
      setStatus('error', 'The dataset could not be scored.');
      error.show(errorMessage(e));
    } finally {
      progress.hidden = true;
      setBusy(false);
    }
  });
  stop.addEventListener('click', () => {
    stop.disabled = true;
    setStatus('stopping', 'Stopping after the current pass…');
    void opts.trainer.stopScoring();
  });
  train.addEventListener('click', () => {
    if (!current) return;
    const { scored, scorerSpec: spec } = current;
    const { saliency } = form.read();
    const scorer = scored.scorer
      ? { name: scored.scorer, spec: spec && (spec.kind !== 'files' || picked === scored.scorer) ? spec : null }
      : null;
    opts.onTrain({ saliency, templates: scored.templates, scorer });
  });

  return {
    el,
    async restore() {
      try {
        const last = await opts.store.last();
        if (!last) return;
        show(last.scored, null, last.saliency);
        setStatus('restored', `Scores kept from ${describe(last.scored)}`);
      } catch (e) {
        setStatus('error', 'The scores stored in this browser could not be read.');
        error.show(errorMessage(e));
      }
    },
    setModelReady(ready) {
      modelReady = ready;
      updateButtons();
    },
  };
}
