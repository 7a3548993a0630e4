// RMSNorm forward and backward (llm.c style pair).
// Forward: out (T,C) = x * w / sqrt(mean(x^2) + eps); rstd (T) saved for the backward pass.
// One workgroup per row; the sums are tree reductions in workgroup memory.
//
// CPU references: test/reference/cpu-ops.ts rmsnormRef, test/reference/cpu-backward.ts rmsnormBackwardRef.
// Tests: test/gpu/kernels.test.ts (forward), test/gpu/kernels-backward.test.ts (backward).

const WG: u32 = 64u;

struct Params { T: u32, C: u32, eps: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (T,C)
@group(0) @binding(2) var<storage, read> w: array<f32>;          // (C)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (T,C)
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>; // (T) written forward, read backward

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x + wg.y * 65535u;
  let inRange = t < p.T;
  let base = t * p.C;
  var ss = 0.0;
  if (inRange) {
    for (var c = lid.x; c < p.C; c += WG) { let v = x[base + c]; ss += v * v; }
  }
  partial[lid.x] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) { partial[lid.x] += partial[lid.x + s]; }
    workgroupBarrier();
  }
  if (!inRange) { return; }
  let r = inverseSqrt(partial[0] / f32(p.C) + p.eps);
  for (var c = lid.x; c < p.C; c += WG) { out[base + c] = x[base + c] * r * w[c]; }
  if (lid.x == 0u) { rstd[t] = r; }
}

// RMSNorm backward: y = x * r * w with r = 1/sqrt(mean(x^2) + eps) (saved as rstd), so
//   dx = r * (w * dy) - x * r^3 * mean(w * dy * x)
// accumulated into dx (the residual stream's gradient already flowing past the norm).
// The weight w is frozen (no dw). One workgroup per row.
@group(0) @binding(5) var<storage, read> dyb: array<f32>;          // (T,C)
@group(0) @binding(6) var<storage, read_write> dxb: array<f32>;    // (T,C)

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x + wg.y * 65535u;
  let inRange = t < p.T;
  let base = t * p.C;
  var s = 0.0;
  if (inRange) {
    for (var c = lid.x; c < p.C; c += WG) { s += w[c] * dyb[base + c] * x[base + c]; }
  }
  partial[lid.x] = s;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid.x < h) { partial[lid.x] += partial[lid.x + h]; }
    workgroupBarrier();
  }
  if (!inRange) { return; }
  let r = rstd[t];
  let k = r * r * r * partial[0] / f32(p.C);
  for (var c = lid.x; c < p.C; c += WG) { dxb[base + c] += r * w[c] * dyb[base + c] - x[base + c] * k; }
}
