/**
 * WGSL sources and the pipeline cache.
 *
 * Kernels are plain files in `kernels/`. A host provides them through `KernelSources` (Node reads
 * the folder, the browser build imports them as text). Sources may contain `{{NAME}}` holes that
 * the host fills at pipeline creation (tile sizes, head dim, weight format), sections
 * `//#section NAME` … `//#end` that can be picked on their own (weight-format snippets) or
 * included in another kernel by a line `//#include FILE NAME` (the matmul variants' shared parts), and
 * unrolled blocks `//#for v in N` … `//#end` (N a number or a template value) whose lines are
 * repeated N times with `{v}` replaced by 0..N-1. Register tiles are written with the latter:
 * shader compilers (SwiftShader's in particular) keep dynamically indexed private arrays in
 * memory, while unrolled scalar/vector variables stay in registers.
 */
import { KernelError } from '../errors.ts';

/** File name (without .wgsl) → WGSL text. */
export type KernelSources = Record<string, string>;

/** Text of `//#section name` … its `//#end` in `src`; a section may hold `//#for` blocks. */
export function section(src: string, name: string, file = '?'): string {
  const lines = src.split('\n');
  const start = lines.findIndex((l) => new RegExp(`^\\s*//#section ${name}\\b`).test(l));
  if (start < 0) throw new KernelError(file, `no section "${name}"`);
  let depth = 1;
  for (let j = start + 1; j < lines.length; j++) {
    if (/^\s*\/\/#(for|section) /.test(lines[j])) depth++;
    else if (/^\s*\/\/#end\s*$/.test(lines[j]) && --depth === 0)
      return lines
        .slice(start + 1, j)
        .map((l) => `${l}\n`)
        .join('');
  }
  throw new KernelError(file, `unclosed section "${name}"`);
}

/** Expand `//#for v in N` … `//#end` blocks (nestable); N is a number or a key of `values`. */
export function unroll(src: string, values: Record<string, string | number> = {}, file = '?'): string {
  const lines = src.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i].match(/^\s*\/\/#for (\w+) in (\w+)\s*$/);
    if (!m) {
      out.push(lines[i]);
      continue;
    }
    let depth = 1;
    let j = i + 1;
    for (; j < lines.length; j++) {
      if (/^\s*\/\/#for /.test(lines[j])) depth++;
      else if (/^\s*\/\/#end\s*$/.test(lines[j]) && --depth === 0) break;
    }
    if (depth !== 0) throw new KernelError(file, `unclosed //#for ${m[1]}`);
    const count = Number(/^\d+$/.test(m[2]) ? m[2] : values[m[2]]);
    if (!Number.isInteger(count)) throw new KernelError(file, `//#for ${m[1]} in ${m[2]}: no count`);
    const body = lines.slice(i + 1, j).join('\n');
    for (let k = 0; k < count; k++) out.push(unroll(body.replaceAll(`{${m[1]}}`, String(k)), values, file));
    i = j;
  }
  return out.join('\n');
}

/** Fill `{{NAME}}` holes (after unrolling `//#for` blocks); every hole must have a value. */
export function fillTemplate(src: string, values: Record<string, string | number>, file = '?'): string {
  return unroll(src, values, file).replace(/\{\{(\w+)\}\}/g, (_, k: string) => {
    if (!(k in values)) throw new KernelError(file, `template value {{${k}}} not given`);
    return String(values[k]);
  });
}

/** Compiles each distinct (kernel, parameters) once per device. */
export class PipelineCache {
  private cache = new Map<string, GPUComputePipeline>();
  constructor(
    readonly device: GPUDevice,
    readonly sources: KernelSources,
  ) {}

  /** How many pipelines (kernel, parameters, entry point) have been compiled. */
  get size(): number {
    return this.cache.size;
  }

  /** The WGSL text of kernels/`name`.wgsl, each `//#include file section` line replaced by that section of that file. */
  source(name: string): string {
    const s = this.sources[name];
    if (s === undefined) throw new KernelError(name, 'kernel source not found');
    return s.replace(/^[ \t]*\/\/#include (\w+) (\w+)[ \t]*$/gm, (_, file: string, part: string) => section(this.source(file), part, file));
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
    // Scoped, so a compile error is reported once, as a KernelError, not also as an uncaptured error.
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ label: name, code: wgsl });
    const info = await module.getCompilationInfo();
    await this.device.popErrorScope();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length) {
      throw new KernelError(name, errors.map((e) => `line ${e.lineNum}:${e.linePos} ${e.message}`).join('; '));
    }
    this.device.pushErrorScope('validation');
    const pipeline = await this.device
      .createComputePipelineAsync({ label: name, layout: 'auto', compute: { module, entryPoint } })
      .catch((e: Error) => {
        throw new KernelError(name, e.message);
      });
    const err = await this.device.popErrorScope();
    if (err) throw new KernelError(name, err.message);
    this.cache.set(full, pipeline);
    return pipeline;
  }
}
