/**
 * WebGPU in Node through Dawn (the `webgpu` npm package).
 *
 * Dawn's Vulkan backend needs a Vulkan driver. On CPU-only Linux machines the one that works is
 * SwiftShader, which Debian's chromium package installs at /usr/lib/chromium/vk_swiftshader_icd.json
 * (Mesa's lavapipe lacks features Dawn requires). Unless the user chose drivers already
 * (VK_ICD_FILENAMES / VK_DRIVER_FILES), we list the system's drivers plus SwiftShader, so a real
 * GPU is still preferred when one is present.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const SWIFTSHADER_ICDS = ['/usr/lib/chromium/vk_swiftshader_icd.json', '/usr/lib/chromium-browser/vk_swiftshader_icd.json'];
const ICD_DIRS = ['/etc/vulkan/icd.d', '/usr/share/vulkan/icd.d', '/usr/local/share/vulkan/icd.d', '/usr/local/nvidia/share/vulkan/icd.d'];

/** The Vulkan driver manifests Dawn should consider (lavapipe excluded: Dawn rejects it). */
export function vulkanDriverFiles(): string[] {
  const files: string[] = [];
  for (const dir of ICD_DIRS) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir)) if (f.endsWith('.json') && !f.startsWith('lvp_')) files.push(join(dir, f));
  }
  for (const f of SWIFTSHADER_ICDS) if (existsSync(f)) files.push(f);
  return files;
}

let instance: GPU | null = null;

/** The process-wide Dawn GPU object (like `navigator.gpu`). */
export async function nodeGpu(): Promise<GPU> {
  if (instance) return instance;
  if (!process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES) {
    const files = vulkanDriverFiles();
    if (files.length) process.env.VK_ICD_FILENAMES = files.join(':');
  }
  // Dawn's Vulkan loader complains (harmlessly) when XDG_RUNTIME_DIR is unset.
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const { create, globals } = (await import('webgpu')) as unknown as {
    create: (flags: string[]) => GPU;
    globals: Record<string, unknown>;
  };
  Object.assign(globalThis, globals);
  // Exact timestamp-query values for `--profile` (Dawn rounds them to 64 µs by default, a browser's privacy rule).
  instance = create(['disable-dawn-features=timestamp_quantization']);
  return instance;
}
