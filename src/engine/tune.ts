/**
 * Per-adapter kernel tuning: time a few register-tile shapes of the hot kernels, the attention
 * variants (shared-memory tiles, barrier-free rows), decode's one-row shapes and its attention's threads per head on the model's own shapes and keep the fastest (docs/architecture.md §3b: the best shape differs by an order of
 * magnitude between SwiftShader and real GPUs). Takes a few seconds; callers cache the result
 * per adapter.
 */
import type { Engine } from './engine.ts';
import { GpuMemoryError } from '../errors.ts';
import type { AdapterSummary } from './gpu.ts';
import type { TrackedBuffer } from './buffers.ts';
import {
  DECODE_ATTENTION_CANDIDATES,
  type DecodeAttentionTile,
  DEFAULT_TUNING,
  MATVEC_VARIANTS,
  matvecVariantsOn,
  Ops,
  type GpuWeight,
  type MatmulTile,
  type MatvecTile,
  type Tuning,
} from './ops.ts';
import type { LlamaConfig } from '../model/config.ts';
import { quantize, type QuantFormat } from '../model/quant.ts';

/**
 * Forward matmul tiles (`MatmulTile`): register tiles from 64-thread workgroups (one 64 x 32 or
 * 128 x 96 block per workgroup) down to 8 or 16 threads (many small workgroups: on SwiftShader,
 * where a workgroup runs on one CPU thread, these fill the cores and waste little on clamped rows
 * at the small widths of a small model); a 64 x 64 workgroup-memory tile (what discrete GPUs run
 * fast), also in f16 where the adapter has shader-f16; a split-K tile summed with subgroup
 * operations where it has subgroups (`matmulCandidates` picks those the adapter can run). Few, since
 * each is compiled (once per weight format) at first use.
 */
export const MATMUL_CANDIDATES: MatmulTile[] = [
  { variant: 'regs', TM: 4, TN: 4, WGX: 8, WGY: 8 },
  { variant: 'regs', TM: 16, TN: 12, WGX: 8, WGY: 8 },
  { variant: 'regs', TM: 16, TN: 4, WGX: 4, WGY: 4 },
  { variant: 'regs', TM: 16, TN: 8, WGX: 2, WGY: 4 },
  { variant: 'shared', TM: 4, TN: 4, WGX: 16, WGY: 16, f16: false },
  { variant: 'shared', TM: 4, TN: 4, WGX: 16, WGY: 16, f16: true },
  { variant: 'subgroup', TM: 4, TN: 4, WG: 32 },
];

/**
 * Subgroups narrower than this cannot pay for a split-K tile's reduction: SwiftShader's are 4 lanes,
 * where the subgroup tile measured 0.01 GFLOP/s against the register tiles' 0.27 (docs/architecture.md
 * §3b), and timing it on a model's widths would cost the first use minutes.
 */
export const SUBGROUP_TILE_MIN_LANES = 8;

/**
 * The matmul tiles worth timing on an adapter: f16 tiles need shader-f16; subgroup tiles need
 * subgroups of at least `SUBGROUP_TILE_MIN_LANES` lanes (an adapter that does not say how wide its
 * subgroups are, `subgroupMinSize` 0, gets them timed).
 */
export function matmulCandidates(adapter: Pick<AdapterSummary, 'features' | 'subgroupMinSize'>): MatmulTile[] {
  const { features, subgroupMinSize } = adapter;
  const wideSubgroups = features.subgroups && (subgroupMinSize === 0 || subgroupMinSize >= SUBGROUP_TILE_MIN_LANES);
  return MATMUL_CANDIDATES.filter((t) =>
    t.variant === 'subgroup' ? wideSubgroups : t.variant === 'shared' && t.f16 ? features.shaderF16 : true,
  );
}

/**
 * Input-gradient tiles (matmul_dx.wgsl), from 64-thread workgroups down to 4 threads, as for the
 * forward. 16 × 16 a thread on 4 threads: on SwiftShader 6.2–7.0 GFLOP/s against 16 × 8's 3.7–4.7
 * on the lm-head's g = dz' W at SmolLM2's width (T 256, V 8192, C 576, q8). (32 × 16 measured 9 %
 * faster still but took 10 s to compile against 3.5 s at first use.)
 */
export const MATMUL_DX_CANDIDATES: Tuning['matmulDx'][] = [
  { TM: 8, TK: 8, WGX: 8, WGY: 8 },
  { TM: 16, TK: 4, WGX: 4, WGY: 4 },
  { TM: 16, TK: 8, WGX: 2, WGY: 4 },
  { TM: 16, TK: 16, WGX: 1, WGY: 4 },
];

