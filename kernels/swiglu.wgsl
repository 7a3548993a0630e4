// SwiGLU forward and backward, elementwise over (T,F):
//   forward:  h = silu(g) * u,  silu(g) = g * sigmoid(g)
//   backward: dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  du = dh * silu(g)
// gate and up are kept from the forward pass, so h has its own buffer; the backward writes dg, du
// over its own outputs (dh is consumed). A thread takes four consecutive elements (n a multiple of
// 4: T*F, F a weight's width): on SwiftShader a thread an element spent more on its index and bounds
// check than on its arithmetic (a toy-math step's (T 720, F 384) calls: backward 2.8 ms, forward
// 2.1 ms an element a thread; 1.6 and 1.0 ms four at a time).
//
// CPU references: test/reference/cpu-ops.ts swigluRef, test/reference/cpu-backward.ts swigluBackwardRef.
// Tests: test/gpu/kernels.test.ts (forward), test/gpu/kernels-backward.test.ts (backward).

struct Params { n4: u32, _a: u32, _b: u32, _c: u32 } // n4: elements / 4
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> up: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> h: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dh: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dgate: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dup: array<vec4<f32>>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n4) { return; }
  let g = gate[i];
  h[i] = g / (1.0 + exp(-g)) * up[i];
}

@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = index(gid, nwg);
  if (i >= p.n4) { return; }
  let g = gate[i];
  let sg = 1.0 / (1.0 + exp(-g));
  let d = dh[i];
  dgate[i] = d * up[i] * sg * (1.0 + g * (1.0 - sg));
  dup[i] = d * g * sg;
}
