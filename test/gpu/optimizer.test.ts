/**
 * The GPU optimizer (gradnorm.wgsl + adamw.wgsl via src/train/optimizer.ts) against the float64
 * reference in test/reference/adamw.ts, over several steps on sizes that are not multiples of
 * the vec4 or workgroup widths.
 * Tolerances: the GPU keeps params, m, v in f32 and the reference in f64, both starting from the
 * same f32 values and never re-synchronised, so the errors of every step add up. After each step:
 *   params:  |gpu - ref| <= 1e-5 * |ref| + 1e-7 * max|ref|
 *   m:       |gpu - ref| <= 1e-5 * |ref| + 1e-6 * max|ref|
 *   v:       |gpu - ref| <= 1e-5 * |ref|
 *   norm:    |gpu - ref| <= 1e-6 * ref
 * The absolute parts are relative to the array's largest magnitude, because m (1e-4 .. 1 across
 * the cases) follows the clipped gradient's scale: near a sign change of m or p, f32 cancellation
 * leaves an error of a few ulps of the terms, not of the small result. v is a sum of squares (no
 * cancellation), so it is held to a purely relative bound. The worst errors seen are 9-30x inside
 * these bounds. Gradients read back exactly 0 and zero padding stays exactly 0.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrackedBuffer } from '../../src/engine/buffers.ts';
import { AdamW, type AdamWOptions } from '../../src/train/optimizer.ts';
import { adamwStateRef, adamwStepRef, type AdamWRefOptions } from '../reference/adamw.ts';
import { maxViolation, randomArray, testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.ctx.destroy());

/** One step of a case: learning rate, gradScale, and grads ~ U(-gradMag, gradMag). */
interface StepSpec {
  lr: number;
  gradScale: number;
  gradMag: number;
  /** Whether the norm of gradScale * grads exceeds maxGradNorm (asserted, so both paths are covered). */
  clipped: boolean;
}

interface Case {
  name: string;
  n: number;
  opts: AdamWRefOptions;
  steps: StepSpec[];
}

const BASE = { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
/** Floats [50, 64) are zero in params and grads, like the padding after a 50-float LoRA matrix. */
const PAD: [number, number] = [50, 64];

const CASES: Case[] = [
  {
    name: 'n=1000, no weight decay, clipping inactive',
    n: 1000,
    opts: { ...BASE, weightDecay: 0, maxGradNorm: 1 },
    steps: [
      { lr: 1e-3, gradScale: 1, gradMag: 0.01, clipped: false },
      { lr: 5e-3, gradScale: 0.5, gradMag: 0.02, clipped: false },
      { lr: 2e-2, gradScale: 0.25, gradMag: 0.05, clipped: false },
    ],
  },
  {
    name: 'n=1000, weight decay 0.1, clipping active (norm ~100x maxGradNorm)',
    n: 1000,
    opts: { ...BASE, weightDecay: 0.1, maxGradNorm: 1 },
    steps: [
      { lr: 1e-2, gradScale: 1, gradMag: 10, clipped: true },
      { lr: 3e-3, gradScale: 0.5, gradMag: 20, clipped: true },
      { lr: 1e-3, gradScale: 0.125, gradMag: 50, clipped: true },
    ],
  },
  {
    name: 'n=70001, weight decay 0.01, clipping on some steps',
    n: 70001,
    opts: { ...BASE, weightDecay: 0.01, maxGradNorm: 1 },
    steps: [
      { lr: 2e-4, gradScale: 1, gradMag: 1e-3, clipped: false },
      { lr: 1e-3, gradScale: 0.25, gradMag: 10, clipped: true },
      { lr: 5e-4, gradScale: 0.25, gradMag: 0.01, clipped: false },
      { lr: 1e-4, gradScale: 1, gradMag: 1, clipped: true },
    ],
  },
  {
    name: 'n=70001, other betas and eps, maxGradNorm 0 disables clipping',
    n: 70001,
    opts: { beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.05, maxGradNorm: 0 },
    steps: [
      { lr: 1e-3, gradScale: 1, gradMag: 30, clipped: true },
      { lr: 2e-3, gradScale: 0.5, gradMag: 30, clipped: true },
    ],
  },
  {
    name: "n=1000, maxGradNorm 1e-5 (the 1e-6 in clip_grad_norm_'s coefficient matters)",
    n: 1000,
    opts: { ...BASE, weightDecay: 0, maxGradNorm: 1e-5 },
    steps: [
      { lr: 1e-3, gradScale: 1, gradMag: 1e-6, clipped: true },
      { lr: 1e-3, gradScale: 0.5, gradMag: 1e-6, clipped: false },
    ],
  },
  {
    name: 'n=3 (no vec4: tail only)',
    n: 3,
    opts: { ...BASE, weightDecay: 0.1, maxGradNorm: 0.5 },
    steps: [
      { lr: 1e-2, gradScale: 1, gradMag: 1, clipped: true },
      { lr: 1e-2, gradScale: 0.1, gradMag: 0.1, clipped: false },
    ],
  },
  {
    name: 'n=1300003 (more vec4s than 1024 workgroups x 256 threads: threads loop; tail of 3)',
    n: 1300003,
    opts: { ...BASE, weightDecay: 0.01, maxGradNorm: 1 },
    steps: [
      { lr: 1e-3, gradScale: 0.5, gradMag: 0.01, clipped: true },
      { lr: 1e-3, gradScale: 0.5, gradMag: 1e-4, clipped: false },
    ],
  },
];

/** The grads of step `k` of a case (seeded), with the padding zeroed. */
function gradsOf(c: Case, k: number): Float32Array {
  const gr = randomArray(c.n, 1000 + 17 * k + c.n, c.steps[k].gradMag);
  if (c.n > PAD[1]) gr.fill(0, ...PAD);
  return gr;
}

function initialParams(n: number): Float32Array {
  const p = randomArray(n, 7 + n, 0.5);
  if (n > PAD[1]) p.fill(0, ...PAD);
  return p;
}

function write(t: TrackedBuffer, data: Float32Array): void {
  g.ctx.device.queue.writeBuffer(t.buffer, 0, data.buffer, data.byteOffset, data.byteLength);
}

/** Largest |x|, for the absolute part of a tolerance. */
function maxAbs(a: ArrayLike<number>): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]));
  return w;
}

