/**
 * A per-kernel profile of the GPU work of training steps (`npm run bench -- train --profile`,
 * `nlft train --profile`; docs/architecture.md §3c).
 *
 * `GpuProfiler.attach(device)` wraps the device's command encoders and queue while it is attached,
 * so every compute pass, submit, upload and readback of the engine reports here without any
 * call site knowing; `detach()` restores them, and an engine with no profiler attached pays
 * nothing. It measures, per training step (`step()` marks each step's end):
 * - GPU time per kernel family (a compute pass's label, e.g. `matmul.q8`, `attention.dq`) and per
 *   phase (its command encoder's label, e.g. `train forward`, `backward`, `optimizer step`): from
 *   `timestamp-query` writes at each pass's beginning and end where the device has the feature,
 *   resolved and read back once per step; otherwise "fenced": each submit's span on the CPU clock,
 *   from its submit to `onSubmittedWorkDone`, per phase only;
 * - dispatches and submits, and bind groups created (none once a run's passes reuse theirs);
 * - bytes uploaded (`queue.writeBuffer`) and read back (buffers created for mapped reading);
 * - the time the host waited for the GPU (a mapped read or `onSubmittedWorkDone` pending) and
 *   the rest of the step's wall time, the CPU's own work (encoding, loss rules, bookkeeping).
 */

/** Where the GPU times come from. */
export type ProfileSource = 'timestamp-query' | 'fenced';

/** One kernel family in one phase, or one phase, averaged per step. */
export interface ProfileRow {
  /** Kernel family (a compute pass's label); '' in a phase row. */
  kernel: string;
  /** Phase (the label of the command encoder the pass was recorded in). */
  phase: string;
  /** Dispatches per step. */
  calls: number;
  /** GPU milliseconds per step (0 for kernels when the source is fenced). */
  ms: number;
}

/** Per-step averages over the profiled steps. */
export interface ProfileReport {
  source: ProfileSource;
  steps: number;
  /** Wall time of a step. */
  wallMs: number;
  /** GPU time: the sum of the kernels' spans (timestamp-query) or of the submits' spans (fenced). */
  gpuMs: number;
  /** Time the host spent waiting for the GPU (mapped reads, onSubmittedWorkDone). */
  waitMs: number;
  /** Wall time the host was not waiting: encoding, CPU rules, bookkeeping. */
  cpuMs: number;
  dispatches: number;
  submits: number;
  /** Bind groups created per step (`BindGroupCache`: none once the passes reuse theirs). */
  bindGroups: number;
  uploads: number;
  uploadBytes: number;
  readbacks: number;
  readbackBytes: number;
  /** Kernel families per phase, by GPU time (then calls), largest first. */
  kernels: ProfileRow[];
  /** Phases, by GPU time, largest first. */
  phases: ProfileRow[];
}

interface StepCounters {
  start: number;
  end: number;
  submits: number;
  bindGroups: number;
  uploads: number;
  uploadBytes: number;
  readbacks: number;
  readbackBytes: number;
  waitMs: number;
}

interface PassRecord {
  step: number;
  kernel: string;
  phase: string;
  /** GPU nanoseconds, once resolved (timestamp-query). */
  ns: number;
}

/** A query set being filled: two timestamps per pass. */
interface QueryChunk {
  set: GPUQuerySet;
  passes: PassRecord[];
}

/** Timestamps per query set (the WebGPU maximum). */
const QUERIES_PER_SET = 4096;
const MAP_READ = 0x1;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const QUERY_RESOLVE = 0x200;

type Patchable = Record<string, unknown>;

export class GpuProfiler {
  readonly source: ProfileSource;
  private readonly steps: StepCounters[] = [];
  private readonly passes: PassRecord[] = [];
  /** Fenced spans: [step, phase, ms]. */
  private readonly spans: Array<[number, string, number]> = [];
  private chunk: QueryChunk | null = null;
  private readonly resolving: Promise<void>[] = [];
  private readonly restore: Array<() => void> = [];
  private waiting = 0;
  private waitStart = 0;
  private lastDone = 0;
  private readonly phaseOf = new WeakMap<GPUCommandBuffer, string>();
  private readonly orig: {
    createCommandEncoder: GPUDevice['createCommandEncoder'];
    createBuffer: GPUDevice['createBuffer'];
    createBindGroup: GPUDevice['createBindGroup'];
    submit: GPUQueue['submit'];
    onSubmittedWorkDone: GPUQueue['onSubmittedWorkDone'];
  };