/**
 * LoRA weight-gradient tiles (matmul_tn.wgsl, a reduction over the pass's tokens): the 4 × 4 default
 * (64 threads), and 8 × 8 or 8 × 4 a thread over 16 threads, which read each token's rows once for
 * four times the products (on SwiftShader 2–2.6× the default on the toy model's dA and dB).
 */
export const MATMUL_TN_CANDIDATES: Tuning['matmulTn'][] = [
  { TM: 4, TP: 4, WGX: 4, WGY: 16 },
  { TM: 8, TP: 8, WGX: 2, WGY: 8 },
  { TM: 8, TP: 4, WGX: 4, WGY: 4 },
];

/** The LoRA rank the tuner's mix of shapes assumes for the adapters' narrow matmuls (LoRA A and B). */
const TUNING_LORA_RANK = 16;

export const LMHEAD_CANDIDATES: Tuning['lmhead'][] = [
  { TM: 4, TN: 4, WGX: 16, WGY: 4 },
  { TM: 8, TN: 8, WGX: 16, WGY: 4 },
  { TM: 8, TN: 8, WGX: 8, WGY: 8 },
  // 128 rows × 64 vocabulary columns a workgroup (as many partials as the default's 64 columns):
  // on SwiftShader ≈ 1.6–1.9× the 8×8 tiles at the SmolLM2 width (docs/architecture.md §3c).
  { TM: 16, TN: 8, WGX: 8, WGY: 8 },
  { TM: 16, TN: 8, WGX: 8, WGY: 4 },
  // 16 vocabulary columns a thread on 1 × 4 threads: on SwiftShader 5.0–5.5 GFLOP/s against 16 × 8's
  // 3.5–4.6 at SmolLM2's width (T 256, V 8192, C 576, q8). (32 × 16 on 2 × 2 measured 10–15 % faster
  // still but took 15 s to compile against 5 s.)
  { TM: 16, TN: 16, WGX: 1, WGY: 4 },
];

/** Attention variants (`Tuning['attention']`): the shared-memory tiles for GPUs, barrier-free rows for SwiftShader. */
export const ATTENTION_CANDIDATES: Tuning['attention'][] = [
  { variant: 'tiled', BQ: 32, BK: 16 },
  { variant: 'rows', WG: 16, RT: 4 },
  { variant: 'rows', WG: 4, RT: 4 },
];

/** Attention heads of a model: H query heads and KVH key/value heads of width D. */
export interface AttentionShape {
  H: number;
  KVH: number;
  D: number;
}

/**
 * The shapes tuning measures: T tokens of a model with hidden C, FFN F and vocabulary V; attention
 * on `heads`, else on C/64 heads of 64 (the variant that wins is a property of the adapter more
 * than of the heads).
 */
export interface TuningShape {
  T: number;
  C: number;
  F: number;
  V: number;
  heads?: AttentionShape;
}

export interface TuneResult {
  tuning: Tuning;
  /** GFLOP/s of every candidate the adapter can run over one layer's matmul shapes, in candidate order. */
  matmul: Array<{ tile: MatmulTile; gflops: number }>;
  /** GFLOP/s of every input-gradient tile over the layer's shapes and the lm-head's (its V columns), in candidate order. */
  matmulDx: Array<{ tile: Tuning['matmulDx']; gflops: number }>;
  /** GFLOP/s of each weight-gradient tile over a layer's LoRA dA and dB shapes, in candidate order. */
  matmulTn: Array<{ tile: Tuning['matmulTn']; gflops: number }>;
  lmhead: Array<{ tile: Tuning['lmhead']; gflops: number }>;
  /** Milliseconds of one attention forward + backward per variant, in candidate order. */
  attention: Array<{ tile: Tuning['attention']; ms: number }>;
  /** Milliseconds of one row through the layer's projections and the lm-head per one-row shape, in `matvecVariantsOn` order. */
  matvec: Array<{ tile: MatvecTile; ms: number }>;
  /** Milliseconds of one decode step's attention (one row against T cached keys) per threads per head, in candidate order. */
  decodeAttention: Array<{ tile: DecodeAttentionTile; ms: number }>;
}

/**
 * Median wall time (ms) of `fn` over `reps` runs after one warm-up (which also compiles): one thing
 * timed alone (the benches' steps); candidates that compete are raced instead (`raceMs`).
 */
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

