/**
 * NLFT Studio, main thread: builds the page, starts the trainer worker (which owns the GPU), and
 * wires the panels together. No GPU work runs here.
 */
import './style.css';
import {
  memoryDatasetStore,
  memoryEvalHistory,
  memoryExplorerStore,
  memoryRunStore,
  memorySettingsStore,
  openDatasetStore,
  openEvalHistory,
  openExplorerStore,
  openRunStore,
  openSettingsStore,
  openStorageUsage,
  type EvalHistory,
  type PlaygroundDraft,
  type Settings,
  type SettingsStore,
} from '../storage/db.ts';
import { h } from './dom.ts';
import { errorMessage, TrainerClient } from './trainer-client.ts';
import { createDataPanel } from './views/data-panel.ts';
import { createHeader } from './views/header.ts';
import { createModelPanel, samplesFor, specOf } from './views/model-panel.ts';
import { createPlaygroundPanel } from './views/playground-panel.ts';
import { createPreparePanel } from './views/prepare-panel.ts';
import { createCompareView } from './views/compare-view.ts';
import { createEvalPanel } from './views/eval-panel.ts';
import { createExplorerPanel } from './views/explorer-panel.ts';
import { attributeEvaluation, createLibraryView } from './views/library-view.ts';
import { createStorageView } from './views/storage-view.ts';
import { createTrainPanel } from './views/train-panel.ts';
import type { LibraryItem } from '../storage/runs.ts';
import { MAX_LEN } from './views/train-form.ts';

const EMPTY_DRAFT: PlaygroundDraft = { prompt: '', response: '', chat: true };

/** The settings store, or an in-memory one (with a warning) when IndexedDB cannot be opened. */
async function openStore(warn: (message: string) => void): Promise<SettingsStore> {
  try {
    return await openSettingsStore();
  } catch (e) {
    warn(`Your edits will not be kept across reloads: the browser refused IndexedDB (${errorMessage(e)}).`);
    return memorySettingsStore();
  }
}

