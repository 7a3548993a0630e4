/**
 * Per-adapter kernel tuning: time a few register-tile shapes of the hot kernels on the model's
 * own shapes and keep the fastest (docs/architecture.md §3b: the best shape differs by an order of
 * magnitude between SwiftShader and real GPUs). Takes a few seconds; callers cache the result
 * per adapter.
 */
import type { Engine } from './engine.ts';
import { GpuMemoryError } from '../errors.ts';
import type { AdapterSummary } from './gpu.ts';
import { DEFAULT_TUNING, Ops, type GpuWeight, type Tuning } from './ops.ts';
import { quantize, type QuantFormat } from '../model/quant.ts';

export const MATMUL_CANDIDATES: Tuning['matmul'][] = [
  { TM: 4, TN: 4, WGX: 8, WGY: 8 },
  { TM: 8, TN: 8, WGX: 8, WGY: 8 },
  { TM: 16, TN: 8, WGX: 4, WGY: 16 },
  { TM: 16, TN: 12, WGX: 8, WGY: 8 },
];

export const LMHEAD_CANDIDATES: Tuning['lmhead'][] = [
  { TM: 4, TN: 4, WGX: 16, WGY: 4 },
  { TM: 8, TN: 8, WGX: 16, WGY: 4 },
  { TM: 8, TN: 8, WGX: 8, WGY: 8 },
];

/** The shapes tuning measures: T tokens of a model with hidden C, FFN F and vocabulary V. */
export interface TuningShape {
  T: number;
  C: number;
  F: number;
  V: number;
}

export interface TuneResult {
  tuning: Tuning;
  /** GFLOP/s of every candidate, in candidate order. */
  matmul: Array<{ tile: Tuning['matmul']; gflops: number }>;
  lmhead: Array<{ tile: Tuning['lmhead']; gflops: number }>;
}

/** Median wall time (ms) of `fn` over `reps` runs after one warm-up (which also compiles). */
export async function medianMs(engine: Engine, fn: () => Promise<void>, reps = 3): Promise<number> {
  await fn();
  await engine.ctx.device.queue.onSubmittedWorkDone();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    await engine.ctx.device.queue.onSubmittedWorkDone();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}

function syntheticWeight(engine: Engine, rows: number, cols: number, format: QuantFormat): GpuWeight {
  const q = quantize(
    new Float32Array(rows * cols).map((_, i) => Math.sin(i) * 0.05),
    rows,
    cols,
    format,
  );
  return {
    format,
    rows,
    cols,
    data: engine.buffers.upload('tune w', q.data),
    scales: q.scales ? engine.buffers.upload('tune w.scales', q.scales) : null,
  };
}

/**
 * Pick the fastest matmul and lm-head tiles for T tokens of a model with hidden C, FFN F,
 * vocabulary V (the lm-head is timed on min(V, 8192) columns to keep tuning short).
 * `onProgress` gets the fraction of candidates timed.
 */
