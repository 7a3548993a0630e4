/**
 * Typed dispatch of the engine's kernels, grouped as forward/backward pairs (llm.c style): each
 * op specialises its WGSL (tile sizes, weight format, head dim), binds its buffers and records one
 * dispatch (or a few) into the caller's encoder. The layer functions that call them in order, the
 * forward and backward of each layer side by side, are in decoder-layer.ts, lora-linear.ts and
 * lm-head.ts. The optimizer's kernels (gradnorm.wgsl, adamw.wgsl) are dispatched by
 * src/train/optimizer.ts, which owns their state. Shapes follow llm.c comments: (T,C) = T rows of
 * C floats, row-major.
 */
import type { QuantFormat } from '../model/quant.ts';
import { STORAGE, UNIFORM, type BufferManager, type TrackedBuffer } from './buffers.ts';
import { fillTemplate, section, type PipelineCache } from './kernels.ts';

/** A frozen weight (N,K) on the GPU, in one of the qweight.wgsl formats. */
export interface GpuWeight {
  format: QuantFormat;
  rows: number; // N
  cols: number; // K
  data: TrackedBuffer;
  scales: TrackedBuffer | null;
}

/**
 * A variant of the forward matmul and its tile (docs/architecture.md §3b), TM rows x TN columns
 * (TN a multiple of 4): 'regs' (matmul.wgsl), registers only, WGX x WGY threads of one tile each,
 * no barriers (what SwiftShader runs fast); 'shared' (matmul_shared.wgsl), a block of x and of the
 * dequantized weights staged in workgroup memory per K stage (what discrete GPUs run fast), its
 * operands rounded to f16 with `f16`; 'subgroup' (matmul_subgroup.wgsl, needs `subgroups`), WG
 * threads split K for one tile and sum with `subgroupAdd` (few outputs, long K).
 */
export type MatmulTile =
  | { variant: 'regs'; TM: number; TN: number; WGX: number; WGY: number }
  | { variant: 'shared'; TM: number; TN: number; WGX: number; WGY: number; f16: boolean }
  | { variant: 'subgroup'; TM: number; TN: number; WG: number };

/** A matmul tile as a log line names it: "16×8 (wg 2×4)", "shared f16 4×4 (wg 16×16)", "subgroup 4×4 (wg 32)". */
export function describeMatmulTile(t: MatmulTile): string {
  const kind = t.variant === 'regs' ? '' : `${t.variant}${t.variant === 'shared' && t.f16 ? ' f16' : ''} `;
  return `${kind}${t.TM}×${t.TN} (wg ${t.variant === 'subgroup' ? t.WG : `${t.WGX}×${t.WGY}`})`;
}

/** A one-row (decode) shape as the kernels line names it, e.g. "cols 8 (wg 16)". */
export function describeMatvecTile(t: MatvecTile): string {
  return `${t.variant} ${4 * t.TN4} (wg ${t.WG})`;
}

/** Kernel shapes, chosen per adapter (see bench/ and docs/architecture.md §3b). TN is a multiple of 4. */
export interface Tuning {
  matmul: MatmulTile;
  lmhead: { TM: number; TN: number; WGX: number; WGY: number };
  /**
   * 'tiled' (attention.wgsl): BQ query rows per workgroup stage BK keys at a time in workgroup
   * memory, with barriers (what GPUs run fast); 'rows' (attention_rows.wgsl): one thread per RT rows
   * of one head, WG threads a workgroup, no workgroup memory or barriers (what SwiftShader runs fast).
   */
  attention: { variant: 'tiled'; BQ: number; BK: number } | { variant: 'rows'; WG: number; RT: number };
  /** matmul_dx.wgsl: TM rows x TK columns of dx per thread (TK a multiple of 4). */
  matmulDx: { TM: number; TK: number; WGX: number; WGY: number };
  /** matmul_tn.wgsl: TM rows x TP columns of the weight gradient per thread (TP a multiple of 4). */
  matmulTn: { TM: number; TP: number; WGX: number; WGY: number };
  /** Columns of one vocabulary chunk in the fused cross-entropy backward (a multiple of 4). */
  ceChunk: number;
  /** matvec.wgsl, the one-row product (decode); absent: `DEFAULT_MATVEC`. */
  matvec?: MatvecTile;
  /** attention.wgsl decode_main: threads per head (each an online softmax over every threads-th key, then merged). */
  decodeAttention: DecodeAttentionTile;
}

/** Threads per head of the decode attention (a power of two, at most 16: their states fill workgroup memory). */
export interface DecodeAttentionTile {
  threads: number;
}

/** The decode attention's shapes the tuner times: one SIMD group of a software adapter, and a GPU's 16. */
export const DECODE_ATTENTION_CANDIDATES: readonly DecodeAttentionTile[] = [{ threads: 4 }, { threads: 16 }];

/**
 * A shape of kernels/matvec.wgsl: 'cols' gives each of WG threads 4*TN4 columns over all of K (no
 * barriers); 'splitk' gives a workgroup 4*TN4 columns and splits K over its WG threads (a power
 * of two, at least 4*TN4), reduced in workgroup memory; 'subgroup' (WG 4, TN4 1; only on an
 * adapter with `subgroups`) splits K over one subgroup, reduced by subgroupAdd.
 */
export interface MatvecTile {
  variant: 'cols' | 'splitk' | 'subgroup';
  TN4: number;
  WG: number;
}

/**
 * The matvec shapes the tuner times (src/engine/tune.ts, barrier-free ones first, so the slow
 * reductions are given up on early) and test/gpu/matvec.test.ts checks.
 */
export const MATVEC_VARIANTS: readonly MatvecTile[] = [
  { variant: 'cols', TN4: 2, WG: 16 },
  { variant: 'cols', TN4: 2, WG: 4 },
  { variant: 'cols', TN4: 4, WG: 4 },
  { variant: 'splitk', TN4: 1, WG: 32 },
  { variant: 'subgroup', TN4: 1, WG: 4 },
];

