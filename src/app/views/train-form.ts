/**
 * The Train panel's settings: the data (the bundled NLFT sample or a picked JSON/JSONL file), the
 * method, the training and LoRA numbers, the memory budget, and the NLFT options and templates
 * (nlft-options.ts). The form only reads numbers as numbers; whether a value is allowed is the
 * worker's rule (the session layer's validation, the same as the CLI's), and its message is shown.
 */
import { formatBytes } from '../../engine/buffers.ts';
import { DEFAULT_LORA } from '../../model/lora.ts';
import type { SaliencyMode } from '../../session/options.ts';
import type { SaliencyOptions } from '../../nlft/saliency.ts';
import type { NlftTemplates } from '../../nlft/templates.ts';
import { DEFAULT_PRESET, NLFT_PRESETS, type NlftPreset, presetOf } from '../../session/presets.ts';
import type { DatasetFile, TrainRequest } from '../../session/requests.ts';
import type { TrainMethod } from '../../session/train.ts';
import type { StoredRun } from '../../storage/runs.ts';
import { DEFAULT_TRAIN } from '../../train/trainer.ts';
import { h } from '../dom.ts';
import { DEFAULT_TEMPLATES } from '../../nlft/templates.ts';
import { fetchSample, GENERAL_SAMPLES, type ModelSamples, readPickedFile, SAMPLES } from '../samples.ts';
import { createNlftOptionsForm } from './nlft-options.ts';

/** The app trains on sequences of at most this many tokens (prompt + response). */
export const MAX_LEN = 512;

export interface TrainForm {
  /** The data row, the settings grid and the NLFT options, in order. */
  els: HTMLElement[];
  /**
   * The request as the form holds it, with the data read.
   * @throws Error naming the field when a number field does not hold a number, or NlftError when the sample cannot be fetched
   */
  read(): Promise<TrainRequest>;
  /** Shows the settings of a stored run (its data is named; a picked file cannot be picked again for the user). */
  fill(request: StoredRun['request']): void;
  setDisabled(disabled: boolean): void;
  /** Sets the NLFT options to anchored negatives (docs/method.md §3) and shows them. */
  useAnchoredNegatives(): void;
  /**
   * The data, templates and sequence length as the form holds them (what the saliency explorer scores).
   * @throws NlftError when the sample cannot be fetched
   */
  readScoringInput(): Promise<{ data: DatasetFile; templates: NlftTemplates; maxLen: number }>;
  /**
   * Takes the saliency explorer's settings: NLFT with its constants and the templates it scored
   * with, and its scorer (name) with static saliency, or none.
   */
  useExplorerSettings(saliency: SaliencyOptions, templates: NlftTemplates, scorer: string | null): void;
  /** The data a run would train on now: the picked file, else the sample. */
  readData(): Promise<DatasetFile>;
  /**
   * Follows a newly loaded model: its sample and learning rate (the rate only while the field holds
   * the previous model's), and the view texts of its `templates.json` (none: our defaults, unless
   * the user edited the texts), with a hint that says where the texts came from.
   */
  useModel(samples: ModelSamples, templates: NlftTemplates | null, templatesProblem: string | null): void;
  /** Trains on `data` (e.g. a dataset prepared in the app), named like a picked file, until a file or the sample is chosen. */
  useData(data: DatasetFile): void;
}

/** What the Train form tells the page. */
export interface TrainFormOptions {
  /** Called when the data a run would train on changes (a file picked, the sample again, another model's sample). */
  onDataChange?(): void;
}

/** A labelled number input. */
function numberField(id: string, label: string, value: number | null, step = 'any') {
  const input = h('input', { type: 'number', id, testid: id, value: value ?? '', step });
  return { label, input, el: h('label', { class: 'setting', for: id }, h('span', {}, label), input) };
}

/** The number in a field, or `empty` when it is blank. */
function readNumber(f: { label: string; input: HTMLInputElement }): number;
function readNumber(f: { label: string; input: HTMLInputElement }, empty: null): number | null;
function readNumber(f: { label: string; input: HTMLInputElement }, empty?: null): number | null {
  const text = f.input.value.trim();
  if (text === '' && empty === null) return null;
  const v = Number(text);
  if (text === '' || !Number.isFinite(v)) throw new Error(`${f.label} must be a number (got "${f.input.value}")`);
  return v;
}