  private constructor(
    private readonly device: GPUDevice,
    timestamps: boolean,
  ) {
    this.source = timestamps && device.features.has('timestamp-query') ? 'timestamp-query' : 'fenced';
    const queue = device.queue;
    this.orig = {
      createCommandEncoder: device.createCommandEncoder.bind(device),
      createBuffer: device.createBuffer.bind(device),
      createBindGroup: device.createBindGroup.bind(device),
      submit: queue.submit.bind(queue),
      onSubmittedWorkDone: queue.onSubmittedWorkDone.bind(queue),
    };
    this.newStep();
  }

  /**
   * Start profiling every command encoder, submit, upload and readback of `device` from now on.
   * @param opts.timestamps false: fenced CPU timing even where the device has `timestamp-query`.
   */
  static attach(device: GPUDevice, opts: { timestamps?: boolean } = {}): GpuProfiler {
    const p = new GpuProfiler(device, opts.timestamps ?? true);
    const queue = device.queue;
    const writeBuffer = queue.writeBuffer.bind(queue);
    p.patch(device as unknown as Patchable, 'createCommandEncoder', (desc?: GPUCommandEncoderDescriptor) =>
      p.wrapEncoder(p.orig.createCommandEncoder(desc), desc?.label || '(unlabelled)'),
    );
    p.patch(device as unknown as Patchable, 'createBuffer', (desc: GPUBufferDescriptor) => {
      const buf = p.orig.createBuffer(desc);
      if (desc.usage & MAP_READ) p.wrapReadback(buf, desc.size);
      return buf;
    });
    p.patch(device as unknown as Patchable, 'createBindGroup', (desc: GPUBindGroupDescriptor) => {
      p.current.bindGroups++;
      return p.orig.createBindGroup(desc);
    });
    p.patch(queue as unknown as Patchable, 'submit', (cmds: Iterable<GPUCommandBuffer>) => p.submit([...cmds]));
    p.patch(queue as unknown as Patchable, 'onSubmittedWorkDone', () => p.waitFor(p.orig.onSubmittedWorkDone()));
    p.patch(queue as unknown as Patchable, 'writeBuffer', (...args: Parameters<GPUQueue['writeBuffer']>) => {
      const s = p.current;
      s.uploads++;
      s.uploadBytes += writtenBytes(args[2], args[3], args[4]);
      return writeBuffer(...args);
    });
    return p;
  }

  /** The end of a step: what follows counts in the next one. */
  step(): void {
    this.current.end = performance.now();
    this.resolveQueries();
    this.newStep();
  }

  /**
   * Per-step averages over the completed steps after the first `skip` (compiles and warm-up),
   * or over all completed steps when there are no more.
   */
  async report(skip = 0): Promise<ProfileReport> {
    this.resolveQueries();
    await Promise.all(this.resolving);
    const done = this.steps.length - 1;
    const first = done > skip ? skip : 0;
    const counted = this.steps.slice(first, done);
    const n = Math.max(1, counted.length);
    const sum = (f: (s: StepCounters) => number) => counted.reduce((a, s) => a + f(s), 0) / n;
    const inRange = (step: number) => step >= first && step < done;
    const kernels = new Map<string, ProfileRow>();
    const phases = new Map<string, ProfileRow>();
    const add = (map: Map<string, ProfileRow>, kernel: string, phase: string, calls: number, ms: number) => {
      const key = `${kernel}\u0000${phase}`;
      const row = map.get(key) ?? { kernel, phase, calls: 0, ms: 0 };
      row.calls += calls / n;
      row.ms += ms / n;
      map.set(key, row);
    };
    for (const p of this.passes) {
      if (!inRange(p.step)) continue;
      add(kernels, p.kernel, p.phase, 1, p.ns / 1e6);
      add(phases, '', p.phase, 1, this.source === 'fenced' ? 0 : p.ns / 1e6);
    }
    for (const [step, phase, ms] of this.spans) if (inRange(step)) add(phases, '', phase, 0, ms);
    const byTime = (a: ProfileRow, b: ProfileRow) => b.ms - a.ms || b.calls - a.calls;
    const phaseRows = [...phases.values()].sort(byTime);
    const wallMs = sum((s) => s.end - s.start);
    const waitMs = sum((s) => s.waitMs);
    return {
      source: this.source,
      steps: counted.length,
      wallMs,
      gpuMs: phaseRows.reduce((a, r) => a + r.ms, 0),
      waitMs,
      cpuMs: wallMs - waitMs,
      dispatches: phaseRows.reduce((a, r) => a + r.calls, 0),
      submits: sum((s) => s.submits),
      bindGroups: sum((s) => s.bindGroups),
      uploads: sum((s) => s.uploads),
      uploadBytes: sum((s) => s.uploadBytes),
      readbacks: sum((s) => s.readbacks),
      readbackBytes: sum((s) => s.readbackBytes),
      kernels: [...kernels.values()].sort(byTime),
      phases: phaseRows,
    };
  }