/** The MATVEC_VARIANTS entries `device` can compile (the subgroup one needs its `subgroups` feature). */
export function matvecVariantsOn(device: GPUDevice): MatvecTile[] {
  return MATVEC_VARIANTS.filter((t) => t.variant !== 'subgroup' || device.features.has('subgroups'));
}

/** The one-row product's default: barrier-free columns, 8 a thread, which won on SwiftShader (docs/architecture.md §3d). */
export const DEFAULT_MATVEC: MatvecTile = MATVEC_VARIANTS[0];

/** The tiled attention's default tiles (also decode's, which has only the tiled kernel). */
const TILED_ATTENTION = { variant: 'tiled', BQ: 32, BK: 16 } as const;

export const DEFAULT_TUNING: Tuning = {
  matmul: { variant: 'regs', TM: 4, TN: 4, WGX: 8, WGY: 8 },
  lmhead: { TM: 4, TN: 4, WGX: 16, WGY: 4 },
  attention: TILED_ATTENTION,
  matmulDx: { TM: 8, TK: 8, WGX: 8, WGY: 8 },
  matmulTn: { TM: 4, TP: 4, WGX: 4, WGY: 16 },
  ceChunk: 4096,
  decodeAttention: { threads: 16 },
};

const MAX_WG = 65535;

/** Cached uniforms `Ops.trimUniforms` lets an engine keep: the shapes of some 40 pass lengths. */
export const UNIFORM_CACHE_MAX = 2048;

/** The matmul tile for fewer rows than the tuned tile has (generation's T = 1): 1 row x 4 columns per thread. */
const ROW_TILE: MatmulTile = { variant: 'regs', TM: 1, TN: 4, WGX: 64, WGY: 1 };

/**
 * RMSNorm of at most this many rows runs a workgroup a row (`row_main`, kernels/rmsnorm.wgsl): for a
 * decode step's one row the thread-per-row kernel walks the row on one lane (89 µs a call on SwiftShader).
 */
export const RMSNORM_ROW_WORKGROUPS_MAX_T = 8;

/** K vec4s a 'shared' matmul stages per barrier. */
const SHARED_BK4 = 4;

/** Scratch of the lm-head forward: (R, nTiles) partials and (R) target logits. */
export interface LmheadScratch {
  part: TrackedBuffer;
  tlogit: TrackedBuffer;
  nTiles: number;
}

/** One attention call's buffers: q (T,H*D), k, v (T,KVH*D), out (T,H*D), lse (H,T), seg (T) and its sizes. */
export interface AttentionActs {
  q: TrackedBuffer;
  k: TrackedBuffer;
  v: TrackedBuffer;
  out: TrackedBuffer;
  lse: TrackedBuffer;
  seg: TrackedBuffer;
  T: number;
  H: number;
  KVH: number;
  D: number;
}

/** The lm-head's vocabulary padded to a multiple of 4: the row stride of a kept logits block. */
export function paddedVocab(V: number): number {
  return Math.ceil(V / 4) * 4;
}

/** One lm-head pass's rows: h (T,C), the rows (R) and their targets (R), W, the outputs lse, logp, log1mq (R), scratch. */
export interface LmheadRows {
  h: TrackedBuffer;
  rows: TrackedBuffer;
  targets: TrackedBuffer;
  R: number;
  w: GpuWeight;
  lse: TrackedBuffer;
  logp: TrackedBuffer;
  log1mq: TrackedBuffer;
  scratch: LmheadScratch;
}

/**
 * The dropout kernel's per-token table (T,2) u32 of sequences of `lengths` packed in order: the
 * seed of the token's sequence (`seeds`, one each) and its position within it.
 */
export function dropoutSeedTable(seeds: readonly number[], lengths: readonly number[]): Uint32Array {
  if (seeds.length !== lengths.length) throw new RangeError(`passSeed: ${seeds.length} seeds for ${lengths.length} sequences`);
  const table = new Uint32Array(2 * lengths.reduce((a, n) => a + n, 0));
  let at = 0;
  lengths.forEach((n, s) => {
    for (let i = 0; i < n; i++, at += 2) [table[at], table[at + 1]] = [seeds[s] >>> 0, i];
  });
  return table;
}

/** Workgroup counts for `n` invocations of a 1-D kernel of `wg` threads, folded into 2-D. */
export function grid1d(n: number, wg = 64): [number, number] {
  const groups = Math.ceil(n / wg);
  if (groups <= MAX_WG) return [Math.max(1, groups), 1];
  return [MAX_WG, Math.ceil(groups / MAX_WG)];
}

/**
 * A kernel that reads rows or elements as vec4s needs their count (`what`: a row's width, the elements)
 * to be a multiple of 4; a weight's width is.
 */
function checkVec4s(kernel: string, what: 'width' | 'elements', n: number): void {
  if (n % 4 !== 0) throw new RangeError(`${kernel}: ${what} ${n}, expected a multiple of 4`);
}

/** The vec4s of a SwiGLU call over n elements (T x F). */
function swigluVec4s(n: number): number {
  checkVec4s('swiglu', 'elements', n);
  return n / 4;
}

export class Ops {
  private uniforms = new Map<string, TrackedBuffer>();
  /** Stand-ins for bindings an entry point declares but a mode does not use. */
  private dummies: { read: TrackedBuffer; write: TrackedBuffer } | null = null;

  constructor(
    readonly device: GPUDevice,
    readonly pipelines: PipelineCache,
    readonly buffers: BufferManager,
    readonly tuning: Tuning = DEFAULT_TUNING,
  ) {}

