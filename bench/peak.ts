/** The adapter's measured f32 FMA peak (GFLOP/s), from kernels/fma_peak.wgsl. */
import type { Engine } from '../src/engine/engine.ts';
import { fillTemplate } from '../src/engine/kernels.ts';

export async function measureFmaPeak(engine: Engine): Promise<number> {
  const ITERS = 4096;
  const threads = 64 * 256;
  const pl = await engine.pipelines.get('fma_peak', `fma_peak:${ITERS}`, () =>
    fillTemplate(engine.pipelines.source('fma_peak'), { ITERS }),
  );
  const sink = engine.buffers.create('fma sink', threads * 16);
  const bind = engine.ctx.device.createBindGroup({
    layout: pl.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: sink.buffer } }],
  });
  const run = async () => {
    const enc = engine.ctx.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pl);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(threads / 64);
    pass.end();
    engine.ctx.device.queue.submit([enc.finish()]);
    await engine.ctx.device.queue.onSubmittedWorkDone();
  };
  await run();
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await run();
    best = Math.min(best, performance.now() - t0);
  }
  engine.buffers.destroy(sink);
  const flops = threads * ITERS * 8 * 4 * 2;
  return flops / (best / 1000) / 1e9;
}
