/** Real WebGPU for tests: Dawn in Node, on whatever Vulkan driver is present (SwiftShader here). */
import type { TrackedBuffer } from '../../src/engine/buffers.ts';
import type { Engine } from '../../src/engine/engine.ts';
import type { GpuWeight } from '../../src/engine/ops.ts';
import { quantize, type QuantFormat } from '../../src/model/quant.ts';
import { createNodeEngine } from '../../src/node/engine.ts';
import { Rng } from '../../src/util/rng.ts';

export interface TestGpu extends Engine {
  /** Record with `fn` into one encoder, submit, and wait for the queue. */
  run(fn: (enc: GPUCommandEncoder) => Promise<void>): Promise<void>;
  weight(w: Float32Array, rows: number, cols: number, format: QuantFormat): GpuWeight;
  f32(t: TrackedBuffer, n?: number): Promise<Float32Array>;
}

export async function testGpu(): Promise<TestGpu> {
  const engine = await createNodeEngine();
  const { ctx, buffers } = engine;
  return {
    ...engine,
    async run(fn) {
      const enc = ctx.device.createCommandEncoder();
      await fn(enc);
      ctx.device.queue.submit([enc.finish()]);
      await ctx.device.queue.onSubmittedWorkDone();
    },
    weight(w, rows, cols, format) {
      const q = quantize(w, rows, cols, format);
      return { format, rows, cols, data: buffers.upload('w', q.data), scales: q.scales ? buffers.upload('w.scales', q.scales) : null };
    },
    f32: (t, n) => buffers.readF32(t, n),
  };
}

/** Seeded uniform values in [-scale, scale). */
export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => rng.uniform(-scale, scale));
}

/** Largest |a-b| / (atol + rtol*|b|) over the arrays; <= 1 means within tolerance. */
export function maxViolation(a: ArrayLike<number>, b: ArrayLike<number>, rtol: number, atol: number): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const diff = Math.abs(a[i] - b[i]);
    if (diff === 0) continue;
    const v = diff / (atol + rtol * Math.abs(b[i]));
    if (!(v <= worst)) worst = Number.isNaN(v) ? Infinity : Math.max(worst, v);
  }
  return worst;
}