  /**
   * A uniform buffer holding `values` (u32 or f32 by the given kinds), cached by content for the
   * life of the Ops: only shapes and constants of the run belong here, never a per-step value
   * (a seed, a step number), which would add a buffer and an upload every step (`passSeed`).
   */
  private uniform(values: number[], kinds: string): GPUBuffer {
    const key = `${kinds}:${values.join(',')}`;
    let u = this.uniforms.get(key);
    if (!u) {
      const data = new ArrayBuffer(Math.ceil(values.length / 4) * 16);
      const dv = new DataView(data);
      values.forEach((v, i) => (kinds[i] === 'f' ? dv.setFloat32(i * 4, v, true) : dv.setUint32(i * 4, v, true)));
      u = this.buffers.create(`uniform ${key}`, data.byteLength, UNIFORM);
      this.device.queue.writeBuffer(u.buffer, 0, data);
      this.uniforms.set(key, u);
    }
    return u.buffer;
  }

  /** Uniform buffers held now (`uniform`'s cache). */
  get uniformCount(): number {
    return this.uniforms.size;
  }

  /**
   * Destroys the cached uniforms once more than `max` are held: each distinct pass length adds
   * about fifty (its shapes), so a run whose packed passes keep changing length would otherwise
   * hold them all for the engine's life. Call it where no command encoder is being recorded (the
   * trainer does at each step's start); work already submitted keeps its buffers until it completes.
   */
  trimUniforms(max = UNIFORM_CACHE_MAX): void {
    if (this.uniforms.size <= max) return;
    for (const u of this.uniforms.values()) this.buffers.destroy(u);
    this.uniforms.clear();
  }

  private dummy(kind: 'read' | 'write'): GPUBuffer {
    this.dummies ??= { read: this.buffers.create('unused binding (read)', 16), write: this.buffers.create('unused binding (write)', 16) };
    return this.dummies[kind].buffer;
  }

  /** WGSL of the weight-format section, with its bindings at `wb`, `wb+1`; `kw` is the kernel's expression for K. */
  private weightCode(format: QuantFormat, wb: number, kw: string): string {
    return fillTemplate(section(this.pipelines.source('qweight'), format, 'qweight'), { WB: wb, WB1: wb + 1, KW: kw }, 'qweight');
  }

  /**
   * Records a matmul-family kernel `name` over a frozen weight (matmul and its variants,
   * matmul_dx), its pipeline specialised by the weight's format and the template values `tile`
   * (cached under `tileKey`), not by its width: K is in the uniforms (`p.K`), so one pipeline serves
   * every width of a model. Bindings 0..2 are the uniforms, input and output, then the weight's.
   */
  private async weightKernel(
    enc: GPUCommandEncoder,
    name: string,
    w: GpuWeight,
    [tileKey, tile]: [string, Record<string, number | string>],
    [u, input, output]: [GPUBuffer, TrackedBuffer, TrackedBuffer],
    grid: [number, number],
    more: GPUBindGroupEntry[] = [],
  ): Promise<void> {
    const pl = await this.pipelines.get(name, [name, w.format, tileKey].join(':'), () =>
      fillTemplate(this.pipelines.source(name), { ...tile, WEIGHT: this.weightCode(w.format, 3, 'p.K') }, name),
    );
    const entries = [this.buf(0, u), this.buf(1, input), this.buf(2, output), ...this.weightEntries(w, 3), ...more];
    this.dispatch(enc, pl, entries, grid, name);
  }

  /**
   * The forward matmul kernel of a tile, its template values and its workgroup grid for T x N
   * outputs. An f16 'shared' tile stages f16 where the device has shader-f16, else f32 values
   * rounded to f16 (the same numbers; how adapters without it check the kernel).
   */
  private matmulKernel(tile: MatmulTile, T: number, N: number): [string, Record<string, number | string>, [number, number]] {
    const { TM, TN } = tile;
    if (tile.variant === 'subgroup') {
      return ['matmul_subgroup', { TM, TN4: TN / 4, WG: tile.WG }, [Math.ceil(N / TN), Math.ceil(T / TM)]];
    }
    const { WGX, WGY } = tile;
    const grid: [number, number] = [Math.ceil(N / (TN * WGX)), Math.ceil(T / (TM * WGY))];
    if (tile.variant === 'regs') return ['matmul', { TM, TN4: TN / 4, WGX, WGY }, grid];
    const half = tile.f16 && this.device.features.has('shader-f16');
    const stage = !tile.f16
      ? 'return v;'
      : half
        ? 'return vec4<f16>(v);'
        : 'return vec4<f32>(unpack2x16float(pack2x16float(v.xy)), unpack2x16float(pack2x16float(v.zw)));';
    const values = {
      TM,
      TN4: TN / 4,
      WGX,
      WGY,
      BK4: SHARED_BK4,
      ST: half ? 'f16' : 'f32',
      ENABLE: half ? 'enable f16;' : '',
      STAGE: stage,
    };
    return ['matmul_shared', values, grid];
  }

  private weightEntries(w: GpuWeight, wb: number): GPUBindGroupEntry[] {
    return w.scales ? [this.buf(wb, w.data), this.buf(wb + 1, w.scales)] : [this.buf(wb, w.data)];
  }

  private dispatch(
    enc: GPUCommandEncoder,
    pipeline: GPUComputePipeline,
    entries: GPUBindGroupEntry[],
    groups: [number, number, number?],
    label: string,
  ): void {
    const bind = this.buffers.bindGroups.get(pipeline, entries, label);
    const pass = enc.beginComputePass({ label });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(groups[0], groups[1], groups[2] ?? 1);
    pass.end();
  }

  private buf(binding: number, t: TrackedBuffer | GPUBuffer): GPUBindGroupEntry {
    if (!('buffer' in t)) return { binding, resource: { buffer: t } };
    return { binding, resource: t.offset === undefined ? { buffer: t.buffer } : { buffer: t.buffer, offset: t.offset, size: t.size } };
  }

