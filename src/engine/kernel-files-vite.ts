/** Browser host: every kernels/*.wgsl bundled as text by Vite. */
import type { KernelSources } from './kernels.ts';

const files = import.meta.glob('../../kernels/*.wgsl', { query: '?raw', import: 'default', eager: true }) as Record<string, string>;

export function bundledKernelSources(): KernelSources {
  const out: KernelSources = {};
  for (const [path, text] of Object.entries(files)) out[path.replace(/^.*\//, '').replace(/\.wgsl$/, '')] = text;
  return out;
}