/** How `raceMs` runs a candidate: waits for the work it submitted, and reads the time. */
export interface RaceClock {
  /** Resolves when the device has done the work submitted so far. */
  settle(): Promise<unknown>;
  /** Milliseconds, from any origin. */
  now(): number;
}

/** The clock of `engine`'s device: its queue's onSubmittedWorkDone and `performance.now()`. */
function deviceClock(engine: Engine): RaceClock {
  return { settle: () => engine.ctx.device.queue.onSubmittedWorkDone(), now: () => performance.now() };
}

/**
 * Median wall time (ms) of each of `runs`, timed in interleaved rounds: a warm-up each (which also
 * compiles), then `reps` rounds in which every candidate still racing runs once, the order rotated
 * by one each round. A machine whose speed drifts while the candidates are timed (a shared host,
 * a CPU's clocks) then slows them alike, where timing one candidate's runs after another's charged
 * the drift to whichever came later (on SwiftShader the decode attention's 4 and 16 threads a head
 * swapped places from run to run that way: 6.2 vs 9.7 ms in one run, 12.3 vs 9.9 in the next).
 * A candidate over `giveUpFactor` × the quickest in the first round runs no more (it cannot win, and
 * on a slow adapter it is what the time goes to): its time is that round's. `onDone` is called once
 * per candidate, when it has run its last.
 */
export async function raceMs(
  clock: RaceClock,
  runs: Array<() => Promise<void>>,
  { reps = 3, giveUpFactor = Infinity, onDone }: { reps?: number; giveUpFactor?: number; onDone?: () => void } = {},
): Promise<number[]> {
  for (const run of runs) {
    await run();
    await clock.settle();
  }
  const times: number[][] = runs.map(() => []);
  let racing = runs.map((_, i) => i);
  for (let round = 0; round < reps; round++) {
    const last = round === reps - 1;
    const order = racing.map((_, j) => racing[(j + round) % racing.length]);
    for (const i of order) {
      const t0 = clock.now();
      await runs[i]();
      await clock.settle();
      times[i].push(clock.now() - t0);
      if (last) onDone?.();
    }
    if (!last) {
      const quickest = Math.min(...racing.map((i) => times[i][0]));
      const slow = (i: number) => times[i][0] > giveUpFactor * quickest;
      for (const i of racing) if (slow(i)) onDone?.();
      racing = racing.filter((i) => !slow(i));
    }
  }
  return times.map((t) => [...t].sort((a, b) => a - b)[Math.floor(t.length / 2)]);
}

/** A candidate this many times slower than the quickest in the first round is timed once, not `reps` times. */
const GIVE_UP_FACTOR = 3;

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
 * The distinct weight shapes (N, K) one decoder layer multiplies by, with their format: the
 * seven projections in `format`, and a LoRA factor A (r, C), f32, at rank 16 (the narrow output
 * where a wide tile wastes most). B (F, r) is left out: its K of 16 is a shape of its own to compile
 * for every candidate, and its product is the step's cheapest.
 */
function layerWeightShapes(shape: TuningShape, format: QuantFormat): Array<[number, number, QuantFormat]> {
  const { C, F } = shape;
  const { H, KVH, D } = attentionHeads(shape);
  const r = TUNING_LORA_RANK;
  const base: Array<[number, number]> = [
    [H * D, C],
    [KVH * D, C],
    [C, H * D],
    [F, C],
    [C, F],
  ];
  const lora: Array<[number, number]> = [[r, C]];
  const seen = new Set<string>();
  return [...base.map(([n, k]) => [n, k, format] as const), ...lora.map(([n, k]) => [n, k, 'f32'] as const)].filter(([n, k, f]) => {
    const key = `${n}:${k}:${f}`;
    return !seen.has(key) && seen.add(key);
  }) as Array<[number, number, QuantFormat]>;
}

/** The heads tuning times attention on: the model's, else C/64 heads of 64. */
function attentionHeads(shape: TuningShape): AttentionShape {
  const h = Math.max(1, shape.C / 64);
  return shape.heads ?? { H: h, KVH: h, D: 64 };
}

