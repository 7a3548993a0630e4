/**
 * The Model panel: picks the model — the embedded toy-math demo (a pretrained 0.9 M-parameter Llama
 * served with the app from `public/toy-math/model/` and read through the same loader as any folder),
 * the stress model (SmolLM2's vocabulary and widths with random weights), a Hugging Face Hub repository (downloaded
 * once, then loaded from the browser's cache; the Hub URL is editable, e.g. a mirror) or a local
 * model folder — and loads it into the worker's GPU, with a weight-format choice (changing it
 * reloads the model), a progress bar with the stage (downloads included), and the model's size,
 * kernel tiles and GPU bytes.
 */
import { formatBytes } from '../../engine/buffers.ts';
import type { QuantFormat } from '../../model/quant.ts';
import { QUANT_FORMATS } from '../../model/quant.ts';
import { DEFAULT_HUB_URL } from '../../model/hub.ts';
import type { ModelChoice } from '../../storage/db.ts';
import type { MemoryInfo, ModelInfo, ModelSpec } from '../../../workers/protocol.ts';
import { errorLine, formatCount, h, panel } from '../dom.ts';
import { GENERAL_SAMPLES, type ModelSamples, TOY_MATH_SAMPLES } from '../samples.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';

const QUANT_LABELS: Record<QuantFormat, string> = {
  f32: 'f32 — full precision',
  q8: 'q8 — int8, blocks of 32',
  q4: 'q4 — int4, blocks of 32',
};

/** What the Model panel needs from the app. */
export interface ModelPanelOptions {
  trainer: TrainerClient;
  /** The model to load first, and the weight format. */
  model: ModelChoice;
  quant: QuantFormat;
  /** Called when the user loads another demo or Hub model (a picked folder is not remembered: its files must be picked again). */
  onModelChange(model: ModelChoice): void;
  /** Called when the user picks another weight format (before it loads). */
  onQuantChange(quant: QuantFormat): void;
  /** Called with true once a model is ready, false while none is. */
  onReadyChange(ready: boolean): void;
  /** Called when a model has loaded, with the samples the panels start from for it. */
  onModelLoaded?(info: ModelInfo, samples: ModelSamples): void;
}

/** Where the app serves the toy-math demo's model folder (public/toy-math/model/). */
const TOY_MATH_FOLDER = 'toy-math/model/';

/** What each embedded model is, shown under the menu (whose option texts stay short enough to show whole). */
const EMBEDDED_HINTS = {
  demo: [
    'toy-math demo (0.9 M parameters, pretrained on grade-school word problems, offline)',
    ': a Llama pretrained from scratch on synthetic word problems (vocabulary 849, ChatML), served with the app. ' +
      'It answers about 69 % of its easy test questions, trains in minutes and changes its accuracy; ' +
      'its NLFT view texts come from its templates.json. CC0.',
  ],
  stress: [
    'Stress model (SmolLM2-shaped, random weights)',
    ': SmolLM2-135M’s 49 152-token vocabulary and tokenizer with small widths (hidden 64, 2 layers) and seeded random ' +
      'weights, generated in the worker, for testing the large-vocabulary kernels and memory. It writes noise.',
  ],
} as const;

/** The samples the panels start from for a model: toy-math's own for the demo, the GSM8K and NLFT samples for any other. */
export function samplesFor(spec: ModelSpec): ModelSamples {
  return spec.kind === 'url' ? TOY_MATH_SAMPLES : GENERAL_SAMPLES;
}

/** The worker's spec of a stored model choice: the demo is a folder served with the app. */
export function specOf(choice: ModelChoice): ModelSpec {
  if (choice.kind !== 'demo') return choice;
  return { kind: 'url', url: new URL(`${import.meta.env.BASE_URL}${TOY_MATH_FOLDER}`, location.href).href, name: 'toy-math' };
}

/** The Model panel's element and controls. */
export interface ModelPanelView {
  el: HTMLElement;
  /** Loads the chosen model (at start: the stored choice, else the toy-math demo) in the selected weight format. */
  load(): Promise<void>;
  /** Re-reads the GPU bytes from the worker. */
  refreshMemory(): Promise<void>;
  /** Stops the panel for good (no GPU), showing why. */
  disable(reason: string): void;
  /** Locks the model and weight choices while another job (training) holds the worker. */
  setLocked(locked: boolean): void;
}