export function createTrainForm(opts: TrainFormOptions = {}): TrainForm {
  /** The sample trained on when no file is picked, and the learning rate, of the loaded model. */
  let samples: ModelSamples = GENERAL_SAMPLES;
  /** The view texts the loaded model brought (null: our defaults). */
  let modelTemplates: NlftTemplates | null = null;
  const method = h(
    'select',
    { id: 'train-method', testid: 'train-method' },
    h('option', { value: 'nlft' }, 'NLFT'),
    h('option', { value: 'sft' }, 'SFT on the standard answers'),
  );
  const when = h(
    'select',
    { id: 'train-saliency', testid: 'train-saliency' },
    h('option', { value: 'dynamic' }, "every step (the authors')"),
    h('option', { value: 'static' }, 'once, before training (an SFT-cost step)'),
  );
  when.title = 'When NLFT computes the saliency classes and weights (docs: method §3.1); SFT ignores it.';
  const preset = h(
    'select',
    { id: 'train-preset', testid: 'train-preset' },
    ...NLFT_PRESETS.map((p) => h('option', { value: p.id }, p.label)),
    h('option', { value: 'custom', disabled: true }, 'Custom (as set below)'),
  );
  const presetHint = h('p', { class: 'hint', testid: 'train-preset-hint' });
  const epochs = numberField('train-epochs', 'Epochs', DEFAULT_TRAIN.epochs);
  const lr = numberField('train-lr', 'Learning rate', DEFAULT_TRAIN.lr);
  const batch = numberField('train-batch', 'Batch', DEFAULT_TRAIN.batch, '1');
  const rank = numberField('train-rank', 'LoRA rank', DEFAULT_LORA.r, '1');
  const seed = numberField('train-seed', 'Seed', DEFAULT_TRAIN.seed, '1');
  const budget = numberField('train-memory-budget', 'Memory budget (MiB)', null);
  budget.input.placeholder = 'none';
  budget.input.title =
    'GPU memory the run may use; over it, layers are recomputed if that fits, else the run is refused. Empty: no budget.';
  const file = h('input', { type: 'file', id: 'train-file', testid: 'train-file', accept: '.json,.jsonl,application/json' });
  const dataName = h('span', { class: 'hint', testid: 'train-data' }, SAMPLES[samples.train].label);
  const useSample = h('button', { type: 'button', class: 'link', hidden: true }, 'use the sample');
  const nlft = createNlftOptionsForm({ onReset: () => showPreset() });
  const templatesHint = h('p', { class: 'hint', testid: 'train-templates-hint', hidden: true });
  /** The NLFT options as typed, or null while a number field does not hold a number. */
  const typedNlft = () => {
    try {
      return nlft.read();
    } catch {
      return null;
    }
  };
  /** Shows which preset the NLFT options and the saliency mode now match (or "custom"). */
  const showPreset = () => {
    const typed = typedNlft();
    if (!typed) return; // a field being typed: keep what is shown
    const p = presetOf({ ...typed.saliency, saliencyMode: when.value as SaliencyMode });
    preset.value = p?.id ?? 'custom';
    presetHint.textContent = p ? p.description : 'A custom NLFT setting: pick a preset above to go back to one.';
  };
  /** Sets the options a preset decides (the constants and templates stay as typed). */
  const applyPreset = (p: NlftPreset) => {
    const typed = typedNlft();
    if (!typed) {
      (nlft.el as HTMLDetailsElement).open = true; // a field that is not a number: open for the user to mend it
      return;
    }
    const { saliencyMode, ...choices } = p.choices;
    nlft.fill({ ...typed.saliency, ...choices }, typed.templates);
    when.value = saliencyMode;
    showPreset();
  };
  preset.addEventListener('change', () => {
    const p = NLFT_PRESETS.find((x) => x.id === preset.value);
    if (p) applyPreset(p);
  });
  when.addEventListener('change', showPreset);
  nlft.el.addEventListener('change', showPreset);
  applyPreset(DEFAULT_PRESET);
  let picked: File | null = null;
  /** Data handed over by another panel (`useData`), used while no file is picked. */
  let given: DatasetFile | null = null;
  /** The scorer model the run names (from the saliency explorer), or null. */
  let scorer: string | null = null;
  const scorerName = h('span', {});
  const noScorer = h('button', { type: 'button', class: 'link', testid: 'train-scorer-clear' }, 'none');
  const scorerRow = h(
    'p',
    { class: 'hint', testid: 'train-scorer', hidden: true },
    scorerName,
    ' (from the Saliency explorer; it scores before training, saliency static) · ',
    noScorer,
  );
  const showScorer = (name: string | null) => {
    scorer = name;
    scorerName.textContent = name ? `Scorer: ${name}` : '';
    scorerRow.hidden = !name;
  };
  noScorer.addEventListener('click', () => showScorer(null));
  /** The data to send (a copy of handed-over bytes: sending transfers them away). */
  const readData = async () => {
    if (picked) return readPickedFile(picked);
    return given ? { name: given.name, bytes: given.bytes.slice() } : fetchSample(samples.train);
  };

  file.addEventListener('change', () => {
    picked = file.files?.[0] ?? null;
    if (!picked) return;
    given = null;
    dataName.textContent = `${picked.name} (${formatBytes(picked.size)})`;
    useSample.hidden = false;
    opts.onDataChange?.();
  });
  useSample.addEventListener('click', () => {
    picked = null;
    given = null;
    file.value = '';
    dataName.textContent = SAMPLES[samples.train].label;
    useSample.hidden = true;
    opts.onDataChange?.();
  });

  return {
    els: [
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
        h('label', { class: 'setting wide', for: 'train-method' }, h('span', {}, 'Method'), method),
        h('label', { class: 'setting wide', for: 'train-preset' }, h('span', {}, 'NLFT setting'), preset),
        h('label', { class: 'setting wide', for: 'train-saliency' }, h('span', {}, 'Saliency computed'), when),
        epochs.el,
        lr.el,
        batch.el,
        rank.el,
        seed.el,
        budget.el,
      ),
      presetHint,
      scorerRow,
      templatesHint,
      nlft.el,
    ],
    async read() {
      const r = readNumber(rank);
      const train = { ...DEFAULT_TRAIN, epochs: readNumber(epochs), lr: readNumber(lr), batch: readNumber(batch), seed: readNumber(seed) };
      const memoryBudgetMiB = readNumber(budget, null);
      const { saliency, templates } = nlft.read();
      return {
        method: method.value as TrainMethod,
        train,
        lora: { ...DEFAULT_LORA, targets: [...DEFAULT_LORA.targets], r, alpha: null },
        maxLen: MAX_LEN,
        saliency,
        templates,
        memoryBudgetMiB,
        saliencyMode: when.value as SaliencyMode,
        scorer,
        data: await readData(),
      };
    },
    fill(s) {
      method.value = s.method;
      epochs.input.value = String(s.train.epochs);
      lr.input.value = String(s.train.lr);
      batch.input.value = String(s.train.batch);
      rank.input.value = String(s.lora.r);
      seed.input.value = String(s.train.seed);
      budget.input.value = s.memoryBudgetMiB === null || s.memoryBudgetMiB === undefined ? '' : String(s.memoryBudgetMiB);
      nlft.fill(s.saliency, s.templates);
      when.value = s.saliencyMode ?? 'dynamic';
      showScorer(s.scorer ?? null);
      showPreset();
    },
    setDisabled(disabled) {
      for (const c of [
        method,
        preset,
        when,
        epochs.input,
        lr.input,
        batch.input,
        rank.input,
        seed.input,
        budget.input,
        file,
        useSample,
        noScorer,
      ])
        c.disabled = disabled;
      nlft.setDisabled(disabled);
    },
    useAnchoredNegatives() {
      (nlft.el as HTMLDetailsElement).open = true;
      let typed: ReturnType<typeof nlft.read>;
      try {
        typed = nlft.read();
      } catch {
        return; // a field that is not a number: the options are open for the user to mend it
      }
      nlft.fill({ ...typed.saliency, negatives: 'anchor', sftOnNegatives: false }, typed.templates);
      showPreset();
    },
    async readScoringInput() {
      return { data: await readData(), templates: nlft.read().templates, maxLen: MAX_LEN };
    },
    readData,
    useModel(next, templates, templatesProblem) {
      if (readNumber(lr, null) === samples.lr) lr.input.value = String(next.lr);
      const sampleChanged = next.train !== samples.train;
      samples = next;
      if (!picked && !given) dataName.textContent = SAMPLES[samples.train].label;
      const typed = typedNlft();
      const same = (a: NlftTemplates, b: NlftTemplates) => JSON.stringify(a) === JSON.stringify(b);
      const untouched = typed !== null && same(typed.templates, modelTemplates ?? DEFAULT_TEMPLATES);
      if (typed && (templates || untouched)) nlft.fill(typed.saliency, templates ?? DEFAULT_TEMPLATES);
      modelTemplates = templates;
      templatesHint.textContent = templates
        ? 'Prompt templates from the model folder (its templates.json): the NLFT views and the Saliency explorer use them.'
        : (templatesProblem ?? '');
      templatesHint.hidden = !templatesHint.textContent;
      if (sampleChanged && !picked && !given) opts.onDataChange?.();
    },
    useExplorerSettings(saliency, templates, name) {
      method.value = 'nlft';
      nlft.fill(saliency, templates);
      (nlft.el as HTMLDetailsElement).open = true;
      showScorer(name);
      if (name) when.value = 'static';
      showPreset();
    },
    useData(data) {
      picked = null;
      file.value = '';
      given = data;
      dataName.textContent = `${data.name} (${formatBytes(data.bytes.byteLength)})`;
      useSample.hidden = false;
      opts.onDataChange?.();
    },
  };
}
