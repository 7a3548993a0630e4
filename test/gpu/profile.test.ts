/**
 * The per-kernel profile (src/engine/profile.ts) on a tiny model: one SFT step (forward keeping
 * activations, one readback of the three score arrays; backward, AdamW and the norm's readback in
 * one submit) profiled with timestamp-query and with fenced timing. The dispatches of one decoder layer (a two-layer model
 * minus a one-layer model) must be those the layer's blocks record (docs/architecture.md §3),
 * the uploads and readbacks exactly the step's own bytes, the kernels' GPU time within the step's
 * wall time, and `detach` must give the device its own methods back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { GpuProfiler, type ProfileReport } from '../../src/engine/profile.ts';
import { lossCoefficients, TrainPass, type TermKind } from '../../src/engine/train-pass.ts';
import { initLora } from '../../src/model/lora.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import { AdamW } from '../../src/train/optimizer.ts';
import { TINY_SHAPE } from '../fixtures/tiny-llama.ts';
import { testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

const T = 12;
const ROWS = [4, 5, 6, 7, 8, 9, 10];
const R = ROWS.length;

/**
 * Profile of the third of three SFT steps on a model of `numLayers` layers (the first compiles the
 * pipelines; the second's pass buffers, of the same shape as the first's, are kept for the third).
 */
async function profiledStep(numLayers: number, timestamps: boolean): Promise<ProfileReport> {
  const weights = makeTinyLlama({ ...TINY_SHAPE, numLayers, vocabSize: 64, seed: 3 });
  const lora = initLora(weights.config, { r: 4, alpha: 4, dropout: 0, targets: ['gate_proj', 'up_proj', 'down_proj'] }, 5);
  const model = GpuLlama.create(g.ops, weights, 'f32', lora);
  const opt = new AdamW(g, model.lora!.params, model.lora!.enableGradients(), model.lora!.n);
  const ids = Array.from({ length: T }, (_, i) => (i * 13 + 5) % 64);
  const kinds: TermKind[] = ROWS.map(() => 'likelihood');
  const w = new Float32Array(R).fill(1 / R);
  const profiler = GpuProfiler.attach(g.ctx.device, { timestamps });
  try {
    for (let step = 1; step <= 3; step++) {
      const pass = await TrainPass.forward(
        model,
        ids,
        ROWS,
        ROWS.map((r) => ids[r + 1]),
        { rate: 0, seed: 0 },
      );
      let readNorm = async () => Number.NaN;
      await pass.backward(lossCoefficients(kinds, w, pass.scores), async (enc) => {
        await opt.step(enc, { lr: 1e-3, step, gradScale: 1 });
        readNorm = opt.recordNormReadback(enc);
      });
      expect(await readNorm()).toBeGreaterThan(0);
      profiler.step();
    }
    return await profiler.report(2);
  } finally {
    profiler.detach();
    opt.destroy();
    model.destroy();
  }
}

/** Dispatches per step of each kernel family (all phases together). */
function callsByKernel(r: ProfileReport): Map<string, number> {
  const m = new Map<string, number>();
  for (const k of r.kernels) m.set(k.kernel, (m.get(k.kernel) ?? 0) + k.calls);
  return m;
}