/** Run every step of `c` on the GPU; with `check`, compare each step against the reference. */
async function runCase(c: Case, check: boolean): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array; norms: number[] }> {
  const params = g.buffers.upload('params', initialParams(c.n));
  const grads = g.buffers.create('grads', c.n * 4);
  const opt = new AdamW(g, params, grads, c.n, c.opts);
  const ref = adamwStateRef(initialParams(c.n));
  const norms: number[] = [];
  for (let k = 0; k < c.steps.length; k++) {
    const { lr, gradScale, clipped } = c.steps[k];
    const gr = gradsOf(c, k);
    write(grads, gr);
    await g.run((enc) => opt.step(enc, { lr, step: k + 1, gradScale }));
    norms.push(await opt.lastGradNorm());
    if (!check) continue;
    const refNorm = adamwStepRef(ref, gr, { lr, step: k + 1, gradScale }, c.opts);
    expect(refNorm > c.opts.maxGradNorm, `step ${k + 1}: norm ${refNorm} vs maxGradNorm`).toBe(clipped);
    expect(Math.abs(norms[k] - refNorm), `step ${k + 1} norm`).toBeLessThanOrEqual(1e-6 * refNorm);
    const p = await g.f32(params, c.n);
    const { m, v } = await opt.state();
    expect(maxViolation(p, ref.p, 1e-5, 1e-7 * maxAbs(ref.p)), `step ${k + 1} params`).toBeLessThanOrEqual(1);
    expect(maxViolation(m, ref.m, 1e-5, 1e-6 * maxAbs(ref.m)), `step ${k + 1} m`).toBeLessThanOrEqual(1);
    expect(maxViolation(v, ref.v, 1e-5, 0), `step ${k + 1} v`).toBeLessThanOrEqual(1);
    expect(
      (await g.f32(grads, c.n)).every((x) => x === 0),
      `step ${k + 1}: grads zeroed`,
    ).toBe(true);
    if (c.n > PAD[1]) {
      for (const a of [p, m, v])
        expect(
          a.subarray(...PAD).every((x) => x === 0),
          `step ${k + 1}: padding stays 0`,
        ).toBe(true);
    }
  }
  const out = { params: await g.f32(params, c.n), ...(await opt.state()), norms };
  opt.destroy();
  g.buffers.destroy(params);
  g.buffers.destroy(grads);
  return out;
}

describe('AdamW step (gradnorm + clip + AdamW + zero grads) vs float64 reference', () => {
  for (const c of CASES) it(c.name, () => runCase(c, true).then(() => undefined));
});

