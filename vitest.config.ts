import { defineConfig } from 'vitest/config';

// Unit tests run in Node; GPU tests drive real WebGPU through Dawn (`webgpu` package) on
// whatever Vulkan driver is present (SwiftShader on CPU-only machines). Forks, not threads:
// Dawn is a native addon and each test file gets its own process and device.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
