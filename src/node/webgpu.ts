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

/** Dawn ticks run back to back (≈ a few µs each) before the rest of a wait goes on the 1 ms timer. */
const IMMEDIATE_TICKS = 64;

/**
 * dawn.node resolves `mapAsync` and `onSubmittedWorkDone` by calling `Device.Tick` from a
 * `setImmediate` loop for as long as one is pending (`AsyncRunner::QueueTick`, which looks
 * `setImmediate` up on the global object at every tick): a busy loop that holds one CPU core at
 * 100 % while the GPU works. On a software adapter (SwiftShader) that core is one the GPU's own
 * threads need: a toy-math training step took 1.5–3.5× longer with it on 2 shared cores
 * (docs/architecture.md §3c). So a wait's first `IMMEDIATE_TICKS` ticks still run at once (short
 * waits keep their latency), and the rest go on a 1 ms timer. Dawn's tick is recognised as what it
 * is: a native function of no parameters and no name, scheduled without arguments; every other
 * `setImmediate` call is passed through untouched.
 */
function throttleDawnTicks(): void {
  const original = globalThis.setImmediate;
  const nativeSource = /\{\s*\[native code\]\s*\}$/;
  let streak = 0;
  let last = 0;
  const throttled = (callback: (...a: unknown[]) => void, ...args: unknown[]) => {
    const isDawnTick =
      args.length === 0 && callback.length === 0 && callback.name === '' && nativeSource.test(Function.prototype.toString.call(callback));
    if (!isDawnTick) return original(callback, ...args);
    const now = performance.now();
    streak = now - last > 2 ? 0 : streak + 1; // a gap: a new wait
    last = now;
    return streak < IMMEDIATE_TICKS ? original(callback) : setTimeout(callback, 1);
  };
  globalThis.setImmediate = throttled as typeof setImmediate;
}

/**
 * The Dawn toggles of the Node host, from the environment:
 * - `timestamp_quantization` off: exact timestamp-query values for `--profile` (Dawn rounds them to 64 µs by
 *   default, a browser's privacy rule).
 * - `disable_robustness` on unless `NLFT_ROBUSTNESS` is set (to anything but `0`): Tint then leaves out the index
 *   clamp it puts on every storage-buffer access (a browser's defence against untrusted pages; here the only
 *   shaders are the engine's own, each tested against its CPU reference, and Dawn's Vulkan backend still runs with
 *   the driver's `robustBufferAccess`). On SwiftShader the clamps were a quarter of a toy-math step's compile time
 *   and a sixth of each later step (docs/architecture.md §3b). `NLFT_ROBUSTNESS=1` puts them back (to tell a
 *   kernel's out-of-bounds bug from a driver's).
 */
export function dawnToggles(env: Record<string, string | undefined>): string[] {
  const toggles = ['disable-dawn-features=timestamp_quantization'];
  const keepClamps = (env.NLFT_ROBUSTNESS ?? '0') !== '0' && env.NLFT_ROBUSTNESS !== '';
  if (!keepClamps) toggles.push('enable-dawn-features=disable_robustness');
  return toggles;
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
  throttleDawnTicks();
  instance = create(dawnToggles(process.env));
  return instance;
}