/**
 * Pick the fastest kernels for T tokens of a model with hidden C, FFN F, vocabulary V: the
 * forward matmul (every variant the adapter can run) and the input-gradient tiles, each timed
 * over the distinct weight shapes of one layer (`layerWeightShapes`, so a tile that wastes work
 * on narrow LoRA factors or on a width that is not its multiple pays for it), the input gradient
 * also over the lm-head's min(V, 8192) columns (the training forward's g = dz' W); the lm-head tiles
 * on min(V, 8192) columns; the attention variants; the one-row (decode) shapes over the layer's
 * shapes and those lm-head columns. `onProgress` gets the fraction timed.
 */
export async function tuneKernels(
  engine: Engine,
  shape: TuningShape,
  format: QuantFormat,
  onProgress?: (fraction: number) => void,
): Promise<TuneResult> {
  const { T, C } = shape;
  const V = Math.min(shape.V, 8192);
  const matmulTiles = matmulCandidates(engine.ctx.adapter);
  const matvecTiles = matvecVariantsOn(engine.ctx.device);
  const CANDIDATES =
    matmulTiles.length +
    MATMUL_DX_CANDIDATES.length +
    MATMUL_TN_CANDIDATES.length +
    LMHEAD_CANDIDATES.length +
    ATTENTION_CANDIDATES.length +
    matvecTiles.length +
    DECODE_ATTENTION_CANDIDATES.length;
  let timed = 0;
  const progress = () => onProgress?.(++timed / CANDIDATES);
  const b = engine.buffers;
  const opsWith = (t: Partial<Tuning>) => new Ops(engine.ctx.device, engine.pipelines, b, { ...DEFAULT_TUNING, ...t });
  const weights = layerWeightShapes(shape, format).map(([n, k, f]) => syntheticWeight(engine, n, k, f));
  const widest = Math.max(...weights.map((w) => Math.max(w.rows, w.cols)));
  // The lm-head's table (V columns of it), in the format a model keeps it in.
  const head = syntheticWeight(engine, V, C, format === 'f32' ? 'f32' : 'q8');
  const x = b.create('tune x', T * widest * 4);
  const out = b.create('tune out', T * Math.max(widest, V) * 4); // also the lm-head's gradient dz' (T,V)
  /** GFLOP/s of one pass over the shapes `ws` (the layer's) per tile, recorded by `record(tile)` for each weight. */
  const raceLayer = async <Tile>(
    tiles: Tile[],
    record: (tile: Tile) => (enc: GPUCommandEncoder, w: GpuWeight) => Promise<void>,
    ws = weights,
  ) => {
    const runs = tiles.map((tile) => {
      const each = record(tile);
      return async () => {
        const enc = engine.ctx.device.createCommandEncoder();
        for (const w of ws) await each(enc, w);
        engine.ctx.device.queue.submit([enc.finish()]);
      };
    });
    const ms = await raceMs(deviceClock(engine), runs, { giveUpFactor: GIVE_UP_FACTOR, onDone: progress });
    const flops = ws.reduce((s, w) => s + 2 * T * w.rows * w.cols, 0);
    return tiles.map((tile, i) => ({ tile, gflops: flops / ms[i] / 1e6 }));
  };
  const matmul: TuneResult['matmul'] = await raceLayer(matmulTiles, (tile) => {
    const ops = opsWith({ matmul: tile });
    return (enc, w) => ops.matmul(enc, { x, w, out, T });
  });
  // Over the layer's shapes and the lm-head's g = dz' W (a reduction over V columns), which the
  // training forward runs with the same kernel: at SmolLM2's width the tiles tie on the layer's
  // shapes while 16 x 16 ran the lm-head's ~20 % faster than 16 x 8, so timing the layer alone
  // picked either from run to run.
  const matmulDx: TuneResult['matmulDx'] = await raceLayer(
    [...MATMUL_DX_CANDIDATES],
    (tile) => {
      const ops = opsWith({ matmulDx: tile });
      return (enc, w) => ops.matmulDx(enc, { dy: out, w, dx: x, T });
    },
    [...weights, head],
  );
  const matmulTn = await timeMatmulTn(engine, T, [C, shape.F], progress);
  const matvec = await timeMatvec(engine, matvecTiles, [...weights, head], x, out, progress);
  for (const w of weights) for (const t of [w.data, w.scales]) b.destroy(t);
  const rows = b.upload(
    'tune rows',
    Uint32Array.from({ length: T }, (_, i) => i),
  );
  const lse = b.create('tune lse', T * 4);
  const logp = b.create('tune logp', T * 4);
  const log1mq = b.create('tune log1mq', T * 4);
  const lmheadOps = LMHEAD_CANDIDATES.map((tile) => opsWith({ lmhead: tile }));
  const scratches = lmheadOps.map((ops) => ops.lmheadScratch(T, V));
  const lmheadMs = await raceMs(
    deviceClock(engine),
    lmheadOps.map((ops, i) => async () => {
      const enc = engine.ctx.device.createCommandEncoder();
      await ops.lmhead(enc, { h: x, rows, targets: rows, R: T, w: head, lse, logp, log1mq, scratch: scratches[i] });
      engine.ctx.device.queue.submit([enc.finish()]);
    }),
    { onDone: progress },
  );
  const lmhead: TuneResult['lmhead'] = LMHEAD_CANDIDATES.map((tile, i) => ({ tile, gflops: (2 * T * V * C) / lmheadMs[i] / 1e6 }));
  for (const scratch of scratches) for (const t of [scratch.part, scratch.tlogit]) b.destroy(t);
  for (const t of [head.data, head.scales, x, out, rows, lse, logp, log1mq]) b.destroy(t);
  const attention = await timeAttention(engine, T, attentionHeads(shape), progress);
  const decodeAttention = await timeDecodeAttention(engine, T, attentionHeads(shape), progress);
  const best = <T extends { gflops: number }>(list: T[]) => list.reduce((a, c) => (c.gflops > a.gflops ? c : a));
  const fastest = attention.reduce((a, c) => (c.ms < a.ms ? c : a));
  return {
    tuning: {
      ...DEFAULT_TUNING,
      matmul: best(matmul).tile,
      matmulDx: best(matmulDx).tile,
      matmulTn: best(matmulTn).tile,
      lmhead: pickLmheadTile(lmhead),
      attention: fastest.tile,
      matvec: matvec.reduce((a, c) => (c.ms < a.ms ? c : a)).tile,
      decodeAttention: decodeAttention.reduce((a, c) => (c.ms < a.ms ? c : a)).tile,
    },
    matmul,
    matmulDx,
    matmulTn,
    lmhead,
    attention,
    matvec,
    decodeAttention,
  };
}

