/**
 * The Train panel: fine-tunes LoRA adapters on the loaded model in the worker (NLFT or SFT) with
 * the settings of train-form.ts, with pause and stop, a progress bar and the run's results
 * (run-view.ts). The run is kept by the run store (src/storage/runs.ts) from the moment the worker
 * starts it: its record after every step, its data and latest checkpoint apart, so a reload shows
 * it again (and the Library lists it with every earlier run) and a run stopped or interrupted by a
 * reload continues from its checkpoint. A run the worker refuses (bad data, a bad option, over the
 * memory budget) is not stored, and the worker's message is shown. A write the browser refuses (a
 * full quota) loses nothing: the run stays on the page, its message says what to delete, and the
 * run is written again at its next step or with "Save the run". A run whose GPU device was lost
 * is kept as stopped, with its checkpoint, and the page is told (`onDeviceLost`) so that it can
 * get a new device and continue it (`continueRun`).
 */
import { NlftError } from '../../errors.ts';
import { addStep, continueStep, newRun, type RunStore, type StoredRun } from '../../storage/runs.ts';
import type { ModelSpec, TrainEvent } from '../../../workers/protocol.ts';
import type { TrainRequest } from '../../session/requests.ts';
import { errorLine, h, panel } from '../dom.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';
import { createRunView } from './run-view.ts';
import type { ExplorerSettings } from './explorer-panel.ts';
import { createTrainForm, MAX_LEN, type TrainForm } from './train-form.ts';

export interface TrainPanelOptions {
  trainer: TrainerClient;
  runs: RunStore;
  /** Called with true while a run holds the worker (other GPU actions wait), false after. */
  onBusyChange(busy: boolean): void;
  /** A run was stored as the worker started it (`training` true), or it ended (false). */
  onRunChange(run: StoredRun, training: boolean): void;
  /** Called when the data a run would train on changes. */
  onDataChange?(): void;
  /**
   * The GPU device was lost during a run: `message` says at which step and which checkpoint it
   * keeps; `canContinue` whether the run can go on from it (`continueRun`).
   */
  onDeviceLost?(message: string, canContinue: boolean): void;
}

export interface TrainPanelView {
  el: HTMLElement;
  /** Shows the last stored run, if any (call once at start). */
  restore(): Promise<void>;
  /** Enables training when a model is ready. */
  setModelReady(ready: boolean): void;
  /** The data, templates and sequence length the saliency explorer scores (the form's). */
  scoringInput(): ReturnType<TrainForm['readScoringInput']>;
  /** Takes the saliency explorer's settings into the form (and its scorer's files for the next run) and scrolls to it. */
  useExplorerSettings(settings: ExplorerSettings): void;
  /** The data a run would train on now (the form's). */
  dataInUse: TrainForm['readData'];
  /** Follows a newly loaded model's sample, learning rate and templates (the form's `useModel`). */
  useModel: TrainForm['useModel'];
  /** Trains on `data` next (see `TrainForm.useData`). */
  useData: TrainForm['useData'];
  /** Continues the shown run from its checkpoint ("Continue from step N"), when it can. */
  continueRun(): Promise<void>;
}

/** The status line's text for how a run ended. */
const ENDED = { done: 'Done', cancelled: 'Stopped', 'non-finite': 'Stopped: the loss or gradient was not finite' } as const;