  /** Stop profiling: the device's own methods are back. */
  detach(): void {
    for (const undo of this.restore.splice(0).reverse()) undo();
  }

  private get current(): StepCounters {
    return this.steps[this.steps.length - 1];
  }

  private newStep(): void {
    const start = performance.now();
    this.steps.push({
      start,
      end: start,
      submits: 0,
      bindGroups: 0,
      uploads: 0,
      uploadBytes: 0,
      readbacks: 0,
      readbackBytes: 0,
      waitMs: 0,
    });
  }

  /** Replace `obj[name]` by `fn` until `detach`. */
  private patch(obj: Patchable, name: string, fn: unknown): void {
    const own = Object.getOwnPropertyDescriptor(obj, name);
    obj[name] = fn;
    this.restore.push(() => {
      if (own) Object.defineProperty(obj, name, own);
      else delete obj[name];
    });
  }

  private wrapEncoder(enc: GPUCommandEncoder, phase: string): GPUCommandEncoder {
    const begin = enc.beginComputePass.bind(enc);
    const finish = enc.finish.bind(enc);
    const e = enc as unknown as Patchable;
    e.beginComputePass = (desc: GPUComputePassDescriptor = {}) => {
      const rec: PassRecord = { step: this.steps.length - 1, kernel: desc.label || '(unlabelled)', phase, ns: 0 };
      this.passes.push(rec);
      if (this.source === 'fenced' || desc.timestampWrites) return begin(desc);
      if (!this.chunk || this.chunk.passes.length * 2 >= QUERIES_PER_SET) this.chunk = this.openChunk();
      const i = this.chunk.passes.length * 2;
      this.chunk.passes.push(rec);
      return begin({ ...desc, timestampWrites: { querySet: this.chunk.set, beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 } });
    };
    e.finish = (desc?: GPUCommandBufferDescriptor) => {
      const cmd = finish(desc);
      this.phaseOf.set(cmd, phase);
      return cmd;
    };
    return enc;
  }

  private openChunk(): QueryChunk {
    this.resolveQueries();
    return { set: this.device.createQuerySet({ type: 'timestamp', count: QUERIES_PER_SET }), passes: [] };
  }

  /** Resolve the open query set (its passes are all submitted by now) and read it back in the background. */
  private resolveQueries(): void {
    const chunk = this.chunk;
    this.chunk = null;
    if (!chunk || chunk.passes.length === 0) return;
    const count = chunk.passes.length * 2;
    const resolved = this.orig.createBuffer({ label: 'profile timestamps', size: count * 8, usage: QUERY_RESOLVE | COPY_SRC });
    const staging = this.orig.createBuffer({ label: 'profile timestamps:readback', size: count * 8, usage: MAP_READ | COPY_DST });
    const enc = this.orig.createCommandEncoder({ label: 'profile' });
    enc.resolveQuerySet(chunk.set, 0, count, resolved, 0);
    enc.copyBufferToBuffer(resolved, 0, staging, 0, count * 8);
    this.orig.submit([enc.finish()]);
    this.resolving.push(
      staging.mapAsync(MAP_READ).then(() => {
        const t = new BigUint64Array(staging.getMappedRange());
        // A pass whose encoder was never submitted leaves its queries at 0; its time counts as 0.
        chunk.passes.forEach((p, i) => (p.ns = t[2 * i + 1] > t[2 * i] ? Number(t[2 * i + 1] - t[2 * i]) : 0));
        staging.unmap();
        for (const b of [staging, resolved]) b.destroy();
        chunk.set.destroy();
      }),
    );
  }

