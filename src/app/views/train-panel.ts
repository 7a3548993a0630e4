/**
 * The Train panel: fine-tunes LoRA adapters on the loaded model in the worker (NLFT or SFT) on the
 * bundled NLFT sample or a dropped JSON/JSONL file, with every NLFT option and the views' prompt
 * texts editable (nlft-options.ts), pause and stop, a progress bar, per-step
 * loss, speed and GPU memory, the loss chart, the saliency map of every visited record, and the
 * adapter's two PEFT files to download. The run (settings, metrics, saliency, adapter) is saved
 * after every step, its data and latest checkpoint apart (they are large and change rarely), so a
 * reload shows it again and a run stopped or interrupted by a reload continues from its checkpoint.
 */
import { formatBytes } from '../../engine/buffers.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, type PeftAdapterFiles } from '../../export/peft.ts';
import { DEFAULT_LORA } from '../../model/lora.ts';
import type { SaliencyEntry, SaliencySummary } from '../../nlft/method.ts';
import type { StoredRun, RunStore } from '../../storage/db.ts';
import type { TrainMethod } from '../../session/train.ts';
import { DEFAULT_TRAIN, type StepMetrics } from '../../train/trainer.ts';
import type { TrainEvent } from '../../../workers/protocol.ts';
import type { TrainRequest } from '../../session/requests.ts';
import { errorLine, formatCount, h, panel } from '../dom.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';
import { createLossChart } from './loss-chart.ts';
import { createNlftOptionsForm } from './nlft-options.ts';
import { describeEntry, renderSaliency, renderSaliencyLegend } from './saliency-map.ts';

/** The bundled NLFT records (written for this app; see public/samples/SOURCE.md). */
const SAMPLE_PATH = 'samples/nlft-sample.json';
const SAMPLE_LABEL = 'nlft-sample.json (sample: 6 records, 3 wrong with judgments)';
const MAX_LEN = 512;

export interface TrainPanelOptions {
  trainer: TrainerClient;
  runs: RunStore;
  /** Called with true while a run holds the worker (other GPU actions wait), false after. */
  onBusyChange(busy: boolean): void;
}

export interface TrainPanelView {
  el: HTMLElement;
  /** Shows the last stored run, if any (call once at start). */
  restore(): Promise<void>;
  /** Enables training when a model is ready. */
  setModelReady(ready: boolean): void;
}

/** A labelled number field. */
function numberField(id: string, label: string, value: number, attrs: { min?: number; max?: number; step?: string }) {
  const input = h('input', { type: 'number', id, testid: id, value, min: attrs.min, max: attrs.max, step: attrs.step ?? 'any' });
  return { input, el: h('label', { class: 'setting', for: id }, h('span', {}, label), input) };
}

/** A download link for one file of the adapter. */
function fileLink(name: string, content: string | Uint8Array, testid: string): HTMLAnchorElement {
  const blob = new Blob([content as BlobPart], { type: name.endsWith('.json') ? 'application/json' : 'application/octet-stream' });
  return h('a', { href: URL.createObjectURL(blob), download: name, testid, class: 'download' }, `${name} (${formatBytes(blob.size)})`);
}