/** Builds the Model panel; nothing loads until `load()`. */
export function createModelPanel(opts: ModelPanelOptions): ModelPanelView {
  const { el, body } = panel('Model', 'model-panel');
  const kind = h(
    'select',
    { testid: 'model-kind', id: 'model-kind' },
    h('option', { value: 'demo' }, 'toy-math demo (offline)'),
    h('option', { value: 'stress' }, 'Stress model (random weights)'),
    h('option', { value: 'hub' }, 'Hugging Face Hub'),
    h('option', { value: 'folder' }, 'A model folder on this computer'),
    h('option', { value: 'gguf' }, 'A .gguf file on this computer'),
  );
  const hubId = h('input', { type: 'text', testid: 'hub-id', id: 'hub-id', placeholder: 'HuggingFaceTB/SmolLM2-135M', spellcheck: false });
  const hubUrl = h('input', { type: 'url', testid: 'hub-url', id: 'hub-url', placeholder: DEFAULT_HUB_URL, spellcheck: false });
  const hubLoad = h('button', { type: 'button', testid: 'hub-load' }, 'Load');
  const hubRow = h(
    'div',
    { class: 'settings', hidden: true },
    h('label', { class: 'setting', for: 'hub-id' }, h('span', {}, 'Repository (org/name[@revision])'), hubId),
    h('label', { class: 'setting', for: 'hub-url' }, h('span', {}, 'Hub URL'), hubUrl),
    h('div', { class: 'setting' }, h('span', {}, '\u00a0'), hubLoad),
  );
  const folder = h('input', { type: 'file', testid: 'model-folder', id: 'model-folder', multiple: true, webkitdirectory: true });
  const folderRow = h(
    'label',
    { class: 'field inline', for: 'model-folder', hidden: true },
    'Folder (config.json, *.safetensors, tokenizer.json)',
    folder,
  );
  const gguf = h('input', { type: 'file', testid: 'model-gguf', id: 'model-gguf', multiple: true, accept: '.gguf,.json' });
  const ggufRow = h(
    'label',
    {
      class: 'field inline',
      for: 'model-gguf',
      hidden: true,
      title:
        'A llama GGUF: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 or Q2_K to Q6_K tensors; pick its tokenizer.json with it if the file has no gpt2 BPE vocabulary',
    },
    'GGUF file',
    gguf,
  );
  const select = h('select', { testid: 'quant', id: 'quant' });
  for (const q of QUANT_FORMATS) select.append(h('option', { value: q, selected: q === opts.quant }, QUANT_LABELS[q]));
  const kindHint = h('p', { class: 'hint', testid: 'model-kind-hint' });
  const progress = h('progress', { testid: 'model-progress', max: 1, value: 0 });
  const status = h('p', { class: 'status', testid: 'model-status', 'data-state': 'idle' }, 'Waiting for the GPU…');
  const error = errorLine('model-error');
  const facts = h('dl', { class: 'facts', hidden: true });
  // Loads the model again with the kernel tiles measured now: a software adapter runs small models on
  // a preset, and a measurement cached earlier may predate a driver update.
  const measure = h(
    'button',
    { type: 'button', testid: 'measure-kernels', title: 'Time the kernel variants on this GPU and model now and keep the fastest' },
    'Measure',
  );
  const memory = h('dd', { testid: 'gpu-bytes' });
  body.append(
    h('label', { class: 'field inline', for: 'model-kind' }, 'Model', kind),
    kindHint,
    hubRow,
    folderRow,
    ggufRow,
    h('label', { class: 'field inline', for: 'quant' }, 'Weights', select),
    progress,
    status,
    error.el,
    facts,
  );

  kind.value = opts.model.kind;
  if (opts.model.kind === 'hub') {
    hubId.value = opts.model.id;
    hubUrl.value = opts.model.baseUrl === DEFAULT_HUB_URL ? '' : opts.model.baseUrl;
  }
  /** The model loaded last (a picked folder's files stay here until another pick). */
  let current: ModelSpec = specOf(opts.model);
  let stopped = false;
  let locked = false;
  let loading = false;
  const showRows = () => {
    hubRow.hidden = kind.value !== 'hub';
    folderRow.hidden = kind.value !== 'folder';
    ggufRow.hidden = kind.value !== 'gguf';
    const hint = kind.value === 'demo' || kind.value === 'stress' ? EMBEDDED_HINTS[kind.value] : null;
    kindHint.replaceChildren(...(hint ? [h('strong', {}, hint[0]), hint[1]] : []));
    kindHint.hidden = !hint;
  };
  showRows();
  const updateControls = () => {
    for (const c of [kind, hubId, hubUrl, hubLoad, folder, gguf, select, measure]) c.disabled = stopped || locked || loading;
  };
  const setState = (state: 'loading' | 'ready' | 'error', text: string) => {
    status.dataset.state = state;
    status.textContent = text;
    opts.onReadyChange(state === 'ready');
  };
  const showMemory = (m: MemoryInfo) => {
    memory.textContent = `${formatBytes(m.currentBytes)} now, ${formatBytes(m.peakBytes)} peak`;
  };
  const showModel = (info: ModelInfo) => {
    const row = (term: string, value: string | Node) => [h('dt', {}, term), h('dd', {}, value)];
    facts.replaceChildren(
      ...row('Parameters', `${formatCount(info.parameters)} (${(info.parameters / 1e6).toFixed(2)} M)`),
      ...row('Shape', `${info.layers} layers · hidden ${info.hiddenSize} · vocabulary ${formatCount(info.vocabSize)}`),
      ...row('Weights', `${formatBytes(info.weightBytes)} in ${info.quant}`),
      h('dt', {}, 'Kernels'),
      h('dd', {}, h('span', { testid: 'kernels' }, info.kernels), ' ', measure),
      h('dt', {}, 'GPU memory'),
      memory,
    );
    showMemory(info.memory);
    facts.hidden = false;
  };

  const load = async (options: { measureKernels?: boolean } = {}) => {
    const quant = select.value as QuantFormat;
    loading = true;
    updateControls();
    error.show(null);
    progress.value = 0;
    progress.hidden = false;
    const embedded = { url: 'Loading the toy-math demo…', stress: 'Loading the stress model…' } as Record<string, string>;
    setState('loading', embedded[current.kind] ?? 'Loading the model…');
    try {
      const info = await opts.trainer.loadModel(
        current,
        quant,
        (p) => {
          progress.value = p.fraction;
          status.textContent = `${p.stage}…`;
        },
        options,
      );
      if (stopped) return;
      showModel(info);
      progress.hidden = true;
      setState('ready', `${info.name}, ${info.quant} weights`);
      opts.onModelLoaded?.(info, samplesFor(current));
    } catch (e) {
      if (stopped) return;
      progress.hidden = true;
      setState('error', 'The model could not be loaded.');
      error.show(errorMessage(e));
    } finally {
      loading = false;
      updateControls();
    }
  };

  measure.addEventListener('click', () => void load({ measureKernels: true }));
  select.addEventListener('change', () => {
    opts.onQuantChange(select.value as QuantFormat);
    void load();
  });
  kind.addEventListener('change', () => {
    showRows();
    if (kind.value === 'demo' || kind.value === 'stress') {
      const choice: ModelChoice = { kind: kind.value };
      current = specOf(choice);
      opts.onModelChange(choice);
      void load();
    }
  });
  hubLoad.addEventListener('click', () => {
    const choice: ModelChoice = { kind: 'hub', id: hubId.value.trim(), baseUrl: hubUrl.value.trim() || DEFAULT_HUB_URL };
    if (!choice.id) {
      error.show('Type the repository of a Llama model, e.g. HuggingFaceTB/SmolLM2-135M.');
      return;
    }
    current = choice;
    opts.onModelChange(choice);
    void load();
  });
  folder.addEventListener('change', () => {
    const files = [...(folder.files ?? [])];
    if (files.length === 0) return;
    const rel = (files[0] as File & { webkitRelativePath?: string }).webkitRelativePath;
    current = { kind: 'files', label: rel ? rel.split('/')[0] : files[0].name, files };
    void load();
  });
  // The .gguf file is read through File.slice ranges (PickedFilesSource), never whole.
  gguf.addEventListener('change', () => {
    const files = [...(gguf.files ?? [])];
    const model = files.find((f) => f.name.toLowerCase().endsWith('.gguf'));
    if (!model) {
      if (files.length > 0) error.show('Pick a .gguf model file (and, if you like, its tokenizer.json with it).');
      return;
    }
    current = { kind: 'files', label: model.name, files };
    void load();
  });

  return {
    el,
    load,
    async refreshMemory() {
      try {
        showMemory(await opts.trainer.memory());
      } catch {
        // The memory line is informative only; the failure shows where the call that failed is.
      }
    },
    setLocked(on) {
      locked = on;
      updateControls();
    },
    disable(reason) {
      stopped = true;
      updateControls();
      progress.hidden = true;
      setState('error', reason);
    },
  };
}
