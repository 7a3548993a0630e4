/**
 * WGSL sources and the pipeline cache.
 *
 * Kernels are plain files in `kernels/`. A host provides them through `KernelSources` (Node reads
 * the folder, the browser build imports them as text). Sources may contain `{{NAME}}` holes that
 * the host fills at pipeline creation (tile sizes, head dim, weight format), and sections
 * `//#section NAME` … `//#end` that can be picked on their own (weight-format snippets).
 */
import { KernelError } from '../errors.ts';

/** File name (without .wgsl) → WGSL text. */
export type KernelSources = Record<string, string>;

/** Text of `//#section name` … `//#end` in `src`. */
export function section(src: string, name: string, file = '?'): string {
  const m = src.match(new RegExp(`//#section ${name}\\b[^\\n]*\\n([\\s\\S]*?)//#end`));
  if (!m) throw new KernelError(file, `no section "${name}"`);
  return m[1];
}

/** Fill `{{NAME}}` holes; every hole must have a value. */
export function fillTemplate(src: string, values: Record<string, string | number>, file = '?'): string {
  return src.replace(/\{\{(\w+)\}\}/g, (_, k: string) => {
    if (!(k in values)) throw new KernelError(file, `template value {{${k}}} not given`);
    return String(values[k]);
  });
}

/** Compiles each distinct (kernel, parameters) once per device. */
export class PipelineCache {
  private cache = new Map<string, GPUComputePipeline>();
  constructor(readonly device: GPUDevice, readonly sources: KernelSources) {}

  source(name: string): string {
    const s = this.sources[name];
    if (s === undefined) throw new KernelError(name, 'kernel source not found');
    return s;
  }

  /**
   * The pipeline for `code` (already specialised), compiled on first use.
   * @param key cache key (kernel name + parameters); `name` names the kernel in errors.
   */
  async get(name: string, key: string, code: () => string, entryPoint = 'main'): Promise<GPUComputePipeline> {
    const full = `${key}#${entryPoint}`;
    const hit = this.cache.get(full);
    if (hit) return hit;
    const wgsl = code();
    const module = this.device.createShaderModule({ label: name, code: wgsl });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length) {
      throw new KernelError(name, errors.map((e) => `line ${e.lineNum}:${e.linePos} ${e.message}`).join('; '));
    }
    this.device.pushErrorScope('validation');
    const pipeline = await this.device.createComputePipelineAsync({ label: name, layout: 'auto', compute: { module, entryPoint } }).catch((e: Error) => {
      throw new KernelError(name, e.message);
    });
    const err = await this.device.popErrorScope();
    if (err) throw new KernelError(name, err.message);
    this.cache.set(full, pipeline);
    return pipeline;
  }
}