async function main(root: HTMLElement): Promise<void> {
  const header = createHeader();
  const store = await openStore(header.showBanner);
  const [modelChoice, quant, draft, picked, evalDraft, compareSelection, judge] = await Promise.all([
    store.get('model'),
    store.get('quant'),
    store.get('playground'),
    store.get('pickedRecord'),
    store.get('evalDraft'),
    store.get('compareView'),
    store.get('judge'),
  ]);

  /** Stores a setting; a failure shows in the banner (the app goes on). */
  const remember = <K extends keyof Settings>(key: K, value: Settings[K]) =>
    store.set(key, value).catch((e: unknown) => header.showBanner(`A setting could not be saved: ${errorMessage(e)}`));
  const trainer = new TrainerClient((message) => stop(message));
  const playground = createPlaygroundPanel({
    trainer,
    draft: draft ?? EMPTY_DRAFT,
    onDraftChange: (d) => store.set('playground', d),
    onScored: () => void model.refreshMemory(),
  });
  const firstModel = modelChoice ?? { kind: 'demo' };
  const model = createModelPanel({
    trainer,
    model: firstModel,
    quant: quant ?? 'q8',
    onModelChange(m) {
      if (m.kind === 'hub') void storage.askPersistence(); // before a large download
      void remember('model', m);
    },
    onQuantChange: (q) => void remember('quant', q),
    onReadyChange(ready) {
      modelLoaded = ready;
      if (!ready) useLibraryAdapter(null); // a model load drops the adapter
      syncReady();
    },
    onModelLoaded(info, samples) {
      train.useModel(samples, info.templates, info.templatesProblem);
      evaluation.useSamples(samples, info.templates?.baseSystem);
      playground.useModelSystem(info.templates?.baseSystem);
      prepare.useModel(samples, info.templates?.baseSystem);
      void data.measure();
    },
  });
  const runs = await openRunStore().catch((e: unknown) => {
    header.showBanner(`Training runs will not be kept across reloads: the browser refused IndexedDB (${errorMessage(e)}).`);
    return memoryRunStore();
  });
  const storedEvals = await openEvalHistory().catch(() => memoryEvalHistory());
  /** The library entry whose adapter is on the model (an imported one names the evaluations made with it). */
  let inUse: LibraryItem | null = null;
  const evalHistory: EvalHistory = { list: () => storedEvals.list(), add: (o) => storedEvals.add(attributeEvaluation(o, inUse)) };
  let modelLoaded = false;
  let training = false;
  let evaluating = false;
  let scoring = false;
  let loadingAdapter = false;
  let preparing = false;
  /** While the GPU device is lost (until a new one): whether a run said so (its message says more than the worker's). */
  let lost: { byRun: boolean } | null = null;
  const syncReady = () => {
    const modelReady = modelLoaded && lost === null;
    const busy = training || evaluating || scoring || loadingAdapter || preparing;
    playground.setModelReady(modelReady && !busy);
    train.setModelReady(modelReady && !evaluating && !scoring && !loadingAdapter && !preparing);
    evaluation.setModelReady(modelReady && !training && !scoring && !loadingAdapter && !preparing);
    explorer.setModelReady(modelReady && !training && !evaluating && !loadingAdapter && !preparing);
    prepare.setModelReady(modelReady && !training && !evaluating && !scoring && !loadingAdapter);
    library.setModelReady(modelReady && !busy);
    model.setLocked(busy);
  };
  /** Names the entry whose adapter is on the model; the Evaluate panel labels its results with a run's. */
  const useLibraryAdapter = (item: LibraryItem | null) => {
    inUse = item;
    library.setInUse(item?.id ?? null);
    if (item) evaluation.setTrainedRun(item.kind === 'run' ? item.run : undefined);
  };
  const library = createLibraryView({
    runs,
    trainer,
    onAdapterChange: useLibraryAdapter,
    onBusyChange(busy) {
      loadingAdapter = busy;
      syncReady();
    },
    onChange: () => void storage.refresh(),
  });
  const storage = createStorageView({
    usage: await openStorageUsage().catch(() => null),
    runs,
    onDelete(item) {
      void library.refresh();
      if (item.kind === 'prepared') void prepare.restore();
      if (item.kind === 'evaluations') void evaluation.restore();
    },
  });
  const compare = createCompareView({ selection: compareSelection, onSelectionChange: (s) => store.set('compareView', s) });
  const evaluation = createEvalPanel({
    trainer,
    history: evalHistory,
    draft: evalDraft,
    onDraftChange: (d) => store.set('evalDraft', d),
    onBusyChange(busy) {
      evaluating = busy;
      syncReady();
    },
    onHistoryChange(all) {
      compare.show(all);
      library.showEvaluations(all);
    },
  });
  const train = createTrainPanel({
    trainer,
    runs,
    onDataChange: () => void showDataInUse(),
    onBusyChange(busy) {
      training = busy;
      syncReady();
      if (!busy) void model.refreshMemory();
      if (!busy) void showTrainedSystem();
    },
    onDeviceLost: (message, canContinue) => deviceLost(message, { canContinue }),
    onRunChange(run, running) {
      library.setTraining(running ? run.startedAt : null);
      if (!running && run.adapter) useLibraryAdapter({ kind: 'run', id: run.startedAt, run });
      void library.refresh();
      void storage.refresh();
    },
  });
  const explorer = createExplorerPanel({
    trainer,
    store: await openExplorerStore().catch(() => memoryExplorerStore()),
    scoringInput: () => train.scoringInput(),
    onTrain: (settings) => train.useExplorerSettings(settings),
    onBusyChange(busy) {
      scoring = busy;
      syncReady();
    },
  });
  const prepare = createPreparePanel({
    trainer,
    datasets: await openDatasetStore().catch(() => memoryDatasetStore()),
    judge,
    onJudgeChange: (j) => store.set('judge', j),
    onBusyChange(busy) {
      preparing = busy;
      syncReady();
    },
    onTrain(file) {
      train.useData(file);
      train.el.scrollIntoView({ block: 'start' });
    },
    onChange: () => void storage.refresh(),
  });
  const data = createDataPanel({
    picked: picked ?? null,
    maxLen: MAX_LEN,
    summarize: (file, maxLen) => trainer.summarizeData(file, maxLen),
    onPick(record, index) {
      playground.fill(record.input, record.answer);
      void remember('pickedRecord', index);
    },
  });
  /**
   * The GPU device was lost (the worker says so; a run, where and what it keeps): the banner says
   * it and offers a new device, on which the model loads again and a run that kept a checkpoint
   * continues.
   */
  const deviceLost = (message: string, run: { canContinue: boolean } | null) => {
    if (lost?.byRun && !run) return;
    lost = { byRun: run !== null };
    syncReady();
    const label = run?.canContinue ? 'Continue on a new GPU device' : 'Load the model on a new GPU device';
    header.showBanner(run ? message : `${message}. The model is gone with it.`, { label, run: () => recover(run?.canContinue ?? false) });
  };
  const onDeviceLost = (message: string) => deviceLost(message, null);
  const recover = async (continueRun: boolean) => {
    try {
      header.setAdapter(await trainer.init(onDeviceLost));
    } catch (e) {
      header.showBanner(`No new GPU device: ${errorMessage(e)}. Reload the page to start again.`);
      return;
    }
    lost = null;
    header.hideBanner();
    await model.load();
    if (continueRun && modelLoaded) await train.continueRun();
  };
  /** A failure after which the GPU cannot be used: say so everywhere it matters. */
  const stop = (message: string) => {
    header.showBanner(message);
    model.disable('No model: the GPU is no longer available.');
  };

  root.replaceChildren(
    header.el,
    h(
      'main',
      { class: 'panels' },
      h('div', { class: 'column' }, model.el, evaluation.el, compare.el, data.el),
      h('div', { class: 'column' }, train.el, playground.el),
      h('div', { class: 'column wide' }, prepare.el, explorer.el, library.el, storage.el),
    ),
  );
  /** The Evaluate panel's default system text and adapter's run: the last run (stored). */
  const showTrainedSystem = async () => evaluation.setTrainedRun(await runs.last().catch(() => undefined));
  void train.restore();
  void explorer.restore();
  void prepare.restore();
  void evaluation.restore();
  void showTrainedSystem();
  void library.refresh();
  void storage.refresh();

  /** The Data panel shows what Train would train on now; a failure to fetch the sample shows there. */
  const showDataInUse = async () => {
    try {
      return await data.show(await train.dataInUse());
    } catch (e) {
      data.fail(errorMessage(e));
      return [];
    }
  };
  // The panels start from the samples of the model about to load (its templates come when it has loaded).
  evaluation.useSamples(samplesFor(specOf(firstModel)));
  train.useModel(samplesFor(specOf(firstModel)), null, null);
  void showDataInUse().then((records) => {
    if (!draft && records.length > 0) data.pick(0);
  });
  try {
    header.setAdapter(await trainer.init(onDeviceLost));
  } catch (e) {
    header.setNoAdapter(errorMessage(e));
    model.disable('No model: this page needs WebGPU to run the model.');
    return;
  }
  await model.load();
}

const root = document.getElementById('app');
if (root) {
  main(root).catch((e: unknown) => {
    root.replaceChildren(h('p', { class: 'error', role: 'alert' }, `NLFT Studio could not start: ${errorMessage(e)}`));
  });
}
