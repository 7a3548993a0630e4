// Global L2 norm of the accumulated LoRA gradient, on the GPU (adamw.wgsl reads it from `stats`
// to clip; the host reads it back only for metrics):
//   partial: thread i (of nParts) sums the squares of vec4s i, i + nParts, ... of grads[0 .. 4*n4),
//            n4 = floor(n/4), into part[i]: no workgroup memory and no barrier (SwiftShader suspends
//            a workgroup's invocations at each barrier: a tree per workgroup of 256 cost 9x the sums)
//   finish:  one workgroup sums part[0 .. nParts) and the n % 4 tail floats, and writes
//            stats[0] = sqrt(sum) * gradScale  (the norm of gradScale * grads)
// Two passes instead of atomics: WGSL has no float atomics, and a fixed reduction order (strided
// loops whose stride depends only on n, then a tree in workgroup memory) makes the result
// bit-identical from run to run. The host skips `partial` when n < 4 (nParts = 0).
//
// CPU reference: test/reference/adamw.ts gradNormRef.
// Test: test/gpu/optimizer.test.ts.

const WG: u32 = 256u;

struct Params { n: u32, n4: u32, nParts: u32, gradScale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g4: array<vec4<f32>>;    // (n4)  grads[0 .. 4*n4) as vec4
@group(0) @binding(2) var<storage, read_write> part: array<f32>;  // (nParts)
@group(0) @binding(3) var<storage, read> g: array<f32>;           // (n)   grads, for the tail
@group(0) @binding(4) var<storage, read_write> stats: array<f32>; // (1)   the norm

var<workgroup> acc: array<f32, WG>;

/// Sum of `v` over the workgroup, in a fixed tree order (every thread gets it).
fn treeSum(lid: u32, v: f32) -> f32 {
  acc[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { acc[lid] += acc[lid + s]; }
    workgroupBarrier();
  }
  return acc[0];
}

// grid: (ceil(nParts / PART_WG)); thread i reads vec4 i, then every nParts-th after it.
const PART_WG: u32 = 64u;
@compute @workgroup_size(PART_WG)
fn partial(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= p.nParts) { return; }
  var s = vec4<f32>(0.0);
  for (var i = t; i < p.n4; i += p.nParts) {
    let x = g4[i];
    s += x * x;
  }
  part[t] = (s.x + s.y) + (s.z + s.w);
}

// grid: (1)
@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_id) lid: vec3<u32>) {
  var s = 0.0;
  for (var i = lid.x; i < p.nParts; i += WG) { s += part[i]; }
  var total = treeSum(lid.x, s);
  if (lid.x == 0u) {
    for (var i = p.n4 * 4u; i < p.n; i++) {
      let x = g[i];
      total += x * x;
    }
    stats[0] = sqrt(total) * p.gradScale;
  }
}
