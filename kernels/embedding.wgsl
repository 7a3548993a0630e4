// Embedding gather: ids (T) , table (V,C) -> out (T,C).
// The table is f32 or block-quantized like the linear weights (qweight.wgsl's `load_w4`), so a
// tied lm-head and the embedding share one quantized copy. C must be a multiple of 4 (32 when quantized).
//
// CPU reference: test/reference/cpu-ops.ts embeddingRef (quantized tables: on the dequantized table).
// Test: test/gpu/kernels.test.ts.

const KW: u32 = {{K}}u;

struct Params { T: u32, V: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;            // (T)
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>; // (T, C/4)

{{WEIGHT}}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let c4 = KW / 4u;
  if (i >= p.T * c4) { return; }
  let t = i / c4;
  let k4 = i % c4;
  out[i] = load_w4(min(ids[t], p.V - 1u), k4);
}