describe('per-kernel profile', () => {
  it('counts the dispatches one decoder layer records, the step submits, uploads and readbacks, with timestamp-query', async () => {
    expect(g.ctx.adapter.features.timestampQuery).toBe(true);
    const one = await profiledStep(1, true);
    const two = await profiledStep(2, true);
    expect(two.source).toBe('timestamp-query');
    expect(two.steps).toBe(1);
    const perLayer = new Map<string, number>();
    const [a, b] = [callsByKernel(one), callsByKernel(two)];
    for (const [k, n] of b) if (n !== a.get(k)) perLayer.set(k, n - (a.get(k) ?? 0));
    // Forward: 2 norms; q, k, v, o, and gate/up/down each with its LoRA A before it and B in its
    // tile (4 + 3·2 matmuls);
    // RoPE on q and k; attention; SwiGLU. Backward: each of the 7 projections' dx through the
    // frozen weight, A's part in the adapted ones' tile, and their g = dY B (7 + 3 matmul_dx), their dA and dB
    // (3·2 matmul_tn), 2 norms, inverse RoPE on q and k, attention's delta, dq and dk/dv, SwiGLU.
    expect(Object.fromEntries(perLayer)).toEqual({
      rmsnorm: 2,
      matmul: 10,
      rope: 4,
      attention: 1,
      swiglu: 1,
      matmul_dx: 10,
      matmul_tn: 6,
      'rmsnorm.backward': 2,
      'attention.delta': 1,
      'attention.dq': 1,
      'attention.dkdv': 1,
      'swiglu.backward': 1,
    });
    // The one-layer model's only layer is its lowest adapted one (gate/up/down adapted): its backward
    // makes no d x_in. So no attention backward, RoPE or norm backward (the final norm's only), and
    // the matmul_dx are down's dF and the three g = dY B only.
    const backwardOf = (r: ProfileReport) =>
      Object.fromEntries(r.kernels.filter((k) => k.phase === 'backward').map((k) => [k.kernel, k.calls]));
    expect(backwardOf(one)).toMatchObject({ matmul_dx: 4, matmul_tn: 6, 'swiglu.backward': 1, 'rmsnorm.backward': 1 });
    for (const k of ['attention.delta', 'attention.dq', 'attention.dkdv', 'rope']) expect(backwardOf(one)).not.toHaveProperty(k);
    const phase = (r: ProfileReport, p: string) => r.phases.find((x) => x.phase === p)?.calls ?? 0;
    expect(phase(two, 'train forward') - phase(one, 'train forward')).toBe(2 + 10 + 2 + 1 + 1);
    expect(phase(two, 'backward') - phase(one, 'backward')).toBe(10 + 6 + 2 + 2 + 3 + 1);
    // The optimizer (gradnorm partial and finish, adamw) is recorded into the backward's encoder.
    const optimizer = two.kernels.filter((k) => ['gradnorm.partial', 'gradnorm.finish', 'adamw'].includes(k.kernel));
    expect(optimizer.map((k) => [k.phase, k.calls])).toEqual([1, 2, 3].map(() => ['backward', 1]));
    expect(two.dispatches).toBe([...b.values()].reduce((s, n) => s + n, 0));
    // Submits: forward (its scores copied out by the same submit); backward with the optimizer and the norm's copy.
    expect(two.submits).toBe(2);
    expect(two.readbacks).toBe(2);
    expect(two.readbackBytes).toBe(3 * 4 * R + 4);
    // Uploads: the pass's inputs in one buffer (ids, rows, targets, the RoPE table (T, D/2, 2),
    // the sequence starts (T), each part at a 256-byte offset), the coefficients (R), the AdamW
    // uniform (48 bytes); the norm's uniform is unchanged from step 1 and not written again.
    const D = TINY_SHAPE.hiddenSize / TINY_SHAPE.numHeads;
    const aligned = (bytes: number) => Math.ceil(bytes / 256) * 256;
    expect(two.uploads).toBe(3);
    expect(two.uploadBytes).toBe([4 * T, 4 * R, 4 * R, 4 * T * D, 4 * T].reduce((s, n) => s + aligned(n), 0) + 4 * R + 48);
    // The same shapes as step 2 over the same (recycled) buffers: every bind group is reused.
    expect(two.bindGroups).toBe(0);
    for (const k of two.kernels) expect(k.ms, k.kernel).toBeGreaterThan(0);
    expect(two.gpuMs).toBeCloseTo(
      two.kernels.reduce((s, k) => s + k.ms, 0),
      6,
    );
    expect(two.gpuMs).toBeLessThanOrEqual(two.wallMs);
    expect(two.waitMs + two.cpuMs).toBeCloseTo(two.wallMs, 6);
    expect(two.waitMs).toBeLessThanOrEqual(two.wallMs);
  });

  it('falls back to fenced timing per phase with the same counts, and detach restores the device', async () => {
    const fenced = await profiledStep(1, false);
    const stamped = await profiledStep(1, true);
    expect(fenced.source).toBe('fenced');
    expect(callsByKernel(fenced)).toEqual(callsByKernel(stamped));
    expect([fenced.submits, fenced.readbacks, fenced.uploads]).toEqual([stamped.submits, stamped.readbacks, stamped.uploads]);
    for (const k of fenced.kernels) expect(k.ms).toBe(0);
    for (const p of ['train forward', 'backward']) {
      const row = fenced.phases.find((x) => x.phase === p);
      expect(row?.ms, p).toBeGreaterThan(0);
    }
    expect(fenced.gpuMs).toBeLessThanOrEqual(fenced.wallMs);
    const device = g.ctx.device as unknown as object;
    const queue = g.ctx.device.queue as unknown as object;
    for (const name of ['createCommandEncoder', 'createBuffer', 'createBindGroup']) expect(Object.hasOwn(device, name), name).toBe(false);
    for (const name of ['submit', 'writeBuffer', 'onSubmittedWorkDone']) expect(Object.hasOwn(queue, name), name).toBe(false);
  });
});