it('deterministic: two identical runs give bit-identical params, moments and norms', async () => {
  const c = CASES.find((x) => x.n === 70001)!;
  const a = await runCase(c, false);
  const b = await runCase(c, false);
  for (const k of ['params', 'm', 'v'] as const) {
    expect(new Uint32Array(a[k].buffer)).toEqual(new Uint32Array(b[k].buffer));
  }
  expect(a.norms).toEqual(b.norms);
});

it('state() / loadState(): a restored optimizer continues bit-identically', async () => {
  const n = 1001;
  const opts: AdamWOptions = { weightDecay: 0.01 };
  const mk = () => {
    const params = g.buffers.upload('params', initialParams(n));
    const grads = g.buffers.create('grads', n * 4);
    return { params, grads, opt: new AdamW(g, params, grads, n, opts) };
  };
  const a = mk();
  for (let s = 1; s <= 2; s++) {
    write(a.grads, randomArray(n, 90 + s, 0.3));
    await g.run((enc) => a.opt.step(enc, { lr: 1e-2, step: s, gradScale: 0.5 }));
  }
  const b = mk();
  write(b.params, await g.f32(a.params, n));
  b.opt.loadState(await a.opt.state());
  for (const x of [a, b]) {
    write(x.grads, randomArray(n, 93, 0.3));
    await g.run((enc) => x.opt.step(enc, { lr: 1e-2, step: 3, gradScale: 0.5 }));
  }
  expect(new Uint32Array((await g.f32(b.params, n)).buffer)).toEqual(new Uint32Array((await g.f32(a.params, n)).buffer));
  const [sa, sb] = [await a.opt.state(), await b.opt.state()];
  expect(sb.m).toEqual(sa.m);
  expect(sb.v).toEqual(sa.v);
  expect(() => b.opt.loadState({ m: new Float32Array(n), v: new Float32Array(n - 1) })).toThrow(
    'AdamW.loadState: v has 1000 floats, expected n = 1001',
  );
  for (const x of [a, b]) x.opt.destroy();
});

it('owns m, v, partials, stats and uniforms through the BufferManager; destroy() frees them', async () => {
  const n = 70001;
  const params = g.buffers.create('params', n * 4);
  const grads = g.buffers.create('grads', n * 4);
  const before = g.buffers.current;
  const opt = new AdamW(g, params, grads, n);
  // m, v: n floats each; partials: ceil(floor(n/4) / 16) = 1094 floats; stats: 1 float; uniforms 16 + 48 bytes.
  expect(g.buffers.current - before).toBe(2 * n * 4 + 1094 * 4 + 4 + 16 + 48);
  expect(await opt.lastGradNorm()).toBe(0);
  opt.destroy();
  expect(g.buffers.current).toBe(before);
});

describe('argument checks', () => {
  it('constructor', () => {
    const params = g.buffers.create('params', 400);
    const grads = g.buffers.create('grads', 396);
    expect(() => new AdamW(g, params, grads, 0)).toThrow('AdamW: n must be a positive integer (got 0)');
    expect(() => new AdamW(g, params, grads, 100)).toThrow('AdamW: buffer "grads" holds 396 bytes, fewer than n = 100 floats (400 bytes)');
    expect(() => new AdamW(g, params, grads, 99, { beta2: 1 })).toThrow('AdamW: beta2 must be in [0, 1) (got 1)');
    expect(() => new AdamW(g, params, grads, 99, { eps: 0 })).toThrow('AdamW: eps must be a finite number > 0 (got 0)');
    expect(() => new AdamW(g, params, grads, 99, { weightDecay: -0.1 })).toThrow(
      'AdamW: weightDecay must be a finite number >= 0 (got -0.1)',
    );
    expect(() => new AdamW(g, params, grads, 99, { maxGradNorm: NaN })).toThrow(
      'AdamW: maxGradNorm must be a finite number (<= 0 disables clipping) (got NaN)',
    );
  });

  it('step', async () => {
    const params = g.buffers.create('params', 400);
    const grads = g.buffers.create('grads', 400);
    const opt = new AdamW(g, params, grads, 100);
    const enc = g.ctx.device.createCommandEncoder();
    await expect(opt.step(enc, { lr: -1, step: 1, gradScale: 1 })).rejects.toThrow('AdamW.step: lr must be a finite number >= 0 (got -1)');
    await expect(opt.step(enc, { lr: 1e-3, step: 0, gradScale: 1 })).rejects.toThrow('AdamW.step: step must be an integer >= 1 (got 0)');
    await expect(opt.step(enc, { lr: 1e-3, step: 1, gradScale: 0 })).rejects.toThrow(
      'AdamW.step: gradScale must be a finite number > 0 (got 0)',
    );
    opt.destroy();
  });
});
