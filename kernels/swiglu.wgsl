// SwiGLU forward: h (T,F) = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
// gate and up are kept for the backward pass, so h has its own buffer.

struct Params { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n) { return; }
  let g = gate[i];
  h[i] = g / (1.0 + exp(-g)) * up[i];
}