  // --- Embedding (kernels/embedding.wgsl): forward only; the table is frozen and the backward pass stops at the first layer.

  /** ids (T) , table (V,C) -> out (T,C) */
  async embedding(enc: GPUCommandEncoder, a: { ids: TrackedBuffer; table: GpuWeight; out: TrackedBuffer; T: number }): Promise<void> {
    const { format, rows: V, cols: C } = a.table;
    const pl = await this.pipelines.get('embedding', `embedding:${format}:${C}`, () =>
      fillTemplate(this.pipelines.source('embedding'), { K: C, WEIGHT: this.weightCode(format, 3, 'KW') }, 'embedding'),
    );
    const [gx, gy] = grid1d((a.T * C) / 4);
    this.dispatch(
      enc,
      pl,
      [this.buf(0, this.uniform([a.T, V, 0, 0], 'uuuu')), this.buf(1, a.ids), this.buf(2, a.out), ...this.weightEntries(a.table, 3)],
      [gx, gy],
      'embedding',
    );
  }

  // --- RMSNorm (kernels/rmsnorm.wgsl): forward / backward.

  /** x (T,C) , w (C) -> out (T,C), rstd (T) */
  async rmsnorm(
    enc: GPUCommandEncoder,
    a: { x: TrackedBuffer; w: TrackedBuffer; out: TrackedBuffer; rstd: TrackedBuffer; T: number; C: number; eps: number },
  ): Promise<void> {
    // A few rows (decode's one): a workgroup a row; else a thread a row (kernels/rmsnorm.wgsl).
    const byRow = a.T <= RMSNORM_ROW_WORKGROUPS_MAX_T;
    const entry = byRow ? 'row_main' : 'main';
    const pl = await this.pipelines.get('rmsnorm', 'rmsnorm', () => this.pipelines.source('rmsnorm'), entry);
    checkVec4s('rmsnorm', 'width', a.C);
    this.dispatch(
      enc,
      pl,
      [
        this.buf(0, this.uniform([a.T, a.C, a.eps, 0], 'uufu')),
        this.buf(1, a.x),
        this.buf(2, a.w),
        this.buf(3, a.out),
        this.buf(4, a.rstd),
      ],
      byRow ? [a.T, 1, 1] : grid1d(a.T),
      'rmsnorm',
    );
  }

  /** dx (T,C) += RMSNorm backward of dy (T,C) given x, w and the saved rstd */
  async rmsnormBackward(
    enc: GPUCommandEncoder,
    a: { x: TrackedBuffer; w: TrackedBuffer; rstd: TrackedBuffer; dy: TrackedBuffer; dx: TrackedBuffer; T: number; C: number },
  ): Promise<void> {
    const pl = await this.pipelines.get('rmsnorm', 'rmsnorm', () => this.pipelines.source('rmsnorm'), 'backward');
    checkVec4s('rmsnorm', 'width', a.C);
    this.dispatch(
      enc,
      pl,
      [
        this.buf(0, this.uniform([a.T, a.C, 0, 0], 'uufu')),
        this.buf(1, a.x),
        this.buf(2, a.w),
        this.buf(4, a.rstd),
        this.buf(5, a.dy),
        this.buf(6, a.dx),
      ],
      grid1d(a.T),
      'rmsnorm.backward',
    );
  }

  // --- Linear (kernels/matmul*.wgsl): forward / input gradient dx / LoRA weight gradient dW.

  /**
   * out (T,N) = beta*out + alpha * (x (T,K) @ W(N,K)^T + s * u (T,r) @ B(N,r)^T), the adapter's term
   * with `lora` (u = dropout(x) A^T, computed before by `matmul` over A; s its scale) in the same tile.
   */
  async matmul(
    enc: GPUCommandEncoder,
    a: {
      x: TrackedBuffer;
      w: GpuWeight;
      out: TrackedBuffer;
      T: number;
      alpha?: number;
      beta?: number;
      lora?: { u: TrackedBuffer; B: GpuWeight; scale: number };
    },
  ): Promise<void> {
    const N = a.w.rows;
    // Fewer rows than the tile holds (decode: T = 1): one row per thread, no idle rows.
    const tile = a.T < this.tuning.matmul.TM ? ROW_TILE : this.tuning.matmul;
    const r = a.lora?.B.cols ?? 0;
    const u = this.uniform([a.T, N, a.alpha ?? 1, a.beta ?? 0, r, a.lora?.scale ?? 0, a.w.cols, 0], 'uuffufuu');
    const [name, values, grid] = this.matmulKernel(tile, a.T, N);
    const adapter = a.lora
      ? [this.buf(5, a.lora.u), this.buf(6, a.lora.B.data)]
      : [this.buf(5, this.dummy('read')), this.buf(6, this.dummy('read'))];
    await this.weightKernel(enc, name, a.w, [Object.values(tile).join(':'), values], [u, a.x, a.out], grid, adapter);
  }