export async function tuneKernels(
  engine: Engine,
  shape: TuningShape,
  format: QuantFormat,
  onProgress?: (fraction: number) => void,
): Promise<TuneResult> {
  const { T, C, F } = shape;
  const V = Math.min(shape.V, 8192);
  const b = engine.buffers;
  const opsWith = (t: Partial<Tuning>) => new Ops(engine.ctx.device, engine.pipelines, b, { ...DEFAULT_TUNING, ...t });
  const w = syntheticWeight(engine, F, C, format);
  const x = b.create('tune x', T * C * 4);
  const out = b.create('tune out', T * F * 4);
  const matmul: TuneResult['matmul'] = [];
  for (const tile of MATMUL_CANDIDATES) {
    const ops = opsWith({ matmul: tile });
    const reps = 4;
    const ms = await medianMs(engine, async () => {
      const enc = engine.ctx.device.createCommandEncoder();
      for (let i = 0; i < reps; i++) await ops.matmul(enc, { x, w, out, T });
      engine.ctx.device.queue.submit([enc.finish()]);
    });
    matmul.push({ tile, gflops: (2 * T * F * C * reps) / ms / 1e6 });
    onProgress?.(matmul.length / (MATMUL_CANDIDATES.length + LMHEAD_CANDIDATES.length));
  }
  const head = syntheticWeight(engine, V, C, format === 'f32' ? 'f32' : 'q8');
  const rows = b.upload(
    'tune rows',
    Uint32Array.from({ length: T }, (_, i) => i),
  );
  const lse = b.create('tune lse', T * 4);
  const logp = b.create('tune logp', T * 4);
  const log1mq = b.create('tune log1mq', T * 4);
  const lmhead: TuneResult['lmhead'] = [];
  for (const tile of LMHEAD_CANDIDATES) {
    const ops = opsWith({ lmhead: tile });
    const scratch = ops.lmheadScratch(T, V);
    const ms = await medianMs(engine, async () => {
      const enc = engine.ctx.device.createCommandEncoder();
      await ops.lmhead(enc, { h: x, rows, targets: rows, R: T, w: head, lse, logp, log1mq, scratch });
      engine.ctx.device.queue.submit([enc.finish()]);
    });
    lmhead.push({ tile, gflops: (2 * T * V * C) / ms / 1e6 });
    onProgress?.((matmul.length + lmhead.length) / (MATMUL_CANDIDATES.length + LMHEAD_CANDIDATES.length));
    b.destroy(scratch.part);
    b.destroy(scratch.tlogit);
  }
  for (const t of [w.data, w.scales, head.data, head.scales, x, out, rows, lse, logp, log1mq]) b.destroy(t);
  const best = <T extends { gflops: number }>(list: T[]) => list.reduce((a, c) => (c.gflops > a.gflops ? c : a));
  return { tuning: { ...DEFAULT_TUNING, matmul: best(matmul).tile, lmhead: best(lmhead).tile }, matmul, lmhead };
}

/** Bump when a tuned kernel changes, so choices cached by an older build are measured again. */
export const TUNING_VERSION = 1;

/** Tokens the cached choice is measured on (a typical training sequence). */
export const TUNING_TOKENS = 256;

/** Where a host keeps tuning choices (IndexedDB in the app, a JSON file for the CLI). */
export interface TuningCache {
  get(key: string): Promise<unknown>;
  set(key: string, tuning: Tuning): Promise<void>;
}

/** Cache key: the kernels' version, the adapter, the weight format and the model's widths. */
export function tuningKey(adapter: AdapterSummary, shape: Omit<TuningShape, 'T'>, format: QuantFormat): string {
  return [
    `v${TUNING_VERSION}`,
    adapter.vendor,
    adapter.architecture,
    adapter.device,
    adapter.description,
    format,
    shape.C,
    shape.F,
    Math.min(shape.V, 8192),
  ].join('|');
}

const sameTile = (a: object, b: object) => JSON.stringify(a) === JSON.stringify(b);

/** A cached value is used only if it is a tuning whose tiles are among today's candidates. */
export function isCachedTuning(v: unknown): v is Tuning {
  const t = v as Partial<Tuning> | null;
  if (typeof t !== 'object' || t === null || !t.matmul || !t.lmhead) return false;
  return (
    MATMUL_CANDIDATES.some((c) => sameTile(c, t.matmul!)) &&
    LMHEAD_CANDIDATES.some((c) => sameTile(c, t.lmhead!)) &&
    sameTile({ ...t, matmul: 0, lmhead: 0 }, { ...DEFAULT_TUNING, matmul: 0, lmhead: 0 })
  );
}

/**
 * The tile shapes for this adapter and model (docs/architecture.md §3b): the cached choice, or a short
 * measurement now (`tuneKernels`, a few seconds) that is then cached. A cache that cannot be read
 * or written costs a measurement, never the run.
 */
export async function tuningFor(
  engine: Engine,
  cache: TuningCache,
  shape: Omit<TuningShape, 'T'>,
  format: QuantFormat,
  onProgress?: (fraction: number) => void,
): Promise<{ tuning: Tuning; source: 'cached' | 'measured' | 'default' }> {
  const key = tuningKey(engine.ctx.adapter, shape, format);
  const cached = await cache.get(key).catch(() => undefined);
  if (isCachedTuning(cached)) return { tuning: cached, source: 'cached' };
  let tuning: Tuning;
  try {
    ({ tuning } = await tuneKernels(engine, { ...shape, T: TUNING_TOKENS }, format, onProgress));
  } catch (e) {
    if (e instanceof GpuMemoryError) return { tuning: DEFAULT_TUNING, source: 'default' }; // a tight memory budget: no room to measure
    throw e;
  }
  await cache.set(key, tuning).catch(() => undefined);
  return { tuning, source: 'measured' };
}
