/**
 * The Model panel: loads the embedded demo model into the worker's GPU, with a weight-format
 * choice (changing it reloads the model), a progress bar, and the model's size and GPU bytes.
 */
import { formatBytes } from '../../engine/buffers.ts';
import type { QuantFormat } from '../../model/quant.ts';
import { QUANT_FORMATS } from '../../model/quant.ts';
import type { MemoryInfo, ModelInfo } from '../../worker/protocol.ts';
import { errorLine, formatCount, h, panel } from '../dom.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';

const QUANT_LABELS: Record<QuantFormat, string> = {
  f32: 'f32 — full precision',
  q8: 'q8 — int8, blocks of 32',
  q4: 'q4 — int4, blocks of 32',
};

/** What the Model panel needs from the app. */
export interface ModelPanelOptions {
  trainer: TrainerClient;
  /** The weight format to load first. */
  quant: QuantFormat;
  /** Called when the user picks another weight format (before it loads). */
  onQuantChange(quant: QuantFormat): void;
  /** Called with true once a model is ready, false while none is. */
  onReadyChange(ready: boolean): void;
}

/** The Model panel's element and controls. */
export interface ModelPanelView {
  el: HTMLElement;
  /** Loads the demo model in the selected weight format. */
  load(): Promise<void>;
  /** Re-reads the GPU bytes from the worker. */
  refreshMemory(): Promise<void>;
  /** Stops the panel for good (no GPU), showing why. */
  disable(reason: string): void;
  /** Locks the weight choice while another job (training) holds the worker. */
  setLocked(locked: boolean): void;
}

/** Builds the Model panel; nothing loads until `load()`. */
export function createModelPanel(opts: ModelPanelOptions): ModelPanelView {
  const { el, body } = panel('Model', 'model-panel');
  const select = h('select', { testid: 'quant', id: 'quant' });
  for (const q of QUANT_FORMATS) select.append(h('option', { value: q, selected: q === opts.quant }, QUANT_LABELS[q]));
  const progress = h('progress', { testid: 'model-progress', max: 1, value: 0 });
  const status = h('p', { class: 'status', testid: 'model-status', 'data-state': 'idle' }, 'Waiting for the GPU…');
  const error = errorLine('model-error');
  const facts = h('dl', { class: 'facts', hidden: true });
  const memory = h('dd', { testid: 'gpu-bytes' });
  body.append(h('label', { class: 'field inline', for: 'quant' }, 'Weights', select), progress, status, error.el, facts);

  let stopped = false;
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
      h('dd', { testid: 'kernels' }, info.kernels),
      h('dt', {}, 'GPU memory'),
      memory,
    );
    showMemory(info.memory);
    facts.hidden = false;
  };

  const load = async () => {
    const quant = select.value as QuantFormat;
    select.disabled = true;
    error.show(null);
    progress.value = 0;
    progress.hidden = false;
    setState('loading', 'Loading the demo model…');
    try {
      const info = await opts.trainer.loadDemoModel(quant, (p) => {
        progress.value = p.fraction;
        status.textContent = `${p.stage}…`;
      });
      if (stopped) return;
      showModel(info);
      progress.hidden = true;
      setState('ready', `${info.name}, ${info.quant} weights`);
    } catch (e) {
      if (stopped) return;
      setState('error', 'The model could not be loaded.');
      error.show(errorMessage(e));
    } finally {
      select.disabled = stopped;
    }
  };

  select.addEventListener('change', () => {
    opts.onQuantChange(select.value as QuantFormat);
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
    setLocked(locked) {
      select.disabled = stopped || locked;
    },
    disable(reason) {
      stopped = true;
      select.disabled = true;
      progress.hidden = true;
      setState('error', reason);
    },
  };
}
