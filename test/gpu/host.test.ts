/**
 * The WebGPU host layer on a real device: adapter facts, byte accounting, refusal of buffers the
 * device cannot bind, kernel compile errors as typed errors, and device loss as a DeviceLostError.
 */
import { describe, expect, it } from 'vitest';
import { BufferManager, formatBytes } from '../../src/engine/buffers.ts';
import { createNodeEngine } from '../../src/node/engine.ts';
import { dawnToggles } from '../../src/node/webgpu.ts';
import { DeviceLostError, GpuCommandError, GpuMemoryError, KernelError } from '../../src/errors.ts';
import { fillTemplate, unroll } from '../../src/engine/kernels.ts';

describe('host layer', () => {
  it('acquires a device with the adapter limits and reports features', async () => {
    const e = await createNodeEngine();
    const a = e.ctx.adapter;
    expect(a.limits.maxStorageBufferBindingSize).toBeGreaterThan(128 * 1024 * 1024); // not the 128 MiB default
    expect(e.ctx.device.limits.maxStorageBufferBindingSize).toBe(a.limits.maxStorageBufferBindingSize);
    expect(typeof a.features.shaderF16).toBe('boolean');
    expect(a.vendor + a.architecture + a.description).not.toBe('');
    e.destroy();
  });

  it('counts current and peak bytes, and refuses an unbindable buffer with the numbers', async () => {
    const e = await createNodeEngine();
    const b = new BufferManager(e.ctx.device);
    const x = b.create('x', 1000);
    const y = b.create('y', 4096);
    expect([b.current, b.peak, b.largest]).toEqual([1000 + 4096, 5096, 4096]);
    b.destroy(x);
    b.destroy(x); // twice is harmless
    expect([b.current, b.peak]).toEqual([4096, 5096]);
    b.resetPeak();
    expect([b.peak, b.largest]).toEqual([4096, 0]);
    const limit = Math.min(e.ctx.device.limits.maxBufferSize, e.ctx.device.limits.maxStorageBufferBindingSize);
    expect(() => b.create('logits', limit + 4)).toThrow(GpuMemoryError);
    expect(() => b.create('logits', limit + 4)).toThrow(
      `buffer "logits" needs ${formatBytes(limit + 4)}, but this GPU allows at most ${formatBytes(limit)} per buffer`,
    );
    expect(b.current).toBe(4096);
    b.destroy(y);
    e.destroy();
  });

  it('reports a WGSL error as a KernelError naming the kernel and line', async () => {
    const e = await createNodeEngine({});
    await expect(e.pipelines.get('broken', 'broken', () => '@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }')).rejects.toThrow(
      KernelError,
    );
    await expect(e.pipelines.get('broken', 'broken', () => '@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }')).rejects.toThrow(
      /^kernel broken: line 1:\d+ /,
    );
    e.destroy();
  });

  it("leaves out Tint's index clamps unless NLFT_ROBUSTNESS is set: an out-of-range read is the driver's, not the clamped last element", async () => {
    const NO_CLAMPS = 'enable-dawn-features=disable_robustness';
    for (const value of [undefined, '', '0']) expect(dawnToggles({ NLFT_ROBUSTNESS: value })).toContain(NO_CLAMPS);
    for (const value of ['1', 'yes'])
      expect(dawnToggles({ NLFT_ROBUSTNESS: value })).toEqual(['disable-dawn-features=timestamp_quantization']);
    const keep = !dawnToggles(process.env).includes(NO_CLAMPS); // what this process's Dawn instance was created with
    const e = await createNodeEngine();
    const device = e.ctx.device;
    const code = `@group(0) @binding(0) var<storage, read> at: array<u32>;
      @group(0) @binding(1) var<storage, read> src: array<f32>;
      @group(0) @binding(2) var<storage, read_write> dst: array<f32>;
      @compute @workgroup_size(1) fn main() { dst[0] = src[at[0]]; }`;
    const pipeline = await e.pipelines.get('oob read', 'oob read', () => code);
    const at = e.buffers.upload('at', Uint32Array.of(10));
    const src = e.buffers.upload('src', Float32Array.of(1, 2, 3, 4));
    const dst = e.buffers.create('dst', 4);
    const bind = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [at, src, dst].map((b, binding) => ({ binding, resource: { buffer: b.buffer } })),
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([enc.finish()]);
    const [read] = await e.buffers.readF32(dst);
    // Tint's clamp reads src[3]; without it, Vulkan's robustBufferAccess (which Dawn requires) answers: zero on SwiftShader.
    if (keep) expect(read).toBe(4);
    else if (e.ctx.adapter.software) expect(read).toBe(0);
    e.destroy();
  });

  it('surfaces device loss as a DeviceLostError from check() and ctx.lost', async () => {
    const e = await createNodeEngine();
    e.ctx.check();
    e.ctx.device.destroy(); // a loss the engine did not ask for
    const err = await e.ctx.lost;
    expect(err).toBeInstanceOf(DeviceLostError);
    expect(err.message).toMatch(/^GPU device lost \(destroyed\): /);
    expect(() => e.ctx.check()).toThrow(DeviceLostError);
  });
});

describe('refused commands', () => {
  it('a command the GPU refused outside any error scope makes check() throw a GpuCommandError', async () => {
    const e = await createNodeEngine();
    e.ctx.check();
    e.ctx.device.createBuffer({ label: 'refused on purpose', size: 4, usage: 0 }); // usage 0 is invalid
    await e.ctx.device.queue.onSubmittedWorkDone();
    await new Promise((r) => setTimeout(r, 50)); // the error event arrives asynchronously
    expect(() => e.ctx.check()).toThrow(GpuCommandError);
    expect(() => e.ctx.check()).toThrow(/^the GPU refused a command; the first: .*refused on purpose/);
    e.destroy();
  });
});

describe('kernel templates', () => {
  it('unrolls nested //#for blocks and fills holes', () => {
    const src = ['//#for i in 2', 'a{i}', '//#for j in N', 'b{i}{j}', '//#end', '//#end', 'c{{X}}'].join('\n');
    expect(fillTemplate(src, { N: 3, X: 7 })).toBe(['a0', 'b00', 'b01', 'b02', 'a1', 'b10', 'b11', 'b12', 'c7'].join('\n'));
    expect(() => unroll('//#for i in 2\nx')).toThrow('unclosed //#for i');
    expect(() => fillTemplate('{{Y}}', {}, 'k')).toThrow('kernel k: template value {{Y}} not given');
  });
});
