/**
 * WebGPU adapter and device acquisition, the same in a page, a Worker and Node (Dawn).
 *
 * We request the adapter's real limits (never the 128/256 MiB defaults) and record the optional
 * features the kernels can use. Device loss is surfaced as a typed `DeviceLostError` through
 * `GpuContext.lost` and `GpuContext.check()`; a command the GPU refused outside any error scope as a
 * `GpuCommandError` from `check()`.
 */
import { DeviceLostError, GpuCommandError, GpuUnavailableError } from '../errors.ts';

/** What the engine knows about the adapter it runs on. */
export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /**
   * A software adapter, the GPU API run on the CPU (SwiftShader): `GPUAdapterInfo.isFallbackAdapter`,
   * or SwiftShader by name where the browser does not say.
   */
  software: boolean;
  /** Optional features we may use. */
  features: { shaderF16: boolean; subgroups: boolean; timestampQuery: boolean };
  /** The narrowest subgroup the adapter may run (`GPUAdapterInfo.subgroupMinSize`; 0 where unknown or without subgroups). */
  subgroupMinSize: number;
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxComputeWorkgroupsPerDimension: number;
    maxStorageBuffersPerShaderStage: number;
  };
}

export interface GpuContext {
  device: GPUDevice;
  adapter: AdapterSummary;
  /** Resolves (never rejects) with the error once the device is lost. */
  lost: Promise<DeviceLostError>;
  /**
   * Throws the DeviceLostError if the device has been lost, or a GpuCommandError if the device
   * reported an uncaught error (validation, out of memory) since the context was made: results
   * read after it cannot be trusted.
   */
  check(): void;
  /**
   * Whether a failure came from a lost device: the loss (also one this context's `destroy` made),
   * or null once the queue has drained without a loss being reported. Never hangs: a lost
   * device's queue drains at once.
   */
  lossSoFar(): Promise<DeviceLostError | null>;
  destroy(): void;
}

const LIMIT_NAMES = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
] as const;

/** A short adapter name, e.g. "nvidia / hopper" or "google / swiftshader". */
export function adapterName(a: AdapterSummary): string {
  return [a.vendor, a.architecture].filter((s) => s).join(' / ') || a.description || 'unknown adapter';
}

/** A one-line description of the adapter, for logs and the CLI. */
export function describeAdapter(a: AdapterSummary): string {
  const name = [a.vendor, a.architecture, a.device, a.description].filter((s) => s).join(' / ') || 'unknown adapter';
  const feats = Object.entries(a.features)
    .filter(([, on]) => on)
    .map(([k]) => k)
    .join(', ');
  return `${name} [features: ${feats || 'none'}; maxStorageBufferBindingSize ${a.limits.maxStorageBufferBindingSize}]`;
}

/**
 * Acquire an adapter and a device with the adapter's full limits.
 * @param gpu `navigator.gpu` in a page or Worker, or the Dawn instance in Node (see src/node/webgpu.ts).
 */
export async function acquireGpu(
  gpu: GPU | undefined,
  opts: { powerPreference?: GPUPowerPreference; useF16?: boolean } = {},
): Promise<GpuContext> {
  if (!gpu) throw new GpuUnavailableError('WebGPU is not available in this environment (no navigator.gpu).');
  const adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance' });
  if (!adapter)
    throw new GpuUnavailableError(
      "No WebGPU adapter found. On Linux, a Vulkan driver is needed (SwiftShader from Debian's chromium package works).",
    );
  const has = (f: string) => adapter.features.has(f as GPUFeatureName);
  const features = {
    shaderF16: has('shader-f16') && opts.useF16 !== false,
    subgroups: has('subgroups'),
    timestampQuery: has('timestamp-query'),
  };
  const requiredFeatures: GPUFeatureName[] = [];
  if (features.shaderF16) requiredFeatures.push('shader-f16');
  if (features.subgroups) requiredFeatures.push('subgroups' as GPUFeatureName);
  if (features.timestampQuery) requiredFeatures.push('timestamp-query');
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) requiredLimits[name] = adapter.limits[name];
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  } catch (e) {
    throw new GpuUnavailableError(`The WebGPU adapter refused a device: ${(e as Error).message}`);
  }
  const info = adapter.info;
  const summary: AdapterSummary = {
    vendor: info?.vendor ?? '',
    architecture: info?.architecture ?? '',
    device: info?.device ?? '',
    description: info?.description ?? '',
    software: info?.isFallbackAdapter === true || /swiftshader/i.test(`${info?.architecture} ${info?.description}`),
    features,
    subgroupMinSize: features.subgroups ? ((info as { subgroupMinSize?: number } | undefined)?.subgroupMinSize ?? 0) : 0,
    limits: Object.fromEntries(LIMIT_NAMES.map((n) => [n, device.limits[n]])) as AdapterSummary['limits'],
  };
  let lostError: DeviceLostError | null = null;
  let destroyed = false;
  const lost = device.lost.then((l) => {
    lostError = new DeviceLostError(destroyed ? 'destroyed' : (l.reason ?? 'unknown'), l.message || 'no detail');
    return lostError;
  });
  let refused = 0;
  let firstRefusal = '';
  device.addEventListener?.('uncapturederror', (ev: Event) => {
    const message = (ev as GPUUncapturedErrorEvent).error.message;
    if (refused++ === 0) {
      // Dawn: a first line, then detail, then " - While ..." lines naming the labelled objects involved.
      const lines = message.split('\n').map((l) => l.trim());
      firstRefusal = [lines[0], ...lines.filter((l) => l.startsWith('- ')).map((l) => l.slice(2))].join('; ');
    }
    if (refused <= 3) console.error(`WebGPU error: ${message}`);
  });
  return {
    device,
    adapter: summary,
    lost,
    check() {
      if (lostError && !destroyed) throw lostError;
      if (refused > 0) throw new GpuCommandError(refused, firstRefusal);
    },
    async lossSoFar() {
      if (lostError) return lostError;
      const drained = device.queue.onSubmittedWorkDone().then(
        () => null,
        () => null,
      );
      const first = await Promise.race([lost, drained]);
      if (first) return first;
      await new Promise((r) => setTimeout(r, 0)); // a loss reported with the drain arrives in the next task
      return lostError;
    },
    destroy() {
      destroyed = true;
      device.destroy();
    },
  };
}