/** How much faster a taller lm-head tile must measure to be kept over a shorter one (`pickLmheadTile`). */
export const LMHEAD_TALLER_MARGIN = 1.1;

/**
 * The lm-head tile to keep: the fastest, unless one whose rows a workgroup (TM × WGY, rounded up to 64
 * as `keptRowStep` steps kept-logit chunks) are fewer is within `LMHEAD_TALLER_MARGIN` of it: then the
 * fastest of those with the fewest. A training forward keeps a chunk of at least that many rows' logits:
 * a 128-row tile doubles that memory and keeps nothing in a pass under 256 tokens, so it must earn that
 * by more than the tuner's noise (on SwiftShader the 64- and 128-row tiles measured within 10 % of each
 * other at SmolLM2's width, and each won about half the runs).
 */
export function pickLmheadTile(timed: TuneResult['lmhead']): Tuning['lmhead'] {
  const top = Math.max(...timed.map((t) => t.gflops));
  const step = (t: Tuning['lmhead']) => Math.ceil((t.TM * t.WGY) / 64) * 64;
  const close = timed.filter((t) => t.gflops * LMHEAD_TALLER_MARGIN >= top);
  const fewest = Math.min(...close.map((t) => step(t.tile)));
  return close.filter((t) => step(t.tile) === fewest).reduce((a, c) => (c.gflops > a.gflops ? c : a)).tile;
}

/**
 * The LoRA weight-gradient tiles timed over a layer's adapter gradients at rank `TUNING_LORA_RANK`
 * for each width in `widths` (the hidden size and the FFN's): dB (width, r) = dy^T u and
 * dA (r, width) = g^T x, each a reduction over T tokens.
 */
async function timeMatmulTn(engine: Engine, T: number, widths: number[], onDone: () => void): Promise<TuneResult['matmulTn']> {
  const b = engine.buffers;
  const live: TrackedBuffer[] = [];
  const r = TUNING_LORA_RANK;
  const widest = Math.max(...widths);
  const a = b.f32In(live, 'tune tn a', T * widest);
  const bb = b.f32In(live, 'tune tn b', T * widest);
  const out = b.f32In(live, 'tune tn out', widest * r);
  const shapes = [...new Set(widths)].flatMap((w) => [
    [w, r],
    [r, w],
  ]);
  const flops = shapes.reduce((s, [M, P]) => s + 2 * T * M * P, 0);
  const timed = await timeTiles(engine, 'matmulTn', MATMUL_TN_CANDIDATES, [a, bb], live, onDone, async (ops, enc) => {
    for (const [M, P] of shapes) await ops.matmulTn(enc, { a, b: bb, out, T, M, P, beta: 1 });
  });
  return timed.map(({ tile, ms }) => ({ tile, gflops: flops / ms / 1e6 }));
}

