/**
 * Opening a model for a job, the same in every host: its files (from a folder, the Hub or picked
 * files — the host builds the `FileSource`) read into f32 weights with the tokenizer every job
 * needs, and the engine switched to the kernel tiles measured for this adapter and model.
 */
import { TextTokenizer } from '../data/tokenizer.ts';
import type { Engine } from '../engine/engine.ts';
import { DEFAULT_MATVEC, describeMatmulTile, describeMatvecTile, type Tuning } from '../engine/ops.ts';
import { type TuningCache, type TuningSource, tuningFor } from '../engine/tune.ts';
import { ModelFormatError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { type LoadedModel, loadModelFolder } from '../model/loader.ts';
import type { QuantFormat } from '../model/quant.ts';
import type { FileSource } from '../model/source.ts';

/** A model's files as read, and its tokenizer. */
export interface OpenedModel {
  model: LoadedModel;
  tok: TextTokenizer;
}

/**
 * Reads the model at `source` (config, weights, tokenizer); a model without `tokenizer.json` is
 * refused, naming `purpose` (what needs it). `onProgress` gets weight bytes read and their total.
 */
export async function openModel(
  source: FileSource,
  purpose: string,
  onProgress?: (done: number, total: number) => void,
): Promise<OpenedModel> {
  const model = await loadModelFolder(source, { onProgress });
  if (!model.tokenizerJson)
    throw new ModelFormatError('tokenizer.json', undefined, `not found in ${source.label}; ${purpose} needs the model's tokenizer`);
  return { model, tok: TextTokenizer.fromJson(model.tokenizerJson, model.tokenizerConfig ?? {}) };
}

/**
 * Switches the engine to the tile shapes for this adapter and model (`tuningFor`): cached, the
 * software adapters' preset, or measured now (first use on an adapter: seconds on a GPU, about a
 * minute on SwiftShader; `onProgress` from 0 to 1) and cached; `measure` measures again.
 */
export async function tuneEngine(
  engine: Engine,
  cache: TuningCache,
  c: LlamaConfig,
  quant: QuantFormat,
  opts: { onProgress?: (fraction: number) => void; measure?: boolean } = {},
): ReturnType<typeof tuningFor> {
  const heads = { H: c.numHeads, KVH: c.numKvHeads, D: c.headDim };
  const found = await tuningFor(engine, cache, { C: c.hiddenSize, F: c.intermediateSize, V: c.vocabSize, heads }, quant, opts);
  engine.useTuning(found.tuning);
  return found;
}

/** The kernels in use as one line, e.g. "matmul 16×8 (wg 2×4), dx 16×8, lm-head 16×8, decode cols 8 (wg 16), attention 4 threads a head (measured now)". */
export function describeTuning(tuning: Tuning, source: TuningSource): string {
  const tile = (t: { TM: number; TN: number }) => `${t.TM}×${t.TN}`;
  const why = {
    measured: 'measured now',
    cached: 'measured earlier on this GPU',
    preset: 'software-adapter preset, not measured',
    default: 'defaults',
  }[source];
  const dx = tuning.matmulDx;
  const decode = `, decode ${describeMatvecTile(tuning.matvec ?? DEFAULT_MATVEC)}, attention ${tuning.decodeAttention.threads} threads a head`;
  return `matmul ${describeMatmulTile(tuning.matmul)}, dx ${dx.TM}×${dx.TK}, lm-head ${tile(tuning.lmhead)}${decode} (${why})`;
}