export function createTrainPanel(opts: TrainPanelOptions): TrainPanelView {
  const { el, body } = panel('Train', 'train-panel');
  const form = createTrainForm({ onDataChange: () => opts.onDataChange?.() });
  const results = createRunView({ onUseAnchor: () => form.useAnchoredNegatives() });
  const start = h('button', { type: 'button', class: 'primary', testid: 'train-start', disabled: true }, 'Train');
  const pause = h('button', { type: 'button', testid: 'train-pause', disabled: true }, 'Pause');
  const stop = h('button', { type: 'button', testid: 'train-stop', disabled: true }, 'Stop');
  const cont = h('button', { type: 'button', testid: 'train-continue', hidden: true }, 'Continue');
  const saveAgain = h('button', { type: 'button', testid: 'train-save', hidden: true }, 'Save the run');
  const progress = h('progress', { testid: 'train-progress', max: 1, value: 0, hidden: true });
  const status = h('p', { class: 'status', testid: 'train-status', 'data-state': 'idle' }, 'Pick the data and settings, then Train.');
  const error = errorLine('train-error');
  body.append(...form.els, h('div', { class: 'actions' }, start, pause, stop, cont, saveAgain), progress, status, error.el, ...results.els);

  let modelReady = false;
  let running = false;
  let paused = false;
  /** The run stored last (a new run replaces it once the worker has started it). */
  let run: StoredRun | null = null;
  /** The files of the scorer the explorer handed over (the worker loads it for a run that names it). */
  let scorerSpec: ModelSpec | null = null;

  const updateButtons = () => {
    start.disabled = !modelReady || running;
    const step = run && continueStep(run);
    cont.hidden = step === null || running;
    cont.disabled = !modelReady || running;
    if (step !== null) cont.textContent = `Continue from step ${step}`;
    pause.disabled = !running;
    stop.disabled = !running;
    pause.textContent = paused ? 'Resume' : 'Pause';
    form.setDisabled(running);
  };
  const setStatus = (state: string, text: string) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  const setRunning = (on: boolean) => {
    running = on;
    paused = false;
    updateButtons();
    opts.onBusyChange(on);
  };
  /** The write to try again with "Save the run" after the browser refused one, or null. */
  let retry: (() => void) | null = null;
  /**
   * Shows a refused write of `what` (a full quota's message says itself what to delete) and offers
   * `again`; with null, a write went through: the offer and its message go.
   */
  const storeFailed = (what: string, again: () => void) => (e: unknown) => {
    retry = again;
    saveAgain.hidden = false;
    const quota = e instanceof NlftError && e.code === 'storage-quota';
    error.show(quota ? errorMessage(e) : `${what} could not be saved in this browser: ${errorMessage(e)}`);
  };
  const storeWorked = () => {
    if (retry === null) return;
    retry = null;
    saveAgain.hidden = true;
    error.show(null);
  };
  saveAgain.addEventListener('click', () => retry?.());

  /**
   * Runs `req` in the worker as `target`: a new run (then `dataset` holds a copy of its data, stored
   * with it once the worker starts it) or the stored run continued (`dataset` null).
   */
  const runInWorker = async (req: TrainRequest, target: StoredRun, dataset: Uint8Array | null) => {
    /** Whether the run is to be stored (the worker started it; a continued run is stored already). */
    let stored = dataset === null;
    /** The dataset still to be written with the record (one write), until such a write went through. */
    let withData = dataset;
    const save = async (): Promise<void> => {
      if (!stored) return;
      const write = withData ? opts.runs.start(target, withData) : opts.runs.save(target);
      await write.then(
        () => {
          withData = null;
          storeWorked();
        },
        storeFailed(withData ? 'The run (it cannot continue after a reload)' : 'The run', () => void save()),
      );
    };
    const onEvent = (ev: TrainEvent) => {
      if (ev.type === 'scoring') {
        progress.value = 0;
        setStatus('scoring', `Scoring the records under the three views: ${ev.done}/${ev.total}…`);
      } else if (ev.type === 'started') {
        target.totalSteps = ev.totalSteps;
        target.model = ev.model;
        if (ev.fromStep === 0) target.summary = ev.summary;
        results.showSummary(target.summary);
        if (dataset && !stored) {
          stored = true;
          run = target;
          void save().then(() => opts.onRunChange(target, true));
        }
        const cut = ev.truncated ? ` (${ev.truncated} truncated to ${MAX_LEN} tokens)` : '';
        setStatus('training', `Training: ${ev.records} records${cut}, ${ev.totalSteps} steps…`);
      } else if (ev.type === 'checkpoint') {
        opts.runs.saveCheckpoint(target, ev.step, ev.bytes).then(
          () => {
            storeWorked();
            updateButtons(); // the step to continue from, once its checkpoint is stored
          },
          storeFailed('The checkpoint', () => void save()),
        );
      } else if (ev.type === 'paused') {
        if (paused) setStatus('paused', `Paused after step ${ev.step} of ${target.totalSteps}.`);
      } else {
        addStep(target, ev.metrics, ev.entries);
        progress.value = ev.metrics.step / ev.metrics.totalSteps;
        results.show(target);
        if (!paused) setStatus('training', `Training: step ${ev.metrics.step} of ${ev.metrics.totalSteps}…`);
        void save();
      }
    };

    progress.hidden = false;
    progress.value = 0;
    results.show(target);
    results.showAdapter(null);
    void save();
    try {
      const out = await opts.trainer.train(req, onEvent, req.scorer ? scorerSpec : null);
      target.status = out.status;
      target.message = out.message;
      if (out.steps > 0) target.adapter = await opts.trainer.exportAdapter();
      results.showAdapter(target.adapter);
      const scores = out.steps > 0 ? ' The playground now scores with the trained adapter.' : '';
      setStatus(out.status, `${ENDED[out.status]} after ${out.steps} of ${out.totalSteps} steps.${scores}`);
      if (out.message) error.show(out.message);
    } catch (e) {
      const lost = stored && e instanceof Error && e.name === 'device-lost';
      target.status = lost ? 'cancelled' : 'error'; // a lost device stops the run; its checkpoint stays
      target.message = errorMessage(e);
      if (lost) setStatus('device-lost', `Stopped after ${target.metrics.length} of ${target.totalSteps} steps: the GPU device was lost.`);
      else setStatus('error', stored ? 'Training failed.' : 'The worker refused this run; nothing was stored.');
      error.show(target.message);
      if (lost) opts.onDeviceLost?.(target.message, continueStep(target) !== null);
      if (!stored && run) {
        results.show(run); // the stored run, unchanged
        results.showAdapter(run.adapter);
      }
    } finally {
      progress.hidden = true;
      setRunning(false);
      await save();
      if (stored) opts.onRunChange(target, false);
    }
  };

  start.addEventListener('click', async () => {
    error.show(null);
    setRunning(true); // at once: no second click while the data loads
    setStatus('starting', 'Loading the data…');
    let req: TrainRequest;
    try {
      req = await form.read();
    } catch (e) {
      setStatus('error', 'The settings or the data could not be read.');
      error.show(errorMessage(e));
      setRunning(false);
      return;
    }
    await runInWorker(req, newRun(req), req.data.bytes.slice()); // the request's bytes move to the worker
  });
  const continueRun = async () => {
    const r = run;
    const step = r && continueStep(r);
    if (!r || step === null) return;
    error.show(null);
    setRunning(true);
    setStatus('starting', `Continuing from step ${step}…`);
    let req: TrainRequest;
    try {
      req = await opts.runs.resumeRequest(r);
    } catch (e) {
      setStatus('error', 'This run cannot continue.');
      error.show(errorMessage(e));
      setRunning(false);
      return;
    }
    r.status = 'running';
    r.message = null;
    r.metrics = r.metrics.filter((m) => m.step <= step); // later steps are trained again
    await runInWorker(req, r, null);
  };
  cont.addEventListener('click', continueRun);
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

  return {
    el,
    async restore() {
      let last: StoredRun | undefined;
      try {
        last = await opts.runs.last();
      } catch (e) {
        setStatus('error', 'The last run stored in this browser could not be opened.');
        error.show(errorMessage(e));
        return;
      }
      if (!last) return;
      run = last;
      const s = last.request;
      form.fill(s);
      results.show(last);
      results.showAdapter(last.adapter);
      const steps = `${last.metrics.length} of ${last.totalSteps} steps`;
      if (last.status === 'running') {
        last.status = 'cancelled';
        const ck =
          last.checkpointStep !== null
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
    scoringInput: () => form.readScoringInput(),
    dataInUse: () => form.readData(),
    useModel: (samples, templates, problem) => form.useModel(samples, templates, problem),
    useData: (data) => form.useData(data),
    continueRun,
    useExplorerSettings(settings) {
      form.useExplorerSettings(settings.saliency, settings.templates, settings.scorer?.name ?? null);
      scorerSpec = settings.scorer?.spec ?? null;
      el.scrollIntoView({ behavior: 'smooth', block: 'start' });
    },
  };
}