/**
 * Median ms of one submit per candidate `tiles` of the tuning field `field`, raced in interleaved rounds (`raceMs`; `record` encodes the
 * work with an `Ops` on that tile), after zeroing the inputs `zero`; frees `live` when done.
 */
async function timeTiles<K extends 'matmulTn' | 'attention' | 'decodeAttention'>(
  engine: Engine,
  field: K,
  tiles: Tuning[K][],
  zero: TrackedBuffer[],
  live: TrackedBuffer[],
  onDone: () => void,
  record: (ops: Ops, enc: GPUCommandEncoder) => Promise<void>,
): Promise<Array<{ tile: Tuning[K]; ms: number }>> {
  const enc0 = engine.ctx.device.createCommandEncoder();
  for (const t of zero) enc0.clearBuffer(t.buffer);
  engine.ctx.device.queue.submit([enc0.finish()]);
  try {
    const runs = tiles.map((tile) => {
      const ops = new Ops(engine.ctx.device, engine.pipelines, engine.buffers, { ...DEFAULT_TUNING, [field]: tile });
      return async () => {
        const enc = engine.ctx.device.createCommandEncoder();
        await record(ops, enc);
        engine.ctx.device.queue.submit([enc.finish()]);
      };
    });
    const ms = await raceMs(deviceClock(engine), runs, { onDone });
    return tiles.map((tile, i) => ({ tile, ms: ms[i] }));
  } finally {
    for (const t of live) engine.buffers.destroy(t);
  }
}

/**
 * The one-row products of a decode step (kernels/matvec.wgsl) timed per shape on `weights` (the
 * layer's projections and the lm-head's first columns), x and out of one row; a shape several times
 * slower than the quickest in the first round is timed once (on SwiftShader the split-K tree is ≈ 5× slower).
 */
async function timeMatvec(
  engine: Engine,
  tiles: MatvecTile[],
  weights: GpuWeight[],
  x: TrackedBuffer,
  out: TrackedBuffer,
  onDone: () => void,
): Promise<TuneResult['matvec']> {
  const runs = tiles.map((tile) => {
    const ops = new Ops(engine.ctx.device, engine.pipelines, engine.buffers, { ...DEFAULT_TUNING, matvec: tile });
    return async () => {
      const enc = engine.ctx.device.createCommandEncoder();
      for (const w of weights) await ops.matvec(enc, { x, w, out });
      engine.ctx.device.queue.submit([enc.finish()]);
    };
  });
  const ms = await raceMs(deviceClock(engine), runs, { giveUpFactor: GIVE_UP_FACTOR, onDone });
  return tiles.map((tile, i) => ({ tile, ms: ms[i] }));
}

/** The tuning shape of T tokens of a model (its widths, vocabulary and attention heads). */
export function tuningShapeOf(
  m: Pick<LlamaConfig, 'hiddenSize' | 'intermediateSize' | 'vocabSize' | 'numHeads' | 'numKvHeads'> & { headDim?: number },
  T: number,
): TuningShape {
  const heads = { H: m.numHeads, KVH: m.numKvHeads, D: m.headDim ?? m.hiddenSize / m.numHeads };
  return { T, C: m.hiddenSize, F: m.intermediateSize, V: m.vocabSize, heads };
}

/** One attention forward + backward (T tokens, one sequence) raced per variant; `onDone` is called once per variant. */
async function timeAttention(
  engine: Engine,
  T: number,
  { H, KVH, D }: AttentionShape,
  onDone: () => void,
): Promise<TuneResult['attention']> {
  const b = engine.buffers;
  const live: TrackedBuffer[] = [];
  const f32 = (label: string, floats: number) => b.f32In(live, label, floats);
  const acts = {
    q: f32('tune q', T * H * D),
    k: f32('tune k', T * KVH * D),
    v: f32('tune v', T * KVH * D),
    out: f32('tune attention out', T * H * D),
    lse: f32('tune lse', H * T),
    seg: f32('tune seg', T), // zeros: one sequence
    dout: f32('tune dout', T * H * D),
    delta: f32('tune delta', H * T),
    dq: f32('tune dq', T * H * D),
    dk: f32('tune dk', T * KVH * D),
    dv: f32('tune dv', T * KVH * D),
    T,
    H,
    KVH,
    D,
  };
  return timeTiles(engine, 'attention', ATTENTION_CANDIDATES, [acts.q, acts.k, acts.v, acts.dout], live, onDone, async (ops, enc) => {
    await ops.attention(enc, acts);
    await ops.attentionBackward(enc, acts);
  });
}

