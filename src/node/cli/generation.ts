/**
 * What `generate`, `eval` and `prepare` share: their generation flags, and a session with the
 * model (its tokenizer and optional --adapter) on a tuned engine, with Ctrl-C ending the work early.
 */
import type { TextTokenizer } from '../../data/tokenizer.ts';
import type { Engine } from '../../engine/engine.ts';
import { GpuLlama } from '../../engine/llama.ts';
import type { PeftAdapter } from '../../export/peft.ts';
import type { QuantFormat } from '../../model/quant.ts';
import { createTunedEngine } from '../engine.ts';
import { isPositiveInt, numberOption, quantOption, type Options } from './args.ts';
import { adapterOption, loadModelWithTokenizer } from './inputs.ts';

export const GENERATION_FLAGS: Options = {
  model: { type: 'string' },
  adapter: { type: 'string' },
  quant: { type: 'string' },
  'max-new': { type: 'string' },
  temperature: { type: 'string' },
  seed: { type: 'string' },
};

export interface GenerationSettings {
  quant: QuantFormat;
  maxNew: number;
  temperature: number;
  seed: number;
}

/** --quant, --max-new, --temperature (0 = greedy) and --seed, with the command's defaults. */
export function generationOptions(values: Record<string, unknown>, defaults: { maxNew: number; temperature: number }): GenerationSettings {
  return {
    quant: quantOption(values.quant),
    maxNew: numberOption(values, 'max-new', defaults.maxNew, isPositiveInt, 'a positive integer'),
    temperature: numberOption(values, 'temperature', defaults.temperature, (v) => v >= 0, 'a number >= 0 (0 = greedy)'),
    seed: numberOption(values, 'seed', 0, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer'),
  };
}

/** The setting in words, for summary lines: weights, adapter, sampling. */
export function describeGeneration(g: GenerationSettings, adapter: boolean): string {
  return `${g.quant}${adapter ? ', LoRA adapter' : ''}, ${g.temperature === 0 ? 'greedy' : `temperature ${g.temperature}, seed ${g.seed}`}`;
}

export interface GenerationSession {
  llama: GpuLlama;
  tok: TextTokenizer;
  peft: PeftAdapter | null;
  engine: Engine;
  /** Aborted by Ctrl-C. */
  signal: AbortSignal;
}

/**
 * Load --model (with its tokenizer; `purpose` names what needs it) and --adapter, run `work` on the
 * GPU model, and free everything after. `beforeGpu` runs once the tokenizer is there (e.g. to
 * check the prompt) and before the engine starts.
 */
export async function withGenerationModel<T>(
  spec: string,
  purpose: string,
  values: Record<string, unknown>,
  quant: QuantFormat,
  out: (line: string) => void,
  work: (s: GenerationSession) => Promise<T>,
  beforeGpu?: (tok: TextTokenizer) => void,
): Promise<T> {
  const { model, tok } = await loadModelWithTokenizer(spec, purpose, out);
  const peft = await adapterOption(values, model.config);
  beforeGpu?.(tok);
  const { engine } = await createTunedEngine(model.config, quant);
  const ctl = new AbortController();
  const onSigint = () => ctl.abort();
  process.once('SIGINT', onSigint);
  try {
    return await work({ llama: GpuLlama.create(engine.ops, model.weights, quant, peft?.lora), tok, peft, engine, signal: ctl.signal });
  } finally {
    process.off('SIGINT', onSigint);
    engine.destroy();
  }
}