  /**
   * dx (T,K) = beta*dx + alpha * dy (T,N) @ W(N,K); with `nOff`, W's rows nOff..nOff+N (a vocabulary
   * chunk; rows past the end are clamped and must meet zero gradients). With `lora`, the adapter's
   * input gradient in the same tile: + alpha * s * dropout'(g (T,r) @ A(r,K)), the dropout mask the
   * forward's (`dropout`: the pass's seeds, the projection's salt, the rate; absent: none).
   */
  async matmulDx(
    enc: GPUCommandEncoder,
    a: {
      dy: TrackedBuffer;
      w: GpuWeight;
      dx: TrackedBuffer;
      T: number;
      N?: number;
      nOff?: number;
      alpha?: number;
      beta?: number;
      lora?: { g: TrackedBuffer; A: GpuWeight; scale: number; dropout?: { seed: TrackedBuffer; salt: number; rate: number } };
    },
  ): Promise<void> {
    const { rows, cols: K } = a.w;
    const N = a.N ?? rows;
    const { TM, TK, WGX, WGY } = this.tuning.matmulDx;
    const r = a.lora?.A.rows ?? 0;
    const drop = a.lora?.dropout;
    const u = this.uniform(
      [a.T, N, a.alpha ?? 1, a.beta ?? 0, a.nOff ?? 0, rows - 1, r, a.lora?.scale ?? 0, (drop?.salt ?? 0) >>> 0, drop?.rate ?? 0, K, 0],
      'uuffuuufufuu',
    );
    const grid: [number, number] = [Math.ceil(K / (TK * WGX)), Math.ceil(a.T / (TM * WGY))];
    const tile = { TM, TK4: TK / 4, WGX, WGY };
    const read = this.dummy('read');
    const adapter = [this.buf(5, a.lora?.g ?? read), this.buf(6, a.lora?.A.data ?? read), this.buf(7, drop?.seed ?? read)];
    await this.weightKernel(enc, 'matmul_dx', a.w, [Object.values(tile).join(':'), tile], [u, a.dy, a.dx], grid, adapter);
  }

  /** out (M,P) = beta*out + alpha * a(T,M)^T @ b(T,P): LoRA weight gradients */
  async matmulTn(
    enc: GPUCommandEncoder,
    x: { a: TrackedBuffer; b: TrackedBuffer; out: TrackedBuffer; T: number; M: number; P: number; alpha?: number; beta?: number },
  ): Promise<void> {
    const { TM, TP, WGX, WGY } = this.tuning.matmulTn;
    const pl = await this.pipelines.get('matmul_tn', `matmul_tn:${TM}:${TP}:${WGX}:${WGY}`, () =>
      fillTemplate(this.pipelines.source('matmul_tn'), { TM, TP4: TP / 4, WGX, WGY }, 'matmul_tn'),
    );
    const u = this.uniform([x.T, x.M, x.P, x.alpha ?? 1, x.beta ?? 0, 0, 0, 0], 'uuuffuuu');
    this.dispatch(
      enc,
      pl,
      [this.buf(0, u), this.buf(1, x.a), this.buf(2, x.b), this.buf(3, x.out)],
      [Math.ceil(x.P / (TP * WGX)), Math.ceil(x.M / (TM * WGY))],
      'matmul_tn',
    );
  }

  /**
   * One row (decode, T = 1): out (N) = beta*out + x (K) @ W(N,K)^T, plus with `lora` the adapter's
   * s * u (r) @ B(N,r)^T (u = x A^T, computed before by `matvec` over A) in the same kernel.
   */
  async matvec(
    enc: GPUCommandEncoder,
    a: { x: TrackedBuffer; w: GpuWeight; out: TrackedBuffer; beta?: number; lora?: { u: TrackedBuffer; B: GpuWeight; scale: number } },
  ): Promise<void> {
    const { format, rows: N, cols: K } = a.w;
    const { variant, TN4, WG } = this.tuning.matvec ?? DEFAULT_MATVEC;
    const subgroups = variant === 'subgroup' ? 1 : 0;
    // vec4s of x per weight block: a quantized block's 32 k (one scale); f32 rows 32 k too where K allows.
    const BK4 = format !== 'f32' || K % 32 === 0 ? 8 : 1;
    const key = ['matvec', format, BK4, TN4, WG, subgroups].join(':');
    const pl = await this.pipelines.get(
      'matvec',
      key,
      () => {
        const weight = fillTemplate(
          section(this.pipelines.source('qweight'), `${format}_dot`, 'qweight'),
          { WB: 3, WB1: 4, BK4, KW: 'p.K' },
          'qweight',
        );
        const enable = subgroups ? 'enable subgroups;' : '';
        return fillTemplate(
          this.pipelines.source('matvec'),
          { TN4, WG, BK4, WEIGHT: weight, SUBGROUPS: subgroups, ENABLE: enable },
          'matvec',
        );
      },
      `${variant}_main`,
    );
    const r = a.lora?.B.cols ?? 0;
    const u = this.uniform([N, r, a.beta ?? 0, a.lora?.scale ?? 0, K, 0, 0, 0], 'uuffuuuu');
    const adapter = a.lora
      ? [this.buf(5, a.lora.u), this.buf(6, a.lora.B.data)]
      : [this.buf(5, this.dummy('read')), this.buf(6, this.dummy('read'))];
    const columnsPerGroup = 4 * TN4 * (variant === 'cols' ? WG : 1);
    const [gx, gy] = grid1d(N, columnsPerGroup);
    this.dispatch(
      enc,
      pl,
      [this.buf(0, u), this.buf(1, a.x), this.buf(2, a.out), ...this.weightEntries(a.w, 3), ...adapter],
      [gx, gy],
      'matvec',
    );
  }

  // --- LoRA dropout (kernels/dropout.wgsl): its own backward; the same seed gives the same mask on the gradient.

  /**
   * out (n) = beta*out + dropout(x) over rows of `width` elements, one per token, with each token's
   * mask hashed from its sequence's seed in `seed` (a `passSeed` buffer) mixed with `salt`
   * (lora-linear.ts dropoutSeed) and its element index in a pass of its own; inverted: kept values / (1-rate).
   */
  async dropout(
    enc: GPUCommandEncoder,
    a: { x: TrackedBuffer; out: TrackedBuffer; n: number; width: number; seed: TrackedBuffer; salt: number; rate: number; beta?: number },
  ): Promise<void> {
    const pl = await this.pipelines.get('dropout', 'dropout', () => this.pipelines.source('dropout'));
    checkVec4s('dropout', 'width', a.width);
    checkVec4s('dropout', 'elements', a.n);
    const grid = grid1d(Math.ceil(a.n / a.width), 4); // a workgroup four tokens
    this.dispatch(
      enc,
      pl,
      [
        this.buf(0, this.uniform([a.n, a.salt >>> 0, a.rate, a.beta ?? 0, a.width], 'uuffu')),
        this.buf(1, a.x),
        this.buf(2, a.out),
        this.buf(3, a.seed),
      ],
      grid,
      'dropout',
    );
  }

