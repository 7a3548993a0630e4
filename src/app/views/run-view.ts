/**
 * What the Train panel shows of a run (DOM only): the last step's numbers (loss, tokens/s, s/step,
 * gradient norm, GPU peak), the dataset-level saliency summary, the loss chart, the saliency map of
 * every visited record, and the adapter's files to download (PEFT's two, and adapter.gguf with an
 * Ollama Modelfile and the llama.cpp line).
 */
import { formatBytes } from '../../engine/buffers.ts';
import { GGUF_ADAPTER_FILE, ggufAdapterUsage } from '../../export/gguf.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, type PeftAdapterFiles } from '../../export/peft.ts';
import { type SaliencySummary, towardsWarning } from '../../nlft/method.ts';
import type { StoredRun } from '../../storage/runs.ts';
import { formatCount, h } from '../dom.ts';
import { createLossChart } from './loss-chart.ts';
import { describeEntry, renderSaliency, renderSaliencyLegend } from './saliency-map.ts';

export interface RunView {
  /** The view's elements, in order. */
  els: HTMLElement[];
  /** Shows `run`'s steps, summary and saliency as they stand (after a step, or read back from storage); not its adapter. */
  show(run: StoredRun): void;
  /** Shows the saliency summary (null hides it). */
  showSummary(summary: SaliencySummary | null): void;
  /** Offers the adapter's files for download (null hides them). */
  showAdapter(files: PeftAdapterFiles | null): void;
}

/** A download link for one file of the adapter. */
function fileLink(name: string, content: string | Uint8Array, testid: string): HTMLAnchorElement {
  const blob = new Blob([content as BlobPart], { type: name.endsWith('.json') ? 'application/json' : 'application/octet-stream' });
  return h('a', { href: URL.createObjectURL(blob), download: name, testid, class: 'download' }, `${name} (${formatBytes(blob.size)})`);
}

/** The GGUF adapter's row: its link, and the Ollama Modelfile and llama.cpp line for the base named in the PEFT config. */
function ggufDownload(gguf: Uint8Array, peftConfig: string): HTMLElement[] {
  const named = (JSON.parse(peftConfig) as { base_model_name_or_path?: unknown }).base_model_name_or_path;
  const { modelfile, llamaCpp } = ggufAdapterUsage(typeof named === 'string' && named !== '' ? named : 'base');
  return [
    h(
      'p',
      { class: 'actions' },
      h('strong', {}, 'For llama.cpp and Ollama:'),
      fileLink(GGUF_ADAPTER_FILE, gguf, 'export-gguf'),
      h(
        'span',
        { class: 'hint' },
        'On the same base model in GGUF. Ollama: this Modelfile beside both files, then ollama create NAME -f Modelfile.',
      ),
    ),
    h('pre', { class: 'modelfile', testid: 'export-modelfile' }, modelfile),
    h('pre', { class: 'modelfile', testid: 'export-llamacpp' }, llamaCpp),
  ];
}

/**
 * The view of one run. `onUseAnchor`, when given, offers anchored negatives for the next run under
 * the saliency warning (the Train panel); without it the warning stands alone (the Library).
 */
export function createRunView(opts: { onUseAnchor?: () => void } = {}): RunView {
  const stats = h('p', { class: 'summary', testid: 'train-stats', hidden: true });
  const summaryLine = h('p', { class: 'hint', testid: 'train-summary', hidden: true });
  let useAnchor: HTMLButtonElement | null = null;
  if (opts.onUseAnchor) {
    useAnchor = h('button', { type: 'button', class: 'link', testid: 'train-use-anchor' }, 'Use anchored negatives for the next run');
    useAnchor.addEventListener('click', opts.onUseAnchor);
  }
  const warningText = h('span', {});
  const warning = h('p', { class: 'warning', testid: 'train-warning', hidden: true }, warningText, ' ', useAnchor);
  const chart = createLossChart();
  const salRecord = h('select', { testid: 'saliency-record', 'aria-label': 'Record shown in the saliency map' });
  const salLine = h('p', { class: 'hint', testid: 'saliency-line' });
  const salBody = h('div', { class: 'result' });
  const saliencyBox = h(
    'div',
    { class: 'saliency-box', testid: 'saliency-map', hidden: true },
    h('div', { class: 'actions' }, h('strong', {}, 'Saliency map'), salRecord),
    salLine,
    salBody,
    renderSaliencyLegend(),
  );
  const exportBox = h('div', { testid: 'train-export', hidden: true });
  let shown: StoredRun | null = null;

  /** The entry picked in the menu (kept across updates while that record is listed). */
  const showEntry = () => {
    const e = shown?.saliency.find((x) => x.id === salRecord.value);
    if (!e) return;
    salLine.textContent = describeEntry(e);
    salBody.replaceChildren(renderSaliency(e));
  };
  salRecord.addEventListener('change', showEntry);

  const view: RunView = {
    els: [stats, summaryLine, warning, chart.el, saliencyBox, exportBox],
    show(run) {
      shown = run;
      chart.render(run.metrics, run.totalSteps);
      const m = run.metrics.at(-1);
      stats.hidden = !m;
      if (m)
        stats.textContent =
          `Step ${m.step}/${m.totalSteps} · epoch ${m.epoch + 1} · loss ${m.loss.toFixed(4)} · ${formatCount(Math.round((m.tokens * 1000) / m.ms))} ` +
          `tokens/s · ${(m.ms / 1000).toFixed(2)} s/step · grad-norm ${m.gradNorm.toFixed(3)} · GPU peak ${formatBytes(m.peakBytes)}`;
      view.showSummary(run.summary);
      saliencyBox.hidden = run.saliency.length === 0;
      const keep = salRecord.value;
      salRecord.replaceChildren(...run.saliency.map((e) => h('option', { value: e.id }, `#${e.index} ${e.polarity}`)));
      if (run.saliency.some((e) => e.id === keep)) salRecord.value = keep;
      showEntry();
    },
    showSummary(s) {
      summaryLine.hidden = !s;
      const warn = s ? towardsWarning(s) : null;
      warning.hidden = !warn;
      warningText.textContent = warn ?? '';
      if (!s) return;
      summaryLine.textContent =
        `Saliency before training: ${s.positives} positive and ${s.negatives} negative records; ${s.negativesWithoutUnlikely} negatives have no unlikely token` +
        ` (${s.negativesWithoutSaliency === 'skip' ? 'skipped' : s.negativesRule === 'anchor' ? 'anchored: they train their standard answer' : "trained towards their response, the authors' rule"}); ${s.sixPercentRule} hit the 6% rule.`;
    },
    showAdapter(files) {
      for (const a of exportBox.querySelectorAll('a')) URL.revokeObjectURL(a.href);
      exportBox.hidden = !files;
      if (!files) return exportBox.replaceChildren();
      const gguf = files[GGUF_ADAPTER_FILE];
      exportBox.replaceChildren(
        h(
          'p',
          { class: 'actions' },
          h('strong', {}, 'Adapter (PEFT):'),
          fileLink(ADAPTER_CONFIG_FILE, files[ADAPTER_CONFIG_FILE], 'export-config'),
          fileLink(ADAPTER_WEIGHTS_FILE, files[ADAPTER_WEIGHTS_FILE], 'export-weights'),
          h('span', { class: 'hint' }, 'Put both in one folder; PEFT loads it with PeftModel.from_pretrained.'),
        ),
        ...(gguf ? ggufDownload(gguf, files[ADAPTER_CONFIG_FILE]) : []),
      );
    },
  };
  return view;
}
