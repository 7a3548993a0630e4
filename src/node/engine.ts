/** The engine in Node: Dawn + kernels read from disk, tile shapes tuned per adapter and cached on disk. */
import { createEngine, type Engine } from '../engine/engine.ts';
import type { Tuning } from '../engine/ops.ts';
import type { LlamaConfig } from '../model/config.ts';
import type { QuantFormat } from '../model/quant.ts';
import { describeTuning, tuneEngine } from '../session/model.ts';
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
export async function createTunedEngine(c: LlamaConfig, quant: QuantFormat): Promise<{ engine: Engine; note: string }> {
  const engine = await createNodeEngine();
  try {
    const cache = new FileTuningCache();
    const { tuning, source } = await tuneEngine(engine, cache, c, quant);
    return { engine, note: `${describeTuning(tuning, source)}${source === 'measured' ? `; kept in ${cache.file}` : ''}` };
  } catch (e) {
    engine.destroy();
    throw e;
  }
}