  /**
   * A pass's dropout seeds, written once, registered in `live` for the caller to free
   * (`dropoutSeedTable`). Per-step values stay out of the content-cached uniforms, which then hold
   * only the run's shapes and constants.
   */
  passSeed(seeds: readonly number[], lengths: readonly number[], live: TrackedBuffer[]): TrackedBuffer {
    return this.buffers.uploadIn(live, 'dropout seeds (T,2)', dropoutSeedTable(seeds, lengths));
  }

  // --- RoPE (kernels/rope.wgsl): forward (dir +1) and backward (dir -1, the inverse rotation) in one op.

  /** x (T, nHeads*D) rotated in place with table cs (T, D/2, 2) (row t: t's position); dir -1 = inverse rotation */
  async rope(
    enc: GPUCommandEncoder,
    a: { x: TrackedBuffer; cs: TrackedBuffer; T: number; nHeads: number; D: number; dir?: 1 | -1 },
  ): Promise<void> {
    const pl = await this.pipelines.get('rope', 'rope', () => this.pipelines.source('rope'));
    const [gx, gy] = grid1d((a.T * a.nHeads * a.D) / 2);
    this.dispatch(
      enc,
      pl,
      [this.buf(0, this.uniform([a.T, a.nHeads, a.D / 2, a.dir ?? 1], 'uuuf')), this.buf(1, a.x), this.buf(2, a.cs)],
      [gx, gy],
      'rope',
    );
  }

  // --- Attention (kernels/attention.wgsl): forward / backward (delta, dq, dk+dv) / decode against a KV cache.

  /** An entry point of kernels/attention.wgsl specialised for head dimension D and the tiles (the tuned ones, else the defaults). */
  private attentionPipeline(
    D: number,
    entry: 'main' | 'delta_main' | 'dq_main' | 'dkdv_main' | 'decode_main',
  ): Promise<GPUComputePipeline> {
    const { BQ, BK } = this.tuning.attention.variant === 'tiled' ? this.tuning.attention : TILED_ATTENTION;
    const DEC = this.tuning.decodeAttention.threads;
    return this.pipelines.get(
      'attention',
      `attention:${D}:${BQ}:${BK}:${DEC}`,
      () => fillTemplate(this.pipelines.source('attention'), { D4: D / 4, BQ, BK, DEC }, 'attention'),
      entry,
    );
  }

  /** An entry point of kernels/attention_rows.wgsl for head dimension D, WG threads of RT rows each. */
  private attentionRowsPipeline(
    D: number,
    { WG, RT }: { WG: number; RT: number },
    entry: 'main' | 'dq_main' | 'dkdv_main',
  ): Promise<GPUComputePipeline> {
    return this.pipelines.get(
      'attention_rows',
      `attention_rows:${D}:${WG}:${RT}`,
      () => fillTemplate(this.pipelines.source('attention_rows'), { D4: D / 4, WG, RT }, 'attention_rows'),
      entry,
    );
  }

  /** q (T,H*D), k,v (T,KVH*D) -> out (T,H*D), lse (H,T); causal within each packed sequence (seg (T) u32: its first token) */
  async attention(enc: GPUCommandEncoder, a: AttentionActs): Promise<void> {
    const tune = this.tuning.attention;
    const [pl, rowsPerGroup] =
      tune.variant === 'rows'
        ? [await this.attentionRowsPipeline(a.D, tune, 'main'), tune.WG * tune.RT]
        : [await this.attentionPipeline(a.D, 'main'), tune.BQ];
    const u = this.uniform([a.T, a.H, a.KVH, 1 / Math.sqrt(a.D)], 'uuuf');
    this.dispatch(
      enc,
      pl,
      [this.buf(0, u), this.buf(1, a.q), this.buf(2, a.k), this.buf(3, a.v), this.buf(4, a.out), this.buf(5, a.lse), this.buf(11, a.seg)],
      [Math.ceil(a.T / rowsPerGroup), a.H],
      'attention',
    );
  }

  /**
   * Attention backward: dq (T,H*D), dk, dv (T,KVH*D) from q, k, v, the forward's out and lse, and
   * dout; `delta` (H,T) is scratch. Probabilities are recomputed; nothing T x T is stored. The tiled
   * variant runs three passes (delta, dq, dk+dv); the rows variant two (its dq pass writes delta).
   */
  async attentionBackward(
    enc: GPUCommandEncoder,
    a: AttentionActs & { dout: TrackedBuffer; delta: TrackedBuffer; dq: TrackedBuffer; dk: TrackedBuffer; dv: TrackedBuffer },
  ): Promise<void> {
    const tune = this.tuning.attention;
    const u = this.buf(0, this.uniform([a.T, a.H, a.KVH, 1 / Math.sqrt(a.D)], 'uuuf'));
    const qkv = [
      this.buf(1, a.q),
      this.buf(2, a.k),
      this.buf(3, a.v),
      this.buf(5, a.lse),
      this.buf(6, a.dout),
      this.buf(7, a.delta),
      this.buf(11, a.seg),
    ];
    if (tune.variant === 'rows') {
      const groups = Math.ceil(a.T / (tune.WG * tune.RT));
      const dq = await this.attentionRowsPipeline(a.D, tune, 'dq_main');
      this.dispatch(enc, dq, [u, ...qkv, this.buf(4, a.out), this.buf(8, a.dq)], [groups, a.H], 'attention.dq');
      const dkdv = await this.attentionRowsPipeline(a.D, tune, 'dkdv_main');
      this.dispatch(enc, dkdv, [u, ...qkv, this.buf(9, a.dk), this.buf(10, a.dv)], [groups, a.KVH], 'attention.dkdv');
      return;
    }
    const delta = await this.attentionPipeline(a.D, 'delta_main');
    this.dispatch(enc, delta, [u, this.buf(4, a.out), this.buf(6, a.dout), this.buf(7, a.delta)], grid1d(a.H * a.T), 'attention.delta');
    const dq = await this.attentionPipeline(a.D, 'dq_main');
    this.dispatch(enc, dq, [u, ...qkv, this.buf(8, a.dq)], [Math.ceil(a.T / tune.BQ), a.H], 'attention.dq');
    const dkdv = await this.attentionPipeline(a.D, 'dkdv_main');
    this.dispatch(enc, dkdv, [u, ...qkv, this.buf(9, a.dk), this.buf(10, a.dv)], [Math.ceil(a.T / tune.BK), a.KVH], 'attention.dkdv');
  }