  private submit(cmds: GPUCommandBuffer[]): void {
    this.current.submits++;
    this.orig.submit(cmds);
    if (this.source !== 'fenced') return;
    const step = this.steps.length - 1;
    const phase = cmds.map((c) => this.phaseOf.get(c) ?? '(unlabelled)').join('+');
    const t0 = performance.now();
    void this.orig.onSubmittedWorkDone().then(() => {
      const t1 = performance.now();
      this.spans.push([step, phase, t1 - Math.max(t0, this.lastDone)]);
      this.lastDone = t1;
    });
  }

  /** A buffer for mapped reading: a readback; the time its map is pending is time waited. */
  private wrapReadback(buf: GPUBuffer, size: number): void {
    const s = this.current;
    s.readbacks++;
    s.readbackBytes += size;
    const map = buf.mapAsync.bind(buf);
    (buf as unknown as Patchable).mapAsync = (...args: Parameters<GPUBuffer['mapAsync']>) => this.waitFor(map(...args));
  }

  /** Count the time `p` is pending as waiting (overlapping waits once). */
  private waitFor<T>(p: Promise<T>): Promise<T> {
    if (this.waiting++ === 0) this.waitStart = performance.now();
    const settle = () => {
      if (--this.waiting === 0) this.current.waitMs += performance.now() - this.waitStart;
    };
    return p.finally(settle);
  }
}

/** Bytes a `writeBuffer(buffer, offset, data, dataOffset, size)` call copies (offsets and size count elements of a typed array). */
function writtenBytes(data: BufferSource | SharedArrayBuffer, dataOffset = 0, size?: number): number {
  const unit =
    ArrayBuffer.isView(data) && 'BYTES_PER_ELEMENT' in data ? (data as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT : 1;
  return size !== undefined ? size * unit : data.byteLength - dataOffset * unit;
}

const fmt = (v: number, digits = 1) => v.toFixed(digits);

/** The report as Markdown: a summary, the kernels by GPU time, the phases. */
export function formatProfile(r: ProfileReport): string {
  const kib = (b: number) => `${fmt(b / 1024)} KiB`;
  const share = (ms: number) => (r.gpuMs > 0 ? `${fmt((100 * ms) / r.gpuMs)} %` : '-');
  const lines = [
    `profile    ${r.steps} step(s), GPU times from ${r.source === 'fenced' ? 'fenced submits (CPU clock, per phase)' : 'timestamp-query'}; per step:`,
    `           wall ${fmt(r.wallMs)} ms = waiting for the GPU ${fmt(r.waitMs)} ms + CPU ${fmt(r.cpuMs)} ms; GPU busy ${fmt(r.gpuMs)} ms`,
    `           ${fmt(r.dispatches, 0)} dispatches, ${fmt(r.submits, 0)} submits, ${fmt(r.bindGroups, 0)} bind groups created, ` +
      `${fmt(r.uploads, 0)} uploads (${kib(r.uploadBytes)}), ${fmt(r.readbacks, 0)} readbacks (${kib(r.readbackBytes)})`,
    '',
    '| kernel | phase | calls/step | GPU ms/step | share | µs/call |',
    '|---|---|---|---|---|---|',
    ...r.kernels.map(
      (k) =>
        `| ${k.kernel} | ${k.phase} | ${fmt(k.calls, 0)} | ${r.source === 'fenced' ? '-' : fmt(k.ms, 2)} | ${r.source === 'fenced' ? '-' : share(k.ms)} | ` +
        `${r.source === 'fenced' || k.calls === 0 ? '-' : fmt((1000 * k.ms) / k.calls)} |`,
    ),
    '',
    '| phase | dispatches/step | GPU ms/step | share |',
    '|---|---|---|---|',
    ...r.phases.map((p) => `| ${p.phase} | ${fmt(p.calls, 0)} | ${fmt(p.ms, 2)} | ${share(p.ms)} |`),
  ];
  return lines.join('\n');
}
