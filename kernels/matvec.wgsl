// Matrix-vector product for one row (decode, T = 1), the LoRA up-projection and the residual fused:
//   out (N) = beta*out + x (K) @ W(N,K)^T + s * u (r) @ B(N,r)^T,   u = x A^T (r) of the adapter
// W is a frozen base weight in f32/q8/q4 or a LoRA factor A (f32, then r = 0), read a block at a time
// by `dot_block` (kernels/qweight.wgsl, sections `f32_dot`/`q8_dot`/`q4_dot`, spliced in as WEIGHT):
// a block is BK4 vec4 of x (32 k for q8/q4: one scale, applied once to the block's integer dot;
// 16 int8 weights or a whole q4 block a load). Fusions: the adapter's B product (r FMAs a column)
// and the residual add (beta = 1) are done in the epilogue of the base product, so an adapted
// projection is two dispatches (u = x A^T, then this) instead of three, and its output is written
// once. Without an adapter r = 0 and the u/B bindings are placeholders.
// With one row, a matmul tile has nothing to reuse across rows: the work is streaming W once, K
// FMAs per column. Three shapes of that stream, chosen per adapter (MATVEC_VARIANTS in src/engine/ops.ts):
//   `cols_main`: each thread owns 4*TN4 consecutive columns over all of K; no workgroup memory and
//     no barrier (what SwiftShader runs fast: it suspends a workgroup's invocations at a barrier);
//   `splitk_main`: a workgroup owns 4*TN4 columns, its WG threads take blocks b = lane, lane+WG, ...
//     (a GPU's threads then read consecutive blocks of a row) and their partial sums are reduced in
//     workgroup memory, a tree with a barrier per level;
//   `subgroup_main` (only where the adapter has `subgroups`): the same split of K over a workgroup
//     of 4 threads, which is one subgroup at any subgroup size (at least 4), reduced by subgroupAdd:
//     neighbouring threads read neighbouring blocks of a row, with no workgroup memory or barrier.
// The column set-up and a block's step are kernels/matvec_common.wgsl's, shared by the three.
// K must be a multiple of 4 (32 for quantized weights; BK4 divides K/4); any N works (columns past
// N are clamped on load and skipped on store). Workgroups fold into 2-D past 65535 (the vocabulary's columns).
//
// CPU reference: test/reference/cpu-ops.ts matmulRef (T = 1, on the dequantized weight, plus the
// adapter's s * (x A^T) B^T by the same reference).
// Test: test/gpu/matvec.test.ts (every variant, f32/q8/q4, with and without an adapter).

{{ENABLE}}
const TN4: u32 = {{TN4}}u;
const WG: u32 = {{WG}}u;
const BK4: u32 = {{BK4}}u;

struct Params { N: u32, r: u32, beta: f32, s: f32, K: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;     // (K/4)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // (N)
@group(0) @binding(5) var<storage, read> u: array<vec4<f32>>;     // (r/4) the adapter's x A^T
@group(0) @binding(6) var<storage, read> lb: array<vec4<f32>>;    // (N, r/4) the adapter's B

{{WEIGHT}}

/// out[n] = beta*out[n] + acc + s * u . B[n], for a column n < N.
fn finish(n: u32, acc: f32) {
  if (n >= p.N) { return; }
  var r = acc;
  if (p.r > 0u) {
    let r4 = p.r / 4u;
    var d = vec4<f32>(0.0);
    for (var j = 0u; j < r4; j++) { d += u[j] * lb[n * r4 + j]; }
    r += p.s * (d.x + d.y + d.z + d.w);
  }
  if (p.beta != 0.0) { r += p.beta * out[n]; }
  out[n] = r;
}

/// The first of the 4*TN4 columns of workgroup `wg` (folded 2-D grid) at thread `lane` of `lanes`.
fn first_col(wg: vec3<u32>, nwg: vec3<u32>, lane: u32, lanes: u32) -> u32 {
  return ((wg.y * nwg.x + wg.x) * lanes + lane) * (TN4 * 4u);
}

@compute @workgroup_size({{WG}})
fn cols_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lane: u32) {
  let n0 = first_col(wg, nwg, lane, WG);
  if (n0 >= p.N) { return; }
//#include matvec_common columns
  for (var b = 0u; b < p.K / (4u * BK4); b++) {
//#include matvec_common block
  }
//#for j in TN4
  finish(c{j}, acc{j}.x);
  finish(c{j} + 1u, acc{j}.y);
  finish(c{j} + 2u, acc{j}.z);
  finish(c{j} + 3u, acc{j}.w);
//#end
}

var<workgroup> partial: array<vec4<f32>, WG * TN4>;

@compute @workgroup_size({{WG}})
fn splitk_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lane: u32) {
  // Every thread reaches every barrier: the bounds are checked only on load and store.
  let n0 = first_col(wg, nwg, 0u, 1u);
//#include matvec_common columns
  for (var b = lane; b < p.K / (4u * BK4); b += WG) {
//#include matvec_common block
  }
//#for j in TN4
  partial[{j}u * WG + lane] = acc{j};
//#end
  for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
    workgroupBarrier();
    if (lane < stride) {
//#for j in TN4
      partial[{j}u * WG + lane] += partial[{j}u * WG + lane + stride];
//#end
    }
  }
  workgroupBarrier();
  if (lane < TN4 * 4u) {
    let sum = partial[(lane / 4u) * WG];
    finish(n0 + lane, sum[lane % 4u]);
  }
}

// SUBGROUPS is 1 where the subgroup variant is compiled (with `enable subgroups;` above), else 0.
//#for sg in SUBGROUPS
@compute @workgroup_size(4)
fn subgroup_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lane: u32) {
  // No early return: every thread reaches subgroupAdd (the bounds are checked on load and store).
  let n0 = first_col(wg, nwg, 0u, 1u);
//#include matvec_common columns
  for (var b = lane; b < p.K / (4u * BK4); b += 4u) {
//#include matvec_common block
  }
//#for j in TN4
  let sum{j} = subgroupAdd(acc{j});
  finish(c{j} + lane, sum{j}[lane]);
//#end
}
//#end
