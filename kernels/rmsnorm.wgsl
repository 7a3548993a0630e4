// RMSNorm forward and backward (llm.c style pair).
// Forward: out (T,C) = x * w / sqrt(mean(x^2) + eps); rstd (T) saved for the backward pass.
// `main`: one thread per row, no workgroup memory or barriers: a row's C values are summed by its thread
// (four interleaved partial sums, then their total). (A workgroup per row with a barrier tree
// reduction cost ~100 us a row on SwiftShader, 15 % of a toy-math step: docs/architecture.md §3c.)
// A row is read as vec4s (C a multiple of 4, a weight's width): a quarter of the loads, which are
// gathers across a SIMD group's rows on SwiftShader.
//
// CPU references: test/reference/cpu-ops.ts rmsnormRef, test/reference/cpu-backward.ts rmsnormBackwardRef.
// Tests: test/gpu/kernels.test.ts (forward), test/gpu/kernels-backward.test.ts (backward).

const WG: u32 = 64u;

struct Params { T: u32, C: u32, eps: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;          // (T,C/4)
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;          // (C/4)
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;  // (T,C/4)
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;       // (T) written forward, read backward

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x + gid.y * 65535u * WG;
  if (t >= p.T) { return; }
  let C4 = p.C / 4u;
  let base = t * C4;
  var ss = vec4<f32>(0.0);
  for (var c = 0u; c < C4; c++) { let v = x[base + c]; ss += v * v; }
  let r = inverseSqrt((ss.x + ss.y + ss.z + ss.w) / f32(p.C) + p.eps);
  for (var c = 0u; c < C4; c++) { out[base + c] = x[base + c] * r * w[c]; }
  rstd[t] = r;
}

// Forward, a row a workgroup (`row_main`, for a step of a few rows: decode's one): the thread-per-row
// `main` leaves all but one lane of a SIMD group idle there and walks the row alone. Here RL threads
// (one SIMD group on SwiftShader, so the barrier suspends nothing) each take every RL-th vec4 of the
// row; their partial sums meet in workgroup memory.
const RL: u32 = 4u;
var<workgroup> partial: array<f32, RL>;

@compute @workgroup_size(RL)
fn row_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let t = wg.x;
  let C4 = p.C / 4u;
  let base = t * C4;
  var ss = vec4<f32>(0.0);
  for (var c = lane; c < C4; c += RL) { let v = x[base + c]; ss += v * v; }
  partial[lane] = ss.x + ss.y + ss.z + ss.w;
  workgroupBarrier();
  let r = inverseSqrt((partial[0] + partial[1] + partial[2] + partial[3]) / f32(p.C) + p.eps);
  for (var c = lane; c < C4; c += RL) { out[base + c] = x[base + c] * r * w[c]; }
  if (lane == 0u) { rstd[t] = r; }
}

// RMSNorm backward: y = x * r * w with r = 1/sqrt(mean(x^2) + eps) (saved as rstd), so
//   dx = r * (w * dy) - x * r^3 * mean(w * dy * x)
// accumulated into dx (the residual stream's gradient already flowing past the norm).
// The weight w is frozen (no dw). One thread per row.
@group(0) @binding(5) var<storage, read> dyb: array<vec4<f32>>;          // (T,C/4)
@group(0) @binding(6) var<storage, read_write> dxb: array<vec4<f32>>;    // (T,C/4)

@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x + gid.y * 65535u * WG;
  if (t >= p.T) { return; }
  let C4 = p.C / 4u;
  let base = t * C4;
  var s4 = vec4<f32>(0.0);
  for (var c = 0u; c < C4; c++) { s4 += w[c] * dyb[base + c] * x[base + c]; }
  let r = rstd[t];
  let k = r * r * r * (s4.x + s4.y + s4.z + s4.w) / f32(p.C);
  for (var c = 0u; c < C4; c++) { dxb[base + c] += r * w[c] * dyb[base + c] - x[base + c] * k; }
}
