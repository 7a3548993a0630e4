// Linear layer forward: out (T,N) = beta*out + alpha * x (T,K) @ W(N,K)^T
//
// W is a frozen base weight in f32/q8/q4 (kernels/qweight.wgsl, spliced in as `load_w4`),
// dequantized in registers, or a LoRA factor (f32). Fusions:
//   - beta = 1 accumulates into `out`: o_proj/down_proj add straight into the residual stream,
//     and the LoRA up-projection adds alpha/r * (x A^T) B^T onto the base output.
// Register tiling without shared memory: each thread owns a TM x TN block of outputs and streams
// K in steps of 4. No barriers; on SwiftShader this beats shared-memory tiling by ~3x
// (architecture.md 3b), and on real GPUs the variants (TM, TN, workgroup shape) are picked per
// adapter. Rows/columns past T/N are clamped on load and skipped on store, so any T, N work;
// K must be a multiple of 4 (32 for quantized weights).

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const KW: u32 = {{K}}u;

struct Params { T: u32, N: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;     // (T, K/4)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // (T, N)

{{WEIGHT}}

@compute @workgroup_size({{WGX}}, {{WGY}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n0 = gid.x * TN;
  let t0 = gid.y * TM;
  if (n0 >= p.N || t0 >= p.T) { return; }
  var acc: array<array<f32, TN>, TM>;
  var xr: array<u32, TM>;
  var wr: array<u32, TN>;
  for (var i = 0u; i < TM; i++) { xr[i] = min(t0 + i, p.T - 1u) * (KW / 4u); }
  for (var j = 0u; j < TN; j++) { wr[j] = min(n0 + j, p.N - 1u); }
  for (var k4 = 0u; k4 < KW / 4u; k4++) {
    var xv: array<vec4<f32>, TM>;
    for (var i = 0u; i < TM; i++) { xv[i] = x[xr[i] + k4]; }
    for (var j = 0u; j < TN; j++) {
      let w = load_w4(wr[j], k4);
      for (var i = 0u; i < TM; i++) { acc[i][j] += dot(xv[i], w); }
    }
  }
  for (var i = 0u; i < TM; i++) {
    let t = t0 + i;
    if (t >= p.T) { break; }
    for (var j = 0u; j < TN; j++) {
      let n = n0 + j;
      if (n >= p.N) { break; }
      let o = t * p.N + n;
      var v = p.alpha * acc[i][j];
      if (p.beta != 0.0) { v += p.beta * out[o]; }
      out[o] = v;
    }
  }
}
