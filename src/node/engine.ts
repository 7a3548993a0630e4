/** The engine in Node: Dawn + kernels read from disk. */
import { createEngine, type Engine } from '../engine/engine.ts';
import type { Tuning } from '../engine/ops.ts';
import { nodeKernelSources } from './kernel-files.ts';
import { nodeGpu } from './webgpu.ts';

export async function createNodeEngine(opts: { budgetBytes?: number; tuning?: Tuning } = {}): Promise<Engine> {
  return createEngine(await nodeGpu(), nodeKernelSources(), opts);
}