  /**
   * Decode, one dispatch: q (1,H*D) against the caches' rows 0..P-1 and the new token's k, v (1,KVH*D)
   * -> out (1,H*D), k and v also written into row P of the caches kc, vc (maxT, KVH*D). P is u32 [1] of
   * `step` (the decode step's buffer, written each token), so the dispatch and its bind group stay the
   * same from token to token.
   */
  async attentionDecode(
    enc: GPUCommandEncoder,
    a: {
      q: TrackedBuffer;
      k: TrackedBuffer;
      v: TrackedBuffer;
      kc: TrackedBuffer;
      vc: TrackedBuffer;
      step: TrackedBuffer;
      out: TrackedBuffer;
      H: number;
      KVH: number;
      D: number;
    },
  ): Promise<void> {
    const u = this.buf(0, this.uniform([0, a.H, a.KVH, 1 / Math.sqrt(a.D)], 'uuuf'));
    const decode = await this.attentionPipeline(a.D, 'decode_main');
    this.dispatch(
      enc,
      decode,
      [
        u,
        this.buf(1, a.q),
        this.buf(2, a.k),
        this.buf(3, a.v),
        this.buf(4, a.out),
        this.buf(12, a.step),
        this.buf(13, a.kc),
        this.buf(14, a.vc),
      ],
      [a.H, 1],
      'attention.decode',
    );
  }

  // --- SwiGLU (kernels/swiglu.wgsl): forward / backward.

  /** h (n) = silu(gate) * up; n a multiple of 4 (the kernel takes four elements a thread) */
  async swiglu(enc: GPUCommandEncoder, a: { gate: TrackedBuffer; up: TrackedBuffer; h: TrackedBuffer; n: number }): Promise<void> {
    const pl = await this.pipelines.get('swiglu', 'swiglu', () => this.pipelines.source('swiglu'));
    const [gx, gy] = grid1d(swigluVec4s(a.n));
    this.dispatch(
      enc,
      pl,
      [this.buf(0, this.uniform([a.n / 4, 0, 0, 0], 'uuuu')), this.buf(1, a.gate), this.buf(2, a.up), this.buf(3, a.h)],
      [gx, gy],
      'swiglu',
    );
  }

  /** dgate, dup (n) from dh (n), given gate and up; n a multiple of 4 */
  async swigluBackward(
    enc: GPUCommandEncoder,
    a: { gate: TrackedBuffer; up: TrackedBuffer; dh: TrackedBuffer; dgate: TrackedBuffer; dup: TrackedBuffer; n: number },
  ): Promise<void> {
    const pl = await this.pipelines.get('swiglu', 'swiglu', () => this.pipelines.source('swiglu'), 'backward');
    const [gx, gy] = grid1d(swigluVec4s(a.n));
    this.dispatch(
      enc,
      pl,
      [
        this.buf(0, this.uniform([a.n / 4, 0, 0, 0], 'uuuu')),
        this.buf(1, a.gate),
        this.buf(2, a.up),
        this.buf(4, a.dh),
        this.buf(5, a.dgate),
        this.buf(6, a.dup),
      ],
      [gx, gy],
      'swiglu.backward',
    );
  }

  // --- Fused lm-head (kernels/lmhead.wgsl): forward (lse, log q, log(1-q)) / the rows' unit gradient (dz' from kept logits
  // or per recomputed vocabulary chunk; g = dz' W is matmulDx) / scatter of coef * g into the scored rows.

  /** Scratch for `lmhead`: (R, nTiles) partials and (R) target logits. */
  lmheadScratch(R: number, V: number): LmheadScratch {
    const { TN, WGX } = this.tuning.lmhead;
    const nTiles = Math.ceil(V / (TN * WGX));
    return {
      part: this.buffers.create('lmhead partials', R * nTiles * 16, STORAGE),
      tlogit: this.buffers.create('lmhead target logits', R * 4, STORAGE),
      nTiles,
    };
  }

  private async lmheadPipeline(w: GpuWeight, entry: 'partial' | 'reduce' | 'dz_rows' | 'scatter'): Promise<GPUComputePipeline> {
    const { format, cols: C } = w;
    const { TM, TN, WGX, WGY } = this.tuning.lmhead;
    const key = `lmhead:${format}:${C}:${TM}:${TN}:${WGX}:${WGY}`;
    return this.pipelines.get(
      'lmhead',
      key,
      () =>
        fillTemplate(
          this.pipelines.source('lmhead'),
          { TM, TN4: TN / 4, WGX, WGY, K: C, WEIGHT: this.weightCode(format, 6, 'KW') },
          'lmhead',
        ),
      entry,
    );
  }

