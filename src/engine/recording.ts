/**
 * Commands recorded once and encoded again into a fresh command encoder each time they run
 * (generation's decode step, docs/architecture.md §3d). WebGPU command buffers are single-use and
 * compute has no bundles, so what can be kept is everything but the encoding: the pipelines and bind
 * groups the ops create while recording, and the list of passes, dispatches and copies. Replaying
 * creates nothing; the kernels read what changes from step to step from buffers the caller writes.
 */

type Command = (enc: GPUCommandEncoder) => void;
type PassCommand = (pass: GPUComputePassEncoder) => void;

export class CommandRecording {
  private readonly commands: Command[] = [];
  /** Compute passes recorded (one dispatch each, as the ops record them). */
  passes = 0;
  /**
   * Stands in for a command encoder while recording: compute passes (pipeline, bind groups,
   * dispatches), buffer copies and clears are kept; any other call throws.
   */
  readonly encoder: GPUCommandEncoder;

  constructor() {
    const recorder: Partial<GPUCommandEncoder> = {
      beginComputePass: (desc?: GPUComputePassDescriptor) => this.recordPass(desc?.label),
      copyBufferToBuffer: ((...args: Parameters<GPUCommandEncoder['copyBufferToBuffer']>) =>
        void this.commands.push((enc) =>
          enc.copyBufferToBuffer(...(args as [GPUBuffer, number, GPUBuffer, number, number])),
        )) as GPUCommandEncoder['copyBufferToBuffer'],
      clearBuffer: (...args: Parameters<GPUCommandEncoder['clearBuffer']>) => void this.commands.push((enc) => enc.clearBuffer(...args)),
    };
    this.encoder = new Proxy(recorder, {
      get(target, name) {
        const v = target[name as keyof GPUCommandEncoder];
        if (v === undefined) throw new Error(`CommandRecording: ${String(name)} cannot be recorded`);
        return v;
      },
    }) as GPUCommandEncoder;
  }

  /** Encode every recorded command into `enc`, in order. */
  replay(enc: GPUCommandEncoder): void {
    for (const c of this.commands) c(enc);
  }

  private recordPass(label: string | undefined): GPUComputePassEncoder {
    const calls: PassCommand[] = [];
    const pass: Partial<GPUComputePassEncoder> = {
      setPipeline: (p: GPUComputePipeline) => void calls.push((ps) => ps.setPipeline(p)),
      setBindGroup: ((i: number, g: GPUBindGroup | null) =>
        void calls.push((ps) => ps.setBindGroup(i, g))) as GPUComputePassEncoder['setBindGroup'],
      dispatchWorkgroups: (x: number, y?: number, z?: number) => void calls.push((ps) => ps.dispatchWorkgroups(x, y, z)),
      end: () => {
        this.passes++;
        this.commands.push((enc) => {
          const ps = enc.beginComputePass({ label });
          for (const c of calls) c(ps);
          ps.end();
        });
      },
    };
    return pass as GPUComputePassEncoder;
  }
}
