/**
 * AdamW over the flat LoRA parameter buffer, entirely on the GPU.
 *
 * All LoRA parameters of a model live in one f32 buffer `params` of n floats, with a same-size
 * `grads` buffer into which the backward pass sums the gradients of every micro-batch of an
 * optimizer step. One `step` records two kernels into the caller's encoder:
 *   1. gradnorm.wgsl: the global L2 norm of gradScale * grads into `stats` (two deterministic
 *      reduction passes; no readback, so the step does not stall the queue);
 *   2. adamw.wgsl: clip by that norm (torch's clip_grad_norm_), AdamW update of params, m, v
 *      (torch.optim.AdamW semantics), and grads zeroed for the next step's accumulation.
 * The optimizer owns m, v, the norm's partial sums, `stats` and its two uniform buffers, all
 * allocated through the engine's BufferManager so their bytes are counted.
 */
import { STORAGE, UNIFORM, type TrackedBuffer } from '../engine/buffers.ts';
import type { Engine } from '../engine/engine.ts';
import { grid1d } from '../engine/ops.ts';

/** AdamW hyper-parameters (torch.optim.AdamW names and defaults, except `maxGradNorm`). */
export interface AdamWOptions {
  /** Decay of the first moment (default 0.9). */
  beta1?: number;
  /** Decay of the second moment (default 0.999). */
  beta2?: number;
  /** Added to sqrt(v^) in the denominator (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay: p -= lr * weightDecay * p before the Adam update (default 0). */
  weightDecay?: number;
  /** Clip the global gradient norm to this (torch's clip_grad_norm_); <= 0 disables clipping (default 1.0). */
  maxGradNorm?: number;
}

/** Per-step arguments of `AdamW.step`. */
export interface AdamWStepArgs {
  /** Learning rate of this step (e.g. from `cosineWithWarmup`). */
  lr: number;
  /** 1-based optimizer step number t, for the bias corrections 1 - beta^t. */
  step: number;
  /** Factor applied to the accumulated `grads` before clipping, e.g. 1 / (micro-batches per step). */
  gradScale: number;
}

/** Optimizer moments, as read back by `state()` and restored by `loadState()`. */
export interface AdamWState {
  m: Float32Array;
  v: Float32Array;
}

const MAP_READ = 0x1; // GPUMapMode.READ and GPUBufferUsage.MAP_READ
const COPY_DST = 0x8; // GPUBufferUsage.COPY_DST

/** Threads per workgroup of gradnorm.wgsl's first pass (PART_WG). */
const PART_WG = 64;
/** vec4s a thread of gradnorm's first pass sums at least, before more threads (= partial sums) are added. */
const VEC4_PER_PART = 16;
/** Cap on gradnorm's first-pass threads (= partial sums); past it, each thread sums more. */
const MAX_PARTS = 4096;

/**
 * AdamW state (m, v start at zero) for one flat parameter buffer. Usage per optimizer step:
 * accumulate the micro-batch gradients into `grads`, `await opt.step(enc, { lr, step, gradScale })`
 * (into the encoder of the step's last backward pass: one submit), `recordNormReadback(enc)`,
 * submit `enc`, then read the norm with the function it returned (or `lastGradNorm()` later).
 */
