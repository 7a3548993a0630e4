/**
 * Typed dispatch of the forward kernels. Each op specialises its WGSL (tile sizes, weight
 * format, head dim), binds its buffers and records one dispatch into the caller's encoder.
 * Shapes follow llm.c comments: (T,C) = T rows of C floats, row-major.
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

/** Register-tile shapes, chosen per adapter (see bench/ and architecture.md 3b). TN is a multiple of 4. */
export interface Tuning {
  matmul: { TM: number; TN: number; WGX: number; WGY: number };
  lmhead: { TM: number; TN: number; WGX: number; WGY: number };
  attention: { BQ: number; BK: number };
}

export const DEFAULT_TUNING: Tuning = {
  matmul: { TM: 4, TN: 4, WGX: 8, WGY: 8 },
  lmhead: { TM: 4, TN: 4, WGX: 16, WGY: 4 },
  attention: { BQ: 32, BK: 16 },
};

const MAX_WG = 65535;

/** Workgroup counts for `n` invocations of a 1-D kernel of `wg` threads, folded into 2-D. */
export function grid1d(n: number, wg = 64): [number, number] {
  const groups = Math.ceil(n / wg);
  if (groups <= MAX_WG) return [Math.max(1, groups), 1];
  return [MAX_WG, Math.ceil(groups / MAX_WG)];
}

export class Ops {
  private uniforms = new Map<string, TrackedBuffer>();

  constructor(
    readonly device: GPUDevice,
    readonly pipelines: PipelineCache,
    readonly buffers: BufferManager,
    readonly tuning: Tuning = DEFAULT_TUNING,
  ) {}

  /** A uniform buffer holding `values` (u32 or f32 by the given kinds), cached by content. */
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

  /** WGSL of the weight-format section, with its bindings at `wb`, `wb+1`. */
  private weightCode(format: QuantFormat, wb: number): string {
    return fillTemplate(section(this.pipelines.source('qweight'), format, 'qweight'), { WB: wb, WB1: wb + 1 }, 'qweight');
  }

  private weightEntries(w: GpuWeight, wb: number): GPUBindGroupEntry[] {
    const e: GPUBindGroupEntry[] = [{ binding: wb, resource: { buffer: w.data.buffer } }];
    if (w.scales) e.push({ binding: wb + 1, resource: { buffer: w.scales.buffer } });
    return e;
  }

  private dispatch(enc: GPUCommandEncoder, pipeline: GPUComputePipeline, entries: GPUBindGroupEntry[], groups: [number, number, number?], label: string): void {
    const bind = this.device.createBindGroup({ label, layout: pipeline.getBindGroupLayout(0), entries });
    const pass = enc.beginComputePass({ label });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(groups[0], groups[1], groups[2] ?? 1);
    pass.end();
  }

  private buf(binding: number, t: TrackedBuffer | GPUBuffer): GPUBindGroupEntry {
    return { binding, resource: { buffer: 'buffer' in t ? t.buffer : t } };
  }

  /** ids (T) , table (V,C) -> out (T,C) */
  async embedding(enc: GPUCommandEncoder, a: { ids: TrackedBuffer; table: GpuWeight; out: TrackedBuffer; T: number }): Promise<void> {
    const { format, rows: V, cols: C } = a.table;
    const pl = await this.pipelines.get('embedding', `embedding:${format}:${C}`, () =>
      fillTemplate(this.pipelines.source('embedding'), { K: C, WEIGHT: this.weightCode(format, 3) }, 'embedding'),
    );
    const [gx, gy] = grid1d((a.T * C) / 4);
    this.dispatch(enc, pl, [this.buf(0, this.uniform([a.T, V, 0, 0], 'uuuu')), this.buf(1, a.ids), this.buf(2, a.out), ...this.weightEntries(a.table, 3)], [gx, gy], 'embedding');
  }

  /** x (T,C) , w (C) -> out (T,C), rstd (T) */
  async rmsnorm(enc: GPUCommandEncoder, a: { x: TrackedBuffer; w: TrackedBuffer; out: TrackedBuffer; rstd: TrackedBuffer; T: number; C: number; eps: number }): Promise<void> {
    const pl = await this.pipelines.get('rmsnorm', 'rmsnorm', () => this.pipelines.source('rmsnorm'));
    const gx = Math.min(a.T, MAX_WG);
    this.dispatch(
      enc,
      pl,
      [this.buf(0, this.uniform([a.T, a.C, a.eps, 0], 'uufu')), this.buf(1, a.x), this.buf(2, a.w), this.buf(3, a.out), this.buf(4, a.rstd)],
      [gx, Math.ceil(a.T / MAX_WG)],
      'rmsnorm',
    );
  }

  /** out (T,N) = beta*out + alpha * x (T,K) @ W(N,K)^T */
  async matmul(enc: GPUCommandEncoder, a: { x: TrackedBuffer; w: GpuWeight; out: TrackedBuffer; T: number; alpha?: number; beta?: number }): Promise<void> {
    const { format, rows: N, cols: K } = a.w;
    const { TM, TN, WGX, WGY } = this.tuning.matmul;
    const pl = await this.pipelines.get('matmul', `matmul:${format}:${K}:${TM}:${TN}:${WGX}:${WGY}`, () =>
      fillTemplate(this.pipelines.source('matmul'), { TM, TN4: TN / 4, WGX, WGY, K, WEIGHT: this.weightCode(format, 3) }, 'matmul'),
    );
    const u = this.uniform([a.T, N, a.alpha ?? 1, a.beta ?? 0], 'uuff');
    this.dispatch(enc, pl, [this.buf(0, u), this.buf(1, a.x), this.buf(2, a.out), ...this.weightEntries(a.w, 3)], [Math.ceil(N / (TN * WGX)), Math.ceil(a.T / (TM * WGY))], 'matmul');
  }