  /**
   * The lm-head's tiled pass over the vocabulary (`partial`): in the forward it writes each tile's
   * partial logsumexp and the target logits (mode 0; mode 2 also keeps the logits in `dz`); in
   * mode 1 the chunk's unit gradient dz' from the forward's lse and log(1 - q). Binding 12 is dz (a
   * placeholder in mode 0).
   */
  private async lmheadPartial(
    enc: GPUCommandEncoder,
    a: LmheadRows,
    u: GPUBuffer,
    dz: TrackedBuffer | GPUBuffer,
    grid: [number, number],
    label: string,
  ): Promise<void> {
    const entries = [
      this.buf(0, u),
      this.buf(1, a.h),
      this.buf(2, a.rows),
      this.buf(3, a.targets),
      this.buf(4, a.scratch.part),
      this.buf(5, a.scratch.tlogit),
      this.buf(8, a.lse),
      this.buf(10, a.log1mq),
      this.buf(12, dz),
      ...this.weightEntries(a.w, 6),
    ];
    this.dispatch(enc, await this.lmheadPipeline(a.w, 'partial'), entries, grid, label);
  }

  /**
   * h (T,C), rows (R), targets (R), W (V,C) -> lse (R), logp (R) = log q_y, log1mq (R) = log(1 - q_y);
   * logits are never stored.
   */
  async lmhead(enc: GPUCommandEncoder, a: LmheadRows): Promise<void> {
    const { TM, WGY } = this.tuning.lmhead;
    const { nTiles } = a.scratch;
    const u = this.uniform([a.R, a.w.rows, nTiles, 0, 0, 0, 0, 0], 'uuuuuuuu');
    await this.lmheadPartial(enc, a, u, this.dummy('write'), [nTiles, Math.ceil(a.R / (TM * WGY))], 'lmhead.partial');
    await this.lmheadReduce(enc, a, u);
  }

  /**
   * `lmhead`, keeping the logits: also writes z (R, VC) = h[rows] @ W^T into `z`, VC the vocabulary
   * padded to 4 (the caller bounds R so that R x VC stays small); `lmheadDzRows` then turns them into
   * the unit gradient with no recompute.
   */
  async lmheadKeep(enc: GPUCommandEncoder, a: LmheadRows & { z: TrackedBuffer }): Promise<void> {
    const { TM, WGY } = this.tuning.lmhead;
    const { nTiles } = a.scratch;
    const u = this.uniform([a.R, a.w.rows, nTiles, 2, 0, paddedVocab(a.w.rows), 0, 0], 'uuuuuuuu');
    await this.lmheadPartial(enc, a, u, a.z, [nTiles, Math.ceil(a.R / (TM * WGY))], 'lmhead.keep');
    await this.lmheadReduce(enc, a, u);
  }

  /** z (R, VC) from `lmheadKeep` -> dz' in place: -1 at the target, the softmax without the target off it, 0 past V. */
  async lmheadDzRows(
    enc: GPUCommandEncoder,
    a: Pick<LmheadRows, 'targets' | 'R' | 'w' | 'lse' | 'log1mq'> & { z: TrackedBuffer },
  ): Promise<void> {
    const u = this.uniform([a.R, a.w.rows, 0, 2, 0, paddedVocab(a.w.rows), 0, 0], 'uuuuuuuu');
    this.dispatch(
      enc,
      await this.lmheadPipeline(a.w, 'dz_rows'),
      [this.buf(0, u), this.buf(3, a.targets), this.buf(8, a.lse), this.buf(10, a.log1mq), this.buf(12, a.z)],
      [a.R, 1],
      'lmhead.dz_rows',
    );
  }

  /** The lm-head's per-row combine of the tiles' partials: lse, logp, log1mq (R). */
  private async lmheadReduce(enc: GPUCommandEncoder, a: LmheadRows, u: GPUBuffer): Promise<void> {
    const { part, tlogit } = a.scratch;
    this.dispatch(
      enc,
      await this.lmheadPipeline(a.w, 'reduce'),
      [
        this.buf(0, u),
        this.buf(3, a.targets),
        this.buf(4, part),
        this.buf(5, tlogit),
        this.buf(8, a.lse),
        this.buf(9, a.logp),
        this.buf(10, a.log1mq),
      ],
      [Math.ceil(a.R / 64), 1],
      'lmhead.reduce',
    );
  }

  /**
   * The unit gradient's logit part for one vocabulary chunk [vOff, vOff+VC), recomputing the logits:
   * dz' (R, VC) = -1 at the target, the softmax without the target off it (from h and the forward's
   * lse and log(1 - q)). VC is a multiple of 4; columns past V are 0.
   */
  async lmheadDz(enc: GPUCommandEncoder, a: LmheadRows & { dz: TrackedBuffer; vOff: number; VC: number }): Promise<void> {
    const { TM, TN, WGX, WGY } = this.tuning.lmhead;
    const u = this.uniform([a.R, a.w.rows, a.scratch.nTiles, 1, a.vOff, a.VC, 0, 0], 'uuuuuuuu');
    await this.lmheadPartial(enc, a, u, a.dz, [Math.ceil(a.VC / (TN * WGX)), Math.ceil(a.R / (TM * WGY))], 'lmhead.dz');
  }

  /** dxn (T,C) rows[r] += coef[r] * dh (R,C) row r (rows distinct) */
  async scatterRows(
    enc: GPUCommandEncoder,
    a: { w: GpuWeight; rows: TrackedBuffer; coef: TrackedBuffer; dh: TrackedBuffer; dxn: TrackedBuffer; R: number },
  ): Promise<void> {
    const u = this.uniform([a.R, a.w.rows, 0, 0, 0, 0, 0, 0], 'uuuuuuuu');
    this.dispatch(
      enc,
      await this.lmheadPipeline(a.w, 'scatter'),
      [this.buf(0, u), this.buf(2, a.rows), this.buf(11, a.coef), this.buf(13, a.dh), this.buf(14, a.dxn)],
      grid1d((a.R * a.w.cols) / 4),
      'lmhead.scatter',
    );
  }
}
