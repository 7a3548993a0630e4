/**
 * GPU buffer manager: every buffer the engine allocates goes through here, so the bytes held
 * (current and peak) are known, and a buffer the device cannot bind is refused with a clear
 * message instead of a validation error deep inside a dispatch.
 */
import { GpuMemoryError } from '../errors.ts';
import { BindGroupCache } from './bind-groups.ts';

/** A buffer with the facts we keep about it. */
export interface TrackedBuffer {
  readonly buffer: GPUBuffer;
  readonly label: string;
  /** Bytes (of the view, when `offset` is set). */
  readonly size: number;
  /** Byte offset of a view into a larger buffer (a multiple of 256); absent for a whole buffer. */
  readonly offset?: number;
}

export const STORAGE = 0x80 | 0x8 | 0x4; // STORAGE | COPY_DST | COPY_SRC
export const UNIFORM = 0x40 | 0x8; //       UNIFORM | COPY_DST

/** A view of `bytes` bytes of `t` from byte `from` (a multiple of the device's storage offset alignment, 256 at most). */
export function viewOf(t: TrackedBuffer, from: number, bytes: number): TrackedBuffer {
  return { buffer: t.buffer, label: t.label, offset: (t.offset ?? 0) + from, size: bytes };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export class BufferManager {
  private live = new Map<GPUBuffer, TrackedBuffer>();
  /** Bytes currently allocated. */
  current = 0;
  /** Highest `current` since creation or the last `resetPeak()`. */
  peak = 0;
  /** Size of the largest single buffer allocated since creation or the last `resetPeak()`. */
  largest = 0;
  /** Bind groups over this manager's buffers; a group goes when a buffer it binds is destroyed. */
  readonly bindGroups: BindGroupCache;
  /**
   * Buffers a pass gave back (`recycle`) for the next pass of the same shape, by label, size and
   * usage, handed out in the order they were given; counted in `current`. The first `create` that
   * none of them serves destroys them all, so a run whose passes change shape holds no more than it
   * did without them.
   */
  private pool = new Map<string, TrackedBuffer[]>();
  /** Labels and sizes of the buffers last given to `recycle`. */
  private lastRecycled = '';

  /**
   * @param budget cap on total bytes (a memory budget chosen by the user); a job may set it for
   *   its duration (a training run within its budget) and restore it after.
   */
  constructor(
    readonly device: GPUDevice,
    public budget = Infinity,
  ) {
    this.bindGroups = new BindGroupCache(device);
  }

  /**
   * Allocate a storage buffer (size rounded up to 4 bytes; zero-size becomes 4), or hand back a
   * recycled one of the same label, size and usage, holding what its last pass left in it.
   */
  create(label: string, size: number, usage = STORAGE): TrackedBuffer {
    const bytes = Math.max(4, Math.ceil(size / 4) * 4);
    const reused = this.pool.get(`${label}|${bytes}|${usage}`)?.shift();
    if (reused && this.live.has(reused.buffer)) return reused;
    this.flushPool();
    const lim = this.device.limits;
    const bindLimit = usage & 0x40 ? lim.maxUniformBufferBindingSize : lim.maxStorageBufferBindingSize;
    if (bytes > lim.maxBufferSize || bytes > bindLimit) {
      throw new GpuMemoryError(
        `buffer "${label}" needs ${formatBytes(bytes)}, but this GPU allows at most ${formatBytes(Math.min(lim.maxBufferSize, bindLimit))} per buffer` +
          ' (try a smaller quantization, a shorter sequence, or a smaller model)',
      );
    }
    if (this.current + bytes > this.budget) {
      throw new GpuMemoryError(
        `buffer "${label}" (${formatBytes(bytes)}) would take GPU memory to ${formatBytes(this.current + bytes)}, over the budget of ${formatBytes(this.budget)}`,
      );
    }
    const buffer = this.device.createBuffer({ label, size: bytes, usage });
    const t: TrackedBuffer = { buffer, label, size: bytes };
    this.live.set(buffer, t);
    this.current += bytes;
    this.peak = Math.max(this.peak, this.current);
    this.largest = Math.max(this.largest, bytes);
    return t;
  }

  /** Allocate and fill from host data. */
  upload(label: string, data: Float32Array | Uint32Array | Int32Array): TrackedBuffer {
    const t = this.create(label, data.byteLength);
    this.device.queue.writeBuffer(t.buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    return t;
  }

  /**
   * One buffer holding `parts` one after another, each at an offset the device can bind, filled by
   * one `writeBuffer`; returns a view of each part (the whole buffer is registered in `live`).
   */
  uploadParts(live: TrackedBuffer[], label: string, parts: readonly (Float32Array | Uint32Array)[]): TrackedBuffer[] {
    const align = this.device.limits.minStorageBufferOffsetAlignment;
    const offsets: number[] = [];
    let end = 0;
    for (const p of parts) {
      offsets.push(end);
      end = Math.ceil((end + Math.max(4, p.byteLength)) / align) * align;
    }
    const whole = this.create(label, end);
    live.push(whole);
    const bytes = new Uint8Array(end);
    parts.forEach((p, i) => bytes.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), offsets[i]));
    this.device.queue.writeBuffer(whole.buffer, 0, bytes);
    return parts.map((p, i) => ({ buffer: whole.buffer, label: `${label}[${i}]`, size: Math.max(4, p.byteLength), offset: offsets[i] }));
  }

  /**
   * Give buffers back for the next pass of the same shape instead of destroying them, once the
   * commands that use them are submitted, when the pass before gave back buffers of the same
   * labels and sizes (else they are destroyed). Their content is not cleared: the engine's passes write
   * every buffer, or clear it themselves (the backward's accumulators), before they read it.
   */
  recycle(ts: readonly TrackedBuffer[]): void {
    // Kept only when the pass before gave back the same buffers: a run whose passes change shape
    // every time (records of different lengths) destroys them now, while the GPU runs, rather than
    // at the next pass's first request, when it waits for the host.
    const shape = ts.map((t) => `${t.label}|${t.size}`).join(';');
    const repeated = shape === this.lastRecycled;
    this.lastRecycled = shape;
    if (!repeated) {
      for (const t of ts) this.destroy(t);
      return;
    }
    for (const t of ts) {
      if (!this.live.has(t.buffer) || t.offset !== undefined) continue;
      const key = `${t.label}|${t.size}|${t.buffer.usage}`;
      const list = this.pool.get(key);
      if (list) list.push(t);
      else this.pool.set(key, [t]);
    }
  }

  /** Destroy the recycled buffers no pass took back. */
  flushPool(): void {
    const pooled = [...this.pool.values()].flat();
    this.pool.clear();
    for (const t of pooled) this.destroy(t);
  }

  /** `create` of `floats` f32 values for one job, remembered in `live` (the job frees that list). */
  f32In(live: TrackedBuffer[], label: string, floats: number): TrackedBuffer {
    const t = this.create(label, floats * 4);
    live.push(t);
    return t;
  }

  /** `upload` for one job, remembered in `live` (the job frees that list). */
  uploadIn(live: TrackedBuffer[], label: string, data: Float32Array | Uint32Array | Int32Array): TrackedBuffer {
    const t = this.upload(label, data);
    live.push(t);
    return t;
  }

  /** Free a buffer (safe to call twice). */
  destroy(t: TrackedBuffer | null | undefined): void {
    if (!t || !this.live.has(t.buffer)) return;
    this.live.delete(t.buffer);
    this.current -= t.size;
    this.bindGroups.forget(t.buffer);
    t.buffer.destroy();
  }

  destroyAll(): void {
    this.pool.clear();
    for (const t of [...this.live.values()]) this.destroy(t);
  }

  /** Start a new measurement: peak = current bytes, largest = 0 (only new allocations count). */
  resetPeak(): void {
    this.peak = this.current;
    this.largest = 0;
  }

  /** Live buffers, largest first (for memory reports). */
  list(): TrackedBuffer[] {
    return [...this.live.values()].sort((a, b) => b.size - a.size);
  }

  /**
   * Copy a buffer (or its first `bytes`) back to the host. With `enc`, the copy is recorded at the
   * end of that encoder's commands, which are submitted with it (one submit for work and readback).
   */
  async read(t: TrackedBuffer, bytes = t.size, enc = this.device.createCommandEncoder()): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.device.createBuffer({ label: `${t.label}:readback`, size, usage: 0x1 | 0x8 }); // MAP_READ | COPY_DST
    enc.copyBufferToBuffer(t.buffer, t.offset ?? 0, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(1); // GPUMapMode.READ
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return out;
  }

  async readF32(t: TrackedBuffer, count?: number, enc?: GPUCommandEncoder): Promise<Float32Array> {
    return new Float32Array(await this.read(t, (count ?? t.size / 4) * 4, enc));
  }
}
