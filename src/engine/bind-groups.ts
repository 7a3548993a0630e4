/**
 * Bind groups made once per (pipeline, bound buffer ranges) and reused for as long as those
 * buffers live (docs/architecture.md §3c): a training step that runs the same kernels over the
 * same buffers as the step before (weights, LoRA parameters and gradients, uniforms, and the
 * activations the buffer manager recycles between passes of the same shape) creates none.
 * The buffer manager drops every group that binds a buffer when it destroys that buffer.
 */

/** The bind groups of an engine, by pipeline and the exact buffer ranges bound. */
export class BindGroupCache {
  private readonly groups = new Map<string, { group: GPUBindGroup; buffers: GPUBuffer[] }>();
  /** Keys of the cached groups each buffer appears in. */
  private readonly byBuffer = new Map<GPUBuffer, Set<string>>();
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;

  constructor(private readonly device: GPUDevice) {}

  /** Bind groups held now. */
  get size(): number {
    return this.groups.size;
  }

  /** The bind group 0 of `pipeline` over buffer `entries`: the cached one, or a new one kept for next time. */
  get(pipeline: GPUComputePipeline, entries: GPUBindGroupEntry[], label: string): GPUBindGroup {
    const buffers = entries.map((e) => (e.resource as GPUBufferBinding).buffer);
    const key = [
      this.idOf(pipeline),
      ...entries.map((e, i) => {
        const r = e.resource as GPUBufferBinding;
        return `${e.binding}:${this.idOf(buffers[i])}:${r.offset ?? 0}:${r.size ?? ''}`;
      }),
    ].join('|');
    const hit = this.groups.get(key);
    if (hit) return hit.group;
    const group = this.device.createBindGroup({ label, layout: pipeline.getBindGroupLayout(0), entries });
    this.groups.set(key, { group, buffers });
    for (const b of buffers) {
      let keys = this.byBuffer.get(b);
      if (!keys) this.byBuffer.set(b, (keys = new Set()));
      keys.add(key);
    }
    return group;
  }

  /** Drop the groups that bind `buffer` (it is being destroyed). */
  forget(buffer: GPUBuffer): void {
    const keys = this.byBuffer.get(buffer);
    if (!keys) return;
    this.byBuffer.delete(buffer);
    for (const key of keys) {
      const entry = this.groups.get(key);
      this.groups.delete(key);
      for (const b of entry?.buffers ?? []) this.byBuffer.get(b)?.delete(key);
    }
  }

  private idOf(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) this.ids.set(o, (id = this.nextId++));
    return id;
  }
}
