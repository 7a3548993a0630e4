/**
 * One engine per GPU device: the device, the buffer manager, the pipeline cache and the ops.
 * The worker (browser) and the CLI (Node) are two thin hosts of this.
 */
import { BufferManager } from './buffers.ts';
import { acquireGpu, type GpuContext } from './gpu.ts';
import { PipelineCache, type KernelSources } from './kernels.ts';
import { DEFAULT_TUNING, Ops, type Tuning } from './ops.ts';

export interface Engine {
  ctx: GpuContext;
  buffers: BufferManager;
  pipelines: PipelineCache;
  /** The kernels' dispatcher with the engine's current tile shapes. */
  ops: Ops;
  /** Use these tile shapes for models created from now on (see tune.ts); call it as a method. */
  useTuning(this: Engine, tuning: Tuning): void;
  destroy(): void;
}

/**
 * @param gpu `navigator.gpu`, or `await nodeGpu()` in Node
 * @param sources the WGSL kernels (bundled in the browser, read from disk in Node)
 */
export async function createEngine(
  gpu: GPU | undefined,
  sources: KernelSources,
  opts: { budgetBytes?: number; tuning?: Tuning; useF16?: boolean } = {},
): Promise<Engine> {
  const ctx = await acquireGpu(gpu, { useF16: opts.useF16 });
  const buffers = new BufferManager(ctx.device, opts.budgetBytes);
  const pipelines = new PipelineCache(ctx.device, sources);
  return {
    ctx,
    buffers,
    pipelines,
    ops: new Ops(ctx.device, pipelines, buffers, opts.tuning ?? DEFAULT_TUNING),
    useTuning(this: Engine, tuning: Tuning) {
      this.ops = new Ops(ctx.device, pipelines, buffers, tuning);
    },
    destroy() {
      buffers.destroyAll();
      ctx.destroy();
    },
  };
}