  /** x (T, nHeads*D) rotated in place with table cs (P, D/2, 2); dir -1 = inverse rotation */
  async rope(enc: GPUCommandEncoder, a: { x: TrackedBuffer; cs: TrackedBuffer; T: number; nHeads: number; D: number; dir?: 1 | -1 }): Promise<void> {
    const pl = await this.pipelines.get('rope', 'rope', () => this.pipelines.source('rope'));
    const [gx, gy] = grid1d((a.T * a.nHeads * a.D) / 2);
    this.dispatch(enc, pl, [this.buf(0, this.uniform([a.T, a.nHeads, a.D / 2, a.dir ?? 1], 'uuuf')), this.buf(1, a.x), this.buf(2, a.cs)], [gx, gy], 'rope');
  }

  /** q (T,H*D), k,v (T,KVH*D) -> out (T,H*D), lse (H,T); causal */
  async attention(
    enc: GPUCommandEncoder,
    a: { q: TrackedBuffer; k: TrackedBuffer; v: TrackedBuffer; out: TrackedBuffer; lse: TrackedBuffer; T: number; H: number; KVH: number; D: number },
  ): Promise<void> {
    const { BQ, BK } = this.tuning.attention;
    const pl = await this.pipelines.get('attention', `attention:${a.D}:${BQ}:${BK}`, () => fillTemplate(this.pipelines.source('attention'), { D4: a.D / 4, BQ, BK }, 'attention'));
    const u = this.uniform([a.T, a.H, a.KVH, 1 / Math.sqrt(a.D)], 'uuuf');
    this.dispatch(enc, pl, [this.buf(0, u), this.buf(1, a.q), this.buf(2, a.k), this.buf(3, a.v), this.buf(4, a.out), this.buf(5, a.lse)], [Math.ceil(a.T / BQ), a.H], 'attention');
  }

  /** h (n) = silu(gate) * up */
  async swiglu(enc: GPUCommandEncoder, a: { gate: TrackedBuffer; up: TrackedBuffer; h: TrackedBuffer; n: number }): Promise<void> {
    const pl = await this.pipelines.get('swiglu', 'swiglu', () => this.pipelines.source('swiglu'));
    const [gx, gy] = grid1d(a.n);
    this.dispatch(enc, pl, [this.buf(0, this.uniform([a.n, 0, 0, 0], 'uuuu')), this.buf(1, a.gate), this.buf(2, a.up), this.buf(3, a.h)], [gx, gy], 'swiglu');
  }

  /** Scratch for `lmhead`: (R, nTiles) partials and (R) target logits. */
  lmheadScratch(R: number, V: number): { part: TrackedBuffer; tlogit: TrackedBuffer; nTiles: number } {
    const { TN, WGX } = this.tuning.lmhead;
    const nTiles = Math.ceil(V / (TN * WGX));
    return { part: this.buffers.create('lmhead partials', R * nTiles * 8, STORAGE), tlogit: this.buffers.create('lmhead target logits', R * 4, STORAGE), nTiles };
  }

  /** h (T,C), rows (R), targets (R), W (V,C) -> lse (R), logp (R); logits never stored */
  async lmhead(
    enc: GPUCommandEncoder,
    a: { h: TrackedBuffer; rows: TrackedBuffer; targets: TrackedBuffer; R: number; w: GpuWeight; lse: TrackedBuffer; logp: TrackedBuffer; scratch: { part: TrackedBuffer; tlogit: TrackedBuffer; nTiles: number } },
  ): Promise<void> {
    const { format, rows: V, cols: C } = a.w;
    const { TM, TN, WGX, WGY } = this.tuning.lmhead;
    const key = `lmhead:${format}:${C}:${TM}:${TN}:${WGX}:${WGY}`;
    const code = () => fillTemplate(this.pipelines.source('lmhead'), { TM, TN4: TN / 4, WGX, WGY, K: C, WEIGHT: this.weightCode(format, 6) }, 'lmhead');
    const partial = await this.pipelines.get('lmhead', key, code, 'partial');
    const reduce = await this.pipelines.get('lmhead', key, code, 'reduce');
    const { part, tlogit, nTiles } = a.scratch;
    const u = this.uniform([a.R, V, nTiles, 0], 'uuuu');
    this.dispatch(
      enc,
      partial,
      [this.buf(0, u), this.buf(1, a.h), this.buf(2, a.rows), this.buf(3, a.targets), this.buf(4, part), this.buf(5, tlogit), ...this.weightEntries(a.w, 6)],
      [nTiles, Math.ceil(a.R / (TM * WGY))],
      'lmhead.partial',
    );
    this.dispatch(enc, reduce, [this.buf(0, u), this.buf(3, a.targets), this.buf(4, part), this.buf(5, tlogit), this.buf(8, a.lse), this.buf(9, a.logp)], [Math.ceil(a.R / 64), 1], 'lmhead.reduce');
  }
}
