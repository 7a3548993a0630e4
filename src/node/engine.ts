/** The engine in Node: Dawn + kernels read from disk, tile shapes tuned per adapter and cached on disk. */
import { createEngine, type Engine } from '../engine/engine.ts';
import type { Tuning } from '../engine/ops.ts';
import { tuningFor } from '../engine/tune.ts';
import type { LlamaConfig } from '../model/config.ts';
import type { QuantFormat } from '../model/quant.ts';
import { nodeKernelSources } from './kernel-files.ts';
import { FileTuningCache } from './tuning-cache.ts';
import { nodeGpu } from './webgpu.ts';

export async function createNodeEngine(opts: { budgetBytes?: number; tuning?: Tuning } = {}): Promise<Engine> {
  return createEngine(await nodeGpu(), nodeKernelSources(), opts);
}

/**
 * An engine whose kernels use the tile shapes measured for this adapter and model (cached in
 * FileTuningCache; the first use on an adapter measures them, a few seconds). `note` says which,
 * for the CLI's log.
 */
export async function createTunedEngine(
  c: LlamaConfig,
  quant: QuantFormat,
  opts: { budgetBytes?: number } = {},
): Promise<{ engine: Engine; note: string }> {
  const engine = await createNodeEngine(opts);
  try {
    const cache = new FileTuningCache();
    const { tuning, source } = await tuningFor(engine, cache, { C: c.hiddenSize, F: c.intermediateSize, V: c.vocabSize }, quant);
    engine.useTuning(tuning);
    const tile = (t: { TM: number; TN: number }) => `${t.TM}x${t.TN}`;
    const why = {
      measured: `measured now for this adapter, cached in ${cache.file}`,
      cached: 'cached for this adapter',
      default: 'defaults: no memory left to measure',
    }[source];
    return { engine, note: `matmul tile ${tile(tuning.matmul)}, lm-head tile ${tile(tuning.lmhead)} (${why})` };
  } catch (e) {
    engine.destroy();
    throw e;
  }
}
