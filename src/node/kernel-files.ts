/** Node host: read every kernels/*.wgsl from disk. */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KernelSources } from '../engine/kernels.ts';

const KERNEL_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'kernels');

export function nodeKernelSources(dir = KERNEL_DIR): KernelSources {
  const out: KernelSources = {};
  for (const f of readdirSync(dir)) if (f.endsWith('.wgsl')) out[f.slice(0, -5)] = readFileSync(join(dir, f), 'utf8');
  return out;
}
