/**
 * Per-step values stay out of the engine's cached buffers: over several SFT steps with LoRA
 * dropout on (a new dropout seed every pass, as the trainer derives them), the buffer manager's
 * live buffers and bytes and the uploads per step stay the same from the second step on (the
 * first compiles the pipelines and fills the uniform cache with the run's shapes). Before the
 * pass seed moved into its own per-pass buffer, every seed added one cached uniform per dropout
 * dispatch, for the rest of the run. Shape uniforms are cached, but not for the engine's life: past
 * a cap (`Ops.trimUniforms`, called by the trainer at each step's start) they are destroyed.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { GpuProfiler } from '../../src/engine/profile.ts';
import { lossCoefficients, TrainPass, type TermKind } from '../../src/engine/train-pass.ts';
import { initLora } from '../../src/model/lora.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import { AdamW } from '../../src/train/optimizer.ts';
import { DEFAULT_TUNING, Ops } from '../../src/engine/ops.ts';
import { TINY_SHAPE } from '../fixtures/tiny-llama.ts';
import { maxViolation, randomArray, testGpu, type TestGpu } from '../helpers/gpu.ts';
import { matmulRef } from '../reference/cpu-ops.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

it('live buffers, bytes and uploads per step do not grow over a run with dropout on', async () => {
  const weights = makeTinyLlama({ ...TINY_SHAPE, numLayers: 2, vocabSize: 64, seed: 4 });
  const lora = initLora(weights.config, { r: 4, alpha: 4, dropout: 0.05, targets: ['q_proj', 'v_proj', 'down_proj'] }, 6);
  const model = GpuLlama.create(g.ops, weights, 'f32', lora);
  const opt = new AdamW(g, model.lora!.params, model.lora!.enableGradients(), model.lora!.n);
  const records = [11, 15].map((T, j) => Array.from({ length: T }, (_, i) => (i * 7 + 3 * j + 1) % 64));
  const profiler = GpuProfiler.attach(g.ctx.device, { timestamps: false });
  const perStep: { live: number; bytes: number; uploads: number; dropouts: number }[] = [];
  try {
    for (let step = 1; step <= 5; step++) {
      for (const [j, ids] of records.entries()) {
        const rows = ids.slice(2, -1).map((_, i) => i + 2);
        const kinds: TermKind[] = rows.map(() => 'likelihood');
        const seed = (Math.imul(step, 0x2545f491) ^ j) >>> 0;
        const pass = await TrainPass.forward(
          model,
          ids,
          rows,
          rows.map((r) => ids[r + 1]),
          { rate: 0.05, seed },
          j === 1,
        );
        await pass.backward(lossCoefficients(kinds, new Float32Array(rows.length).fill(0.1), pass.scores));
      }
      const enc = g.ctx.device.createCommandEncoder({ label: 'optimizer step' });
      await opt.step(enc, { lr: 1e-3, step, gradScale: 1 });
      g.ctx.device.queue.submit([enc.finish()]);
      await opt.lastGradNorm();
      profiler.step();
      const r = await profiler.report(step - 1); // this step alone
      const dropouts = r.kernels.filter((k) => k.kernel === 'dropout').reduce((a, k) => a + k.calls, 0);
      perStep.push({ live: g.buffers.list().length, bytes: g.buffers.current, uploads: r.uploads, dropouts });
    }
  } finally {
    profiler.detach();
    opt.destroy();
    model.destroy();
  }
  // Dropout ran on every adapted input (forward, backward; the checkpointed pass recomputes its forward).
  expect(perStep[0].dropouts).toBeGreaterThan(0);
  for (const s of perStep.slice(2)) expect(s).toEqual(perStep[1]);
});

it('the uniform cache is emptied between steps once it holds more than its cap; the kernels then make what they need again', async () => {
  const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, DEFAULT_TUNING);
  const [N, K, maxT] = [16, 32, 40];
  const wf = randomArray(N * K, 1, 0.5);
  const xf = randomArray(maxT * K, 2);
  const w = g.weight(wf, N, K, 'f32');
  const x = g.buffers.upload('x', xf);
  const out = g.buffers.create('out', maxT * N * 4);
  try {
    // One pass length after another, as packed passes of changing length: a uniform per length.
    for (let T = 1; T <= maxT; T++) await g.run((enc) => ops.matmul(enc, { x, w, out, T }));
    const held = ops.uniformCount;
    expect(held).toBeGreaterThanOrEqual(maxT);
    const live = g.buffers.list().length;
    ops.trimUniforms(held); // at the cap: kept
    expect(ops.uniformCount).toBe(held);
    ops.trimUniforms(held - 1);
    expect(ops.uniformCount).toBe(0);
    expect(g.buffers.list().length).toBe(live - held);
    await g.run((enc) => ops.matmul(enc, { x, w, out, T: maxT }));
    expect(ops.uniformCount).toBeGreaterThan(0);
    expect(maxViolation(await g.f32(out, maxT * N), matmulRef(xf, wf, maxT, N, K), 1e-4, 1e-5)).toBeLessThanOrEqual(1);
  } finally {
    for (const t of [w.data, x, out]) g.buffers.destroy(t);
  }
});