/** Decode attentions recorded per timing (a decode step runs one a layer). */
const DECODE_ATTENTION_TIMED_LAYERS = 16;

/**
 * One decode step's attention (append of the new row, then one query row per head against T cached
 * keys), DECODE_ATTENTION_TIMED_LAYERS times in one submit, raced per threads-per-head candidate;
 * `onDone` is called once per candidate.
 */
async function timeDecodeAttention(
  engine: Engine,
  T: number,
  { H, KVH, D }: AttentionShape,
  onDone: () => void,
): Promise<TuneResult['decodeAttention']> {
  const b = engine.buffers;
  const live: TrackedBuffer[] = [];
  const f32 = (label: string, floats: number) => b.f32In(live, label, floats);
  const acts = {
    q: f32('tune q', H * D),
    k: f32('tune k', KVH * D),
    v: f32('tune v', KVH * D),
    kc: f32('tune k cache', T * KVH * D),
    vc: f32('tune v cache', T * KVH * D),
    out: f32('tune attention out', H * D),
    step: b.upload('tune decode step', new Uint32Array([0, T - 1])), // the new row at position T-1
    H,
    KVH,
    D,
  };
  live.push(acts.step);
  // As many as a model's layers run a token: one alone is mostly the submit's and the wait's fixed cost.
  return timeTiles(
    engine,
    'decodeAttention',
    [...DECODE_ATTENTION_CANDIDATES],
    [acts.q, acts.kc, acts.vc],
    live,
    onDone,
    async (ops, enc) => {
      for (let i = 0; i < DECODE_ATTENTION_TIMED_LAYERS; i++) await ops.attentionDecode(enc, acts);
    },
  );
}

/** Bump when a tuned kernel or the rule that picks one changes, so choices cached by an older build are measured again. */
export const TUNING_VERSION = 9;

/**
 * Tokens the cached choice is measured on: a typical training record, deliberately not a multiple
 * of the tiles' rows, so that a tile pays for its clamped rows as in a real step.
 */
export const TUNING_TOKENS = 200;

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
  if (
    typeof t !== 'object' ||
    t === null ||
    !t.matmul ||
    !t.matmulDx ||
    !t.matmulTn ||
    !t.lmhead ||
    !t.attention ||
    !t.matvec ||
    !t.decodeAttention
  )
    return false;
  const tuned = { matmul: 0, matmulDx: 0, matmulTn: 0, lmhead: 0, attention: 0, matvec: 0, decodeAttention: 0 };
  return (
    MATMUL_CANDIDATES.some((c) => sameTile(c, t.matmul!)) &&
    MATMUL_DX_CANDIDATES.some((c) => sameTile(c, t.matmulDx!)) &&
    MATMUL_TN_CANDIDATES.some((c) => sameTile(c, t.matmulTn!)) &&
    LMHEAD_CANDIDATES.some((c) => sameTile(c, t.lmhead!)) &&
    ATTENTION_CANDIDATES.some((c) => sameTile(c, t.attention!)) &&
    MATVEC_VARIANTS.some((c) => sameTile(c, t.matvec!)) &&
    DECODE_ATTENTION_CANDIDATES.some((c) => sameTile(c, t.decodeAttention!)) &&
    sameTile({ ...t, ...tuned }, { ...DEFAULT_TUNING, ...tuned })
  );
}

/**
 * The tiles a software adapter (`AdapterSummary.software`, SwiftShader) runs for a small model
 * without measuring: there the candidates that are not several times slower measured within their
 * noise of each other on hidden sizes 64 and 128 (docs/architecture.md §3b), and measuring them
 * costs 40–50 s of shader compilation whatever the model. These are the ones that won most often
 * (decode's attention on 4 threads a head, one SIMD group: half the time of 16 in SmolLM2's decode),
 * except the lm-head's: a small vocabulary's lm-head is a few percent of a step, and its 16 × 8 tile
 * compiled in 2.7–3.5 s against the 4 × 4 default's 0.3 s, for 18–30 ms less a toy-math step.
 */
