/**
 * All LoRA parameters of a model in one flat f32 GPU buffer (and, when training, a gradient buffer
 * of the same layout), so the optimizer, gradient-norm clipping and checkpoints are single passes
 * over contiguous memory. Each A (r,in) and B (out,r) starts at a 256-byte boundary (64 floats) so
 * it can be bound on its own; the padding stays zero.
 */
import { NlftError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { projectionShapes } from '../model/size.ts';
import { PROJECTIONS, type Projection } from '../model/weights.ts';
import type { BufferManager, TrackedBuffer } from './buffers.ts';
import type { GpuWeight } from './ops.ts';
import type { LoraSet } from '../model/lora.ts';

/** Where one adapted projection's factors live in the flat buffers (offsets in floats). */
export interface LoraEntry {
  layer: number;
  proj: Projection;
  r: number;
  scale: number;
  inF: number;
  outF: number;
  aOff: number;
  bOff: number;
}

const ALIGN = 64; // floats: 256 bytes, WebGPU's minStorageBufferOffsetAlignment upper bound

const alignUp = (n: number) => Math.ceil(n / ALIGN) * ALIGN;

/** A view of a slice of a tracked buffer (not separately allocated). */
function view(t: TrackedBuffer, offFloats: number, floats: number, label: string): TrackedBuffer {
  return { buffer: t.buffer, label, size: floats * 4, offset: offFloats * 4 };
}

export class LoraParams {
  private constructor(
    readonly entries: LoraEntry[],
    /** Total floats of the flat layout (padding included). */
    readonly n: number,
    readonly params: TrackedBuffer,
    private readonly buffers: BufferManager,
    /** Gradients, same layout; null until `enableGradients()`. */
    public grads: TrackedBuffer | null = null,
  ) {}

  /** Lay out and upload `lora` (layers and projections in model order). */
  static create(buffers: BufferManager, config: LlamaConfig, lora: LoraSet): LoraParams {
    const shapes = projectionShapes(config);
    const entries: LoraEntry[] = [];
    let n = 0;
    lora.forEach((layer, i) => {
      if (i >= config.numLayers)
        throw new NlftError(`LoRA adapters for layer ${i}, but the model has ${config.numLayers} layers`, 'lora-shape');
      for (const proj of PROJECTIONS) {
        const f = layer[proj];
        if (!f) continue;
        const [outF, inF] = shapes[proj];
        if (!Number.isInteger(f.r) || f.r <= 0 || f.r % 4 !== 0)
          throw new NlftError(`LoRA rank ${f.r} is not supported: the rank must be a positive multiple of 4`, 'lora-rank');
        if (f.A.length !== f.r * inF || f.B.length !== outF * f.r) {
          throw new NlftError(
            `LoRA layer ${i} ${proj}: expected A [${f.r}, ${inF}] and B [${outF}, ${f.r}], got ${f.A.length} and ${f.B.length} values`,
            'lora-shape',
          );
        }
        const aOff = n;
        const bOff = alignUp(aOff + f.r * inF);
        n = alignUp(bOff + outF * f.r);
        entries.push({ layer: i, proj, r: f.r, scale: f.scale, inF, outF, aOff, bOff });
      }
    });
    const flat = new Float32Array(Math.max(n, ALIGN));
    for (const e of entries) {
      const f = lora[e.layer][e.proj]!;
      flat.set(f.A, e.aOff);
      flat.set(f.B, e.bOff);
    }
    return new LoraParams(entries, flat.length, buffers.upload('lora params', flat), buffers);
  }

  /** Allocate the (zeroed) gradient buffer. */
  enableGradients(): TrackedBuffer {
    this.grads ??= this.buffers.create('lora grads', this.n * 4);
    return this.grads;
  }

  entry(layer: number, proj: Projection): LoraEntry | undefined {
    return this.entries.find((e) => e.layer === layer && e.proj === proj);
  }

  /** A (r,in) and B (out,r) of an entry, as f32 weights for the matmul kernels. */
  weights(e: LoraEntry): { A: GpuWeight; B: GpuWeight } {
    return {
      A: { format: 'f32', rows: e.r, cols: e.inF, data: view(this.params, e.aOff, e.r * e.inF, 'lora A'), scales: null },
      B: { format: 'f32', rows: e.outF, cols: e.r, data: view(this.params, e.bOff, e.outF * e.r, 'lora B'), scales: null },
    };
  }

  /** dA (r,in) and dB (out,r) of an entry, as views of the gradient buffer. */
  gradViews(e: LoraEntry): { dA: TrackedBuffer; dB: TrackedBuffer } {
    const g = this.grads;
    if (!g) throw new Error('LoraParams.gradViews before enableGradients');
    return { dA: view(g, e.aOff, e.r * e.inF, 'lora dA'), dB: view(g, e.bOff, e.outF * e.r, 'lora dB') };
  }

  /** Split a flat host copy (params or grads) into per-layer factors. */
  unflatten(flat: Float32Array): LoraSet {
    const out: LoraSet = [];
    for (const e of this.entries) {
      (out[e.layer] ??= {})[e.proj] = {
        A: flat.slice(e.aOff, e.aOff + e.r * e.inF),
        B: flat.slice(e.bOff, e.bOff + e.outF * e.r),
        r: e.r,
        scale: e.scale,
      };
    }
    for (let i = 0; i < out.length; i++) out[i] ??= {};
    return out;
  }

  /** Read the current parameters back. */
  async read(): Promise<LoraSet> {
    return this.unflatten(await this.buffers.readF32(this.params, this.n));
  }

  /** Read the accumulated gradients back (same shapes as the parameters). */
  async readGrads(): Promise<LoraSet> {
    if (!this.grads) throw new Error('LoraParams.readGrads before enableGradients');
    return this.unflatten(await this.buffers.readF32(this.grads, this.n));
  }

  destroy(): void {
    this.buffers.destroy(this.params);
    this.buffers.destroy(this.grads);
  }
}