export function createTrainPanel(opts: TrainPanelOptions): TrainPanelView {
  const { el, body } = panel('Train', 'train-panel');
  const method = h(
    'select',
    { id: 'train-method', testid: 'train-method' },
    h('option', { value: 'nlft' }, 'NLFT (saliency-weighted)'),
    h('option', { value: 'sft' }, 'SFT on the standard answers'),
  );
  const epochs = numberField('train-epochs', 'Epochs', DEFAULT_TRAIN.epochs, { min: 0.01, step: 'any' });
  const lr = numberField('train-lr', 'Learning rate', DEFAULT_TRAIN.lr, { min: 0 });
  const batch = numberField('train-batch', 'Batch', DEFAULT_TRAIN.batch, { min: 1, step: '1' });
  const rank = numberField('train-rank', 'LoRA rank', DEFAULT_LORA.r, { min: 1, step: '1' });
  const seed = numberField('train-seed', 'Seed', DEFAULT_TRAIN.seed, { min: 0, step: '1' });
  const file = h('input', { type: 'file', id: 'train-file', testid: 'train-file', accept: '.json,.jsonl,application/json' });
  const dataName = h('span', { class: 'hint', testid: 'train-data' }, SAMPLE_LABEL);
  const useSample = h('button', { type: 'button', class: 'link', hidden: true }, 'use the sample');
  const start = h('button', { type: 'button', class: 'primary', testid: 'train-start', disabled: true }, 'Train');
  const pause = h('button', { type: 'button', testid: 'train-pause', disabled: true }, 'Pause');
  const stop = h('button', { type: 'button', testid: 'train-stop', disabled: true }, 'Stop');
  const cont = h('button', { type: 'button', testid: 'train-continue', hidden: true }, 'Continue');
  const progress = h('progress', { testid: 'train-progress', max: 1, value: 0, hidden: true });
  const status = h('p', { class: 'status', testid: 'train-status', 'data-state': 'idle' }, 'Pick the data and settings, then Train.');
  const stats = h('p', { class: 'summary', testid: 'train-stats', hidden: true });
  const summaryLine = h('p', { class: 'hint', testid: 'train-summary', hidden: true });
  const error = errorLine('train-error');
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
  const exportBox = h('p', { class: 'actions', testid: 'train-export', hidden: true });
  const nlftForm = createNlftOptionsForm();

  body.append(
    h(
      'div',
      { class: 'actions' },
      h('span', { class: 'field' }, 'Data'),
      dataName,
      useSample,
      h('label', { class: 'file', for: 'train-file' }, 'Choose a JSON/JSONL file…', file),
    ),
    h(
      'div',
      { class: 'settings' },
      h('label', { class: 'setting', for: 'train-method' }, h('span', {}, 'Method'), method),
      epochs.el,
      lr.el,
      batch.el,
      rank.el,
      seed.el,
    ),
    nlftForm.el,
    h('div', { class: 'actions' }, start, pause, stop, cont),
    progress,
    status,
    error.el,
    stats,
    summaryLine,
    chart.el,
    saliencyBox,
    exportBox,
  );

  let modelReady = false;
  let running = false;
  let paused = false;
  let picked: File | null = null;
  let run: StoredRun | null = null;
  const saliency = new Map<string, SaliencyEntry>();

  const updateButtons = () => {
    start.disabled = !modelReady || running;
    const ck = run?.checkpointStep ?? null;
    cont.hidden = !(run && ck !== null && run.model && ck < run.totalSteps && run.status !== 'done');
    cont.disabled = !modelReady || running;
    if (ck !== null) cont.textContent = `Continue from step ${ck}`;
    pause.disabled = !running;
    stop.disabled = !running;
    pause.textContent = paused ? 'Resume' : 'Pause';
    for (const f of [method, epochs.input, lr.input, batch.input, rank.input, seed.input, file]) f.disabled = running;
    nlftForm.setDisabled(running);
  };
  const setStatus = (state: string, text: string) => {
    status.dataset.state = state;
    status.textContent = text;
  };

  const showSummary = (s: SaliencySummary | null) => {
    summaryLine.hidden = !s;
    if (!s) return;
    summaryLine.textContent =
      `Saliency before training: ${s.positives} positive and ${s.negatives} negative records; ${s.negativesWithoutUnlikely} negatives have no unlikely token` +
      ` (${s.negativesWithoutSaliency === 'train' ? "trained towards their response, the authors' rule" : 'skipped'}); ${s.sixPercentRule} hit the 6% rule.`;
  };
  const showSaliency = () => {
    saliencyBox.hidden = saliency.size === 0;
    const keep = salRecord.value;
    salRecord.replaceChildren(...[...saliency.values()].map((e) => h('option', { value: e.id }, `#${e.index} ${e.polarity}`)));
    if (keep && saliency.has(keep)) salRecord.value = keep;
    const e = saliency.get(salRecord.value);
    if (!e) return;
    salLine.textContent = describeEntry(e);
    salBody.replaceChildren(renderSaliency(e));
  };
  salRecord.addEventListener('change', showSaliency);
  const showStats = (m: StepMetrics) => {
    stats.hidden = false;
    stats.textContent = `Step ${m.step}/${m.totalSteps} · epoch ${m.epoch + 1} · loss ${m.loss.toFixed(4)} · ${formatCount(Math.round((m.tokens * 1000) / m.ms))} tokens/s · ${(m.ms / 1000).toFixed(2)} s/step · grad-norm ${m.gradNorm.toFixed(3)} · GPU peak ${formatBytes(m.peakBytes)}`;
  };
  const showAdapter = (files: PeftAdapterFiles | null) => {
    exportBox.hidden = !files;
    if (!files) return;
    for (const a of exportBox.querySelectorAll('a')) URL.revokeObjectURL(a.href);
    exportBox.replaceChildren(
      h('strong', {}, 'Adapter (PEFT):'),
      fileLink(ADAPTER_CONFIG_FILE, files[ADAPTER_CONFIG_FILE], 'export-config'),
      fileLink(ADAPTER_WEIGHTS_FILE, files[ADAPTER_WEIGHTS_FILE], 'export-weights'),
      h('span', { class: 'hint' }, 'Put both in one folder; PEFT loads it with PeftModel.from_pretrained.'),
    );
  };
  const showRun = (r: StoredRun) => {
    saliency.clear();
    for (const e of r.saliency) saliency.set(e.id, e);
    chart.render(r.metrics, r.totalSteps);
    const last = r.metrics.at(-1);
    if (last) showStats(last);
    showSummary(r.summary);
    showSaliency();
    showAdapter(r.adapter);
  };
  const save = () => {
    if (!run) return;
    opts.runs.save(run).catch((e: unknown) => error.show(`The run could not be saved in this browser: ${errorMessage(e)}`));
  };

  /** The request from the form; a bad field is named in the error. */
  const request = async (): Promise<TrainRequest> => {
    const num = (f: { input: HTMLInputElement }, name: string, ok: (v: number) => boolean, expected: string) => {
      const v = Number(f.input.value);
      if (f.input.value.trim() === '' || !Number.isFinite(v) || !ok(v))
        throw new Error(`${name} must be ${expected} (got "${f.input.value}")`);
      return v;
    };
    const int = (v: number) => Number.isInteger(v) && v > 0;
    const train = {
      ...DEFAULT_TRAIN,
      epochs: num(epochs, 'Epochs', (v) => v > 0, 'a positive number'),
      lr: num(lr, 'Learning rate', (v) => v > 0, 'a positive number'),
      batch: num(batch, 'Batch', int, 'a positive integer'),
      seed: num(seed, 'Seed', (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer'),
    };
    const r = num(rank, 'LoRA rank', int, 'a positive integer');
    let data: TrainRequest['data'];
    if (picked) {
      data = { name: picked.name, bytes: new Uint8Array(await picked.arrayBuffer()) };
    } else {
      const res = await fetch(`${import.meta.env.BASE_URL}${SAMPLE_PATH}`);
      if (!res.ok) throw new Error(`Could not load the sample data (${SAMPLE_PATH}): HTTP ${res.status}`);
      data = { name: SAMPLE_PATH.split('/')[1], bytes: new Uint8Array(await res.arrayBuffer()) };
    }
    const { saliency: sal, templates } = nlftForm.read();
    return {
      method: method.value as TrainMethod,
      train,
      lora: { ...DEFAULT_LORA, targets: [...DEFAULT_LORA.targets], r, alpha: r },
      maxLen: MAX_LEN,
      saliency: sal,
      templates,
      data,
    };
  };

  const onEvent = (ev: TrainEvent) => {
    if (!run) return;
    if (ev.type === 'scoring') {
      progress.value = 0;
      setStatus('scoring', `Scoring the records under the three views: ${ev.done}/${ev.total}…`);
    } else if (ev.type === 'started') {
      run.totalSteps = ev.totalSteps;
      run.model = ev.model;
      if (ev.fromStep === 0) run.summary = ev.summary;
      showSummary(run.summary);
      setStatus(
        'training',
        `Training: ${ev.records} records${ev.truncated ? ` (${ev.truncated} truncated to ${MAX_LEN} tokens)` : ''}, ${ev.totalSteps} steps…`,
      );
    } else if (ev.type === 'checkpoint') {
      const r = run;
      // The record names the checkpoint only once its bytes are stored.
      opts.runs.saveBlob('checkpoint', ev.bytes).then(
        () => {
          r.checkpointStep = ev.step;
          save();
        },
        (e: unknown) => error.show(`The checkpoint could not be saved in this browser: ${errorMessage(e)}`),
      );
    } else if (ev.type === 'paused') {
      if (paused) setStatus('paused', `Paused after step ${ev.step} of ${run.totalSteps}.`);
    } else {
      run.metrics.push(ev.metrics);
      for (const e of ev.entries) saliency.set(e.id, e);
      run.saliency = [...saliency.values()];
      progress.value = ev.metrics.step / ev.metrics.totalSteps;
      chart.render(run.metrics, run.totalSteps);
      showStats(ev.metrics);
      showSaliency();
      if (!paused) setStatus('training', `Training: step ${ev.metrics.step} of ${ev.metrics.totalSteps}…`);
      save();
    }
  };

  const setRunning = (on: boolean) => {
    running = on;
    paused = false;
    updateButtons();
    opts.onBusyChange(on);
  };
  /** Runs `req` in the worker (a new run, or `run` continued from its checkpoint) and records how it ends. */
  const runInWorker = async (req: TrainRequest) => {
    progress.hidden = false;
    progress.value = 0;
    showAdapter(null);
    showRun(run!);
    save();
    try {
      const out = await opts.trainer.train(req, onEvent);
      run!.status = out.status;
      run!.message = out.message;
      if (out.steps > 0) run!.adapter = await opts.trainer.exportAdapter();
      showAdapter(run!.adapter);
      const what = { done: 'Done', cancelled: 'Stopped', 'non-finite': 'Stopped: the loss or gradient was not finite' }[out.status];
      setStatus(
        out.status,
        `${what} after ${out.steps} of ${out.totalSteps} steps.${out.steps > 0 ? ' The playground now scores with the trained adapter.' : ''}`,
      );
      if (out.message) error.show(out.message);
    } catch (e) {
      run!.status = 'error';
      run!.message = errorMessage(e);
      setStatus('error', 'Training failed.');
      error.show(run!.message);
    } finally {
      progress.hidden = true;
      setRunning(false);
      save();
    }
  };
  start.addEventListener('click', async () => {
    error.show(null);
    setRunning(true); // at once: no second click while the data loads
    setStatus('starting', 'Loading the data…');
    let req: TrainRequest;
    try {
      req = await request();
    } catch (e) {
      setStatus('error', 'The data could not be read.');
      error.show(errorMessage(e));
      setRunning(false);
      return;
    }
    saliency.clear();
    const { data, ...settings } = req;
    run = {
      request: { ...settings, data: { name: data.name, bytes: data.bytes.byteLength } },
      startedAt: new Date().toISOString(),
      status: 'running',
      message: null,
      totalSteps: 0,
      metrics: [],
      saliency: [],
      summary: null,
      adapter: null,
      model: null,
      checkpointStep: null,
    };
    try {
      await opts.runs.saveBlob('dataset', data.bytes.slice()); // the request's bytes move to the worker
    } catch (e) {
      error.show(`The data could not be saved in this browser (the run cannot continue after a reload): ${errorMessage(e)}`);
    }
    await runInWorker(req);
  });
  cont.addEventListener('click', async () => {
    const r = run;
    const step = r?.checkpointStep;
    if (!r || step === null || step === undefined || !r.model) return;
    error.show(null);
    setRunning(true);
    setStatus('starting', `Continuing from step ${step}…`);
    const [dataset, checkpoint] = await Promise.all([opts.runs.blob('dataset'), opts.runs.blob('checkpoint')]).catch(() => [
      undefined,
      undefined,
    ]);
    if (!dataset || !checkpoint) {
      setStatus('error', 'This run cannot continue.');
      error.show(`The ${dataset ? 'checkpoint' : 'data'} of this run is no longer stored in this browser; start a new run.`);
      setRunning(false);
      return;
    }
    r.status = 'running';
    r.message = null;
    r.metrics = r.metrics.filter((m) => m.step <= step); // later steps are trained again
    const { data, ...settings } = r.request;
    await runInWorker({ ...settings, data: { name: data.name, bytes: dataset }, resume: { checkpoint, model: r.model } });
  });
  pause.addEventListener('click', () => {
    paused = !paused;
    updateButtons();
    void opts.trainer.setPaused(paused);
    setStatus(paused ? 'pausing' : 'training', paused ? 'Pausing after the current step…' : 'Training…');
  });
  stop.addEventListener('click', () => {
    stop.disabled = true;
    void opts.trainer.stopTraining();
    setStatus('stopping', 'Stopping after the current step…');
  });
  file.addEventListener('change', () => {
    picked = file.files?.[0] ?? null;
    if (!picked) return;
    dataName.textContent = `${picked.name} (${formatBytes(picked.size)})`;
    useSample.hidden = false;
  });
  useSample.addEventListener('click', () => {
    picked = null;
    file.value = '';
    dataName.textContent = SAMPLE_LABEL;
    useSample.hidden = true;
  });

  return {
    el,
    async restore() {
      const last = await opts.runs.last().catch(() => undefined);
      if (!last) return;
      run = last;
      const s = last.request;
      method.value = s.method;
      epochs.input.value = String(s.train.epochs);
      lr.input.value = String(s.train.lr);
      batch.input.value = String(s.train.batch);
      rank.input.value = String(s.lora.r);
      seed.input.value = String(s.train.seed);
      if (s.saliency && s.templates) nlftForm.fill(s.saliency, s.templates); // runs stored before these were kept have none
      showRun(last);
      const steps = `${last.metrics.length} of ${last.totalSteps} steps`;
      if (last.status === 'running') {
        last.status = 'cancelled';
        const ck =
          last.checkpointStep !== null && last.checkpointStep !== undefined
            ? `; it can continue from its checkpoint at step ${last.checkpointStep}`
            : '; it left no checkpoint to continue from';
        setStatus('interrupted', `The last run (${s.method}, ${s.data.name}) was interrupted by a reload after ${steps}${ck}.`);
      } else
        setStatus(
          last.status,
          `Last run (${s.method}, ${s.data.name}, ${new Date(last.startedAt).toLocaleString()}): ${last.status} after ${steps}.`,
        );
      if (last.message && last.status !== 'done') error.show(last.message);
      updateButtons();
    },
    setModelReady(ready) {
      modelReady = ready;
      updateButtons();
    },
  };
}