export const SOFTWARE_TUNING: Tuning = {
  ...DEFAULT_TUNING,
  matmul: { variant: 'regs', TM: 16, TN: 8, WGX: 2, WGY: 4 },
  matmulDx: { TM: 16, TK: 8, WGX: 2, WGY: 4 },
  matmulTn: { TM: 8, TP: 8, WGX: 2, WGY: 8 },
  attention: { variant: 'rows', WG: 4, RT: 4 },
  matvec: MATVEC_VARIANTS[0],
  decodeAttention: DECODE_ATTENTION_CANDIDATES[0],
};

/**
 * The widest hidden size `SOFTWARE_TUNING` serves. At SmolLM2's 576 the tuner's choice beats it by
 * 1.5× on the matmuls (16 × 12 tiles), which pays for the measurement.
 */
export const SOFTWARE_PRESET_MAX_HIDDEN = 128;

/**
 * A software adapter's preset for the smallest models (hidden size up to `SOFTWARE_TINY_MAX_HIDDEN`): the
 * default tiles, the quickest to compile, with decode's shapes of `SOFTWARE_TUNING`. Such a model spends its first step compiling: on SwiftShader a 16 × 8
 * register tile compiles in 0.7–0.9 s against 0.07 s for a 4 × 4 one, and the CLI's first step of a
 * hidden-32 model took 11.1 s on `SOFTWARE_TUNING` against 3.6 s on these, its later steps 0.5–0.6 s on either.
 */
export const SOFTWARE_TINY_TUNING: Tuning = {
  ...DEFAULT_TUNING,
  matvec: MATVEC_VARIANTS[0],
  decodeAttention: DECODE_ATTENTION_CANDIDATES[0],
};

/** The widest hidden size `SOFTWARE_TINY_TUNING` serves. */
export const SOFTWARE_TINY_MAX_HIDDEN = 64;

/**
 * A software adapter's preset for a model of hidden size C: `SOFTWARE_TINY_TUNING` up to
 * `SOFTWARE_TINY_MAX_HIDDEN`, `SOFTWARE_TUNING` up to `SOFTWARE_PRESET_MAX_HIDDEN`; null for wider
 * models and on any other adapter (they are measured).
 */
export function presetTuning(adapter: Pick<AdapterSummary, 'software'>, shape: Pick<TuningShape, 'C'>): Tuning | null {
  if (!adapter.software || shape.C > SOFTWARE_PRESET_MAX_HIDDEN) return null;
  return shape.C <= SOFTWARE_TINY_MAX_HIDDEN ? SOFTWARE_TINY_TUNING : SOFTWARE_TUNING;
}

/** Where the kernel tiles in use came from: measured now, an earlier measurement, the software preset, or the defaults. */
export type TuningSource = 'measured' | 'cached' | 'preset' | 'default';

/**
 * The tile shapes for this adapter and model (docs/architecture.md §3b): the cached choice; for a
 * model of hidden size up to `SOFTWARE_PRESET_MAX_HIDDEN` on a software adapter, its preset
 * (`presetTuning`); else a short measurement now (`tuneKernels`) that is then cached. `measure`
 * measures (and caches) whatever the cache holds, and returns the timings. A cache that cannot be
 * read or written costs a measurement, never the run.
 */
export async function tuningFor(
  engine: Engine,
  cache: TuningCache,
  shape: Omit<TuningShape, 'T'>,
  format: QuantFormat,
  opts: { onProgress?: (fraction: number) => void; measure?: boolean } = {},
): Promise<{ tuning: Tuning; source: TuningSource; measured?: TuneResult }> {
  const key = tuningKey(engine.ctx.adapter, shape, format);
  if (!opts.measure) {
    const cached = await cache.get(key).catch(() => undefined);
    if (isCachedTuning(cached)) return { tuning: cached, source: 'cached' };
    const preset = presetTuning(engine.ctx.adapter, shape);
    if (preset) return { tuning: preset, source: 'preset' };
  }
  let measured: TuneResult;
  try {
    measured = await tuneKernels(engine, { ...shape, T: TUNING_TOKENS }, format, opts.onProgress);
  } catch (e) {
    if (e instanceof GpuMemoryError) return { tuning: DEFAULT_TUNING, source: 'default' }; // a tight memory budget: no room to measure
    throw e;
  }
  await cache.set(key, measured.tuning).catch(() => undefined);
  return { tuning: measured.tuning, source: 'measured', measured };
}
