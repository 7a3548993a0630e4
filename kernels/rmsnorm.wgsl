// RMSNorm forward: out (T,C) = x * w / sqrt(mean(x^2) + eps); rstd (T) saved for the backward pass.
// One workgroup per row; the sum of squares is a tree reduction in workgroup memory.

const WG: u32 = 64u;

struct Params { T: u32, C: u32, eps: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (T,C)
@group(0) @binding(2) var<storage, read> w: array<f32>;          // (C)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // (T,C)
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>; // (T)

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