export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly maxGradNorm: number;
  private readonly m: TrackedBuffer;
  private readonly v: TrackedBuffer;
  private readonly parts: TrackedBuffer;
  private readonly stats: TrackedBuffer;
  private readonly normUniform: TrackedBuffer;
  private readonly adamUniform: TrackedBuffer;
  /** vec4s read by gradnorm's first pass (floor(n/4)); the n % 4 tail is summed in its second. */
  private readonly n4: number;
  /** Threads (and partial sums) of gradnorm's first pass; 0 when n < 4. */
  private readonly nParts: number;
  /** The gradScale the norm's uniform holds (NaN before the first step). */
  private normScale = Number.NaN;
  /** Pipelines and bind groups, made on the first step (pipeline creation is async). */
  private passes: { partial: Pass | null; finish: Pass; adamw: Pass } | null = null;

  /**
   * @param params the flat LoRA parameters, n floats (f32)
   * @param grads the flat gradient accumulator, n floats; zeroed by every `step`
   * @param n number of floats updated (the buffers may be larger)
   */
  constructor(
    private readonly engine: Engine,
    private readonly params: TrackedBuffer,
    private readonly grads: TrackedBuffer,
    readonly n: number,
    opts: AdamWOptions = {},
  ) {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`AdamW: n must be a positive integer (got ${n})`);
    for (const b of [params, grads]) {
      if (b.size < n * 4)
        throw new RangeError(`AdamW: buffer "${b.label}" holds ${b.size} bytes, fewer than n = ${n} floats (${n * 4} bytes)`);
    }
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    this.maxGradNorm = opts.maxGradNorm ?? 1.0;
    for (const [name, b] of [
      ['beta1', this.beta1],
      ['beta2', this.beta2],
    ] as const) {
      if (!(b >= 0 && b < 1)) throw new RangeError(`AdamW: ${name} must be in [0, 1) (got ${b})`);
    }
    if (!(this.eps > 0 && Number.isFinite(this.eps))) throw new RangeError(`AdamW: eps must be a finite number > 0 (got ${this.eps})`);
    if (!(this.weightDecay >= 0 && Number.isFinite(this.weightDecay))) {
      throw new RangeError(`AdamW: weightDecay must be a finite number >= 0 (got ${this.weightDecay})`);
    }
    if (!Number.isFinite(this.maxGradNorm))
      throw new RangeError(`AdamW: maxGradNorm must be a finite number (<= 0 disables clipping) (got ${this.maxGradNorm})`);

    this.n4 = Math.floor(n / 4);
    this.nParts = Math.min(Math.ceil(this.n4 / VEC4_PER_PART), MAX_PARTS);
    const bufs = engine.buffers;
    this.m = bufs.create('adamw m', n * 4, STORAGE);
    this.v = bufs.create('adamw v', n * 4, STORAGE);
    this.parts = bufs.create('gradnorm partials', this.nParts * 4, STORAGE);
    this.stats = bufs.create('gradnorm stats', 4, STORAGE);
    this.normUniform = bufs.create('gradnorm uniform', 16, UNIFORM);
    this.adamUniform = bufs.create('adamw uniform', 48, UNIFORM);
  }

  /**
   * Record one optimizer step into `enc`: gradient norm, clipping, AdamW update, grads zeroed.
   * The step's uniforms are written with `queue.writeBuffer` when this is called, so submit
   * `enc` before calling `step` again.
   */
  async step(enc: GPUCommandEncoder, a: AdamWStepArgs): Promise<void> {
    if (!(a.lr >= 0 && Number.isFinite(a.lr))) throw new RangeError(`AdamW.step: lr must be a finite number >= 0 (got ${a.lr})`);
    if (!Number.isInteger(a.step) || a.step < 1) throw new RangeError(`AdamW.step: step must be an integer >= 1 (got ${a.step})`);
    if (!(a.gradScale > 0 && Number.isFinite(a.gradScale)))
      throw new RangeError(`AdamW.step: gradScale must be a finite number > 0 (got ${a.gradScale})`);
    const passes = this.passes ?? (this.passes = await this.makePasses());
    const queue = this.engine.ctx.device.queue;

    if (a.gradScale !== this.normScale) {
      // Only the scale changes (with the micro-batches of a step, at most at the run's last step).
      const nu = new DataView(new ArrayBuffer(16));
      nu.setUint32(0, this.n, true);
      nu.setUint32(4, this.n4, true);
      nu.setUint32(8, this.nParts, true);
      nu.setFloat32(12, a.gradScale, true);
      queue.writeBuffer(this.normUniform.buffer, 0, nu.buffer);
      this.normScale = a.gradScale;
    }

    // Everything derived from the hyper-parameters in f64, rounded once to f32 by the uniform.
    const b1 = this.beta1,
      b2 = this.beta2;
    const au = new DataView(new ArrayBuffer(48));
    au.setUint32(0, this.n, true);
    [
      a.lr * this.weightDecay,
      b1,
      1 - b1,
      b2,
      1 - b2,
      a.lr / (1 - b1 ** a.step),
      1 / Math.sqrt(1 - b2 ** a.step),
      this.eps,
      a.gradScale,
      this.maxGradNorm,
    ].forEach((x, i) => au.setFloat32(4 + i * 4, x, true));
    queue.writeBuffer(this.adamUniform.buffer, 0, au.buffer);

    if (passes.partial) record(enc, passes.partial, [Math.ceil(this.nParts / PART_WG), 1], 'gradnorm.partial');
    record(enc, passes.finish, [1, 1], 'gradnorm.finish');
    record(enc, passes.adamw, grid1d(this.n), 'adamw');
  }

  /** The norm of gradScale * grads (before clipping) of the last submitted step (0 before any); for metrics. */
  async lastGradNorm(): Promise<number> {
    return (await this.engine.buffers.readF32(this.stats, 1))[0];
  }

  /**
   * Record into `enc`, after `step`, the copy of the step's gradient norm into a mappable buffer;
   * once `enc` is submitted, the returned function reads it (no submit of its own).
   */
  recordNormReadback(enc: GPUCommandEncoder): () => Promise<number> {
    const staging = this.engine.ctx.device.createBuffer({ label: 'gradnorm stats:readback', size: 4, usage: MAP_READ | COPY_DST });
    enc.copyBufferToBuffer(this.stats.buffer, 0, staging, 0, 4);
    return async () => {
      await staging.mapAsync(MAP_READ);
      const norm = new Float32Array(staging.getMappedRange())[0];
      staging.destroy();
      return norm;
    };
  }

  /** Copy the moments back to the host (for checkpoints). */
  async state(): Promise<AdamWState> {
    return { m: await this.engine.buffers.readF32(this.m, this.n), v: await this.engine.buffers.readF32(this.v, this.n) };
  }

  /** Restore moments saved by `state()` (the caller passes the matching step numbers on). */
  loadState(s: AdamWState): void {
    for (const [name, x] of [
      ['m', s.m],
      ['v', s.v],
    ] as const) {
      if (x.length !== this.n) throw new RangeError(`AdamW.loadState: ${name} has ${x.length} floats, expected n = ${this.n}`);
    }
    const queue = this.engine.ctx.device.queue;
    queue.writeBuffer(this.m.buffer, 0, s.m.buffer, s.m.byteOffset, s.m.byteLength);
    queue.writeBuffer(this.v.buffer, 0, s.v.buffer, s.v.byteOffset, s.v.byteLength);
  }

  /** Free the buffers the optimizer owns (params and grads belong to the caller). */
  destroy(): void {
    for (const b of [this.m, this.v, this.parts, this.stats, this.normUniform, this.adamUniform]) this.engine.buffers.destroy(b);
    this.passes = null;
  }

  private async makePasses(): Promise<{ partial: Pass | null; finish: Pass; adamw: Pass }> {
    const { pipelines, ctx } = this.engine;
    const source = (name: string) => () => pipelines.source(name);
    const pass = (pipeline: GPUComputePipeline, label: string, entries: [number, TrackedBuffer, number][]): Pass => ({
      pipeline,
      bind: ctx.device.createBindGroup({
        label,
        layout: pipeline.getBindGroupLayout(0),
        entries: entries.map(([binding, t, size]) => ({ binding, resource: { buffer: t.buffer, size } })),
      }),
    });
    const bytes = this.n * 4;
    const partial =
      this.nParts > 0
        ? pass(await pipelines.get('gradnorm', 'gradnorm', source('gradnorm'), 'partial'), 'gradnorm.partial', [
            [0, this.normUniform, 16],
            [1, this.grads, this.n4 * 16],
            [2, this.parts, this.nParts * 4],
          ])
        : null;
    const finish = pass(await pipelines.get('gradnorm', 'gradnorm', source('gradnorm'), 'finish'), 'gradnorm.finish', [
      [0, this.normUniform, 16],
      [2, this.parts, this.parts.size],
      [3, this.grads, bytes],
      [4, this.stats, 4],
    ]);
    const adamw = pass(await pipelines.get('adamw', 'adamw', source('adamw')), 'adamw', [
      [0, this.adamUniform, 48],
      [1, this.params, bytes],
      [2, this.grads, bytes],
      [3, this.m, bytes],
      [4, this.v, bytes],
      [5, this.stats, 4],
    ]);
    return { partial, finish, adamw };
  }
}

/** A pipeline with its (fixed) bind group. */
interface Pass {
  pipeline: GPUComputePipeline;
  bind: GPUBindGroup;
}

function record(enc: GPUCommandEncoder, p: Pass, groups: [number, number], label: string): void {
  const pass = enc.beginComputePass({ label });
  pass.setPipeline(p.pipeline);
  pass.setBindGroup(0, p.bind);
  pass.dispatchWorkgroups(groups[0], groups[1]);
  pass.end();
}
