// Linear layer forward: out (T,N) = beta*out + alpha * x (T,K) @ W(N,K)^T
//
// W is a frozen base weight in f32/q8/q4 (kernels/qweight.wgsl, spliced in as `load_w4`),
// dequantized in registers, or a LoRA factor (f32). Fusions:
//   - beta = 1 accumulates into `out`: o_proj/down_proj add straight into the residual stream,
//     and the LoRA up-projection adds alpha/r * (x A^T) B^T onto the base output.
// Register tiling without shared memory: each thread owns TM rows x (4*TN4) columns of outputs,
// streams K four at a time, and multiplies a row's vec4 of x by a mat4x4 of four weight columns
// (16 FMAs). No barriers: on SwiftShader this beats shared-memory tiling by ~3x
// (docs/architecture.md §3b); the tile shape is picked per adapter. The tile is unrolled (//#for) so it
// lives in registers. Rows/columns past T/N are clamped on load and skipped on store, so any T, N
// work; K must be a multiple of 4 (32 for quantized weights).
//
// CPU reference: test/reference/cpu-ops.ts matmulRef (quantized W: on the dequantized weight).
// Test: test/gpu/kernels.test.ts.

const KW: u32 = {{K}}u;

struct Params { T: u32, N: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;     // (T, K/4)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // (T, N)

{{WEIGHT}}

/// out[t, n..n+3] = beta*out + alpha*v, for the columns < N.
fn store4(t: u32, n: u32, v: vec4<f32>) {
  if (t >= p.T) { return; }
  for (var c = 0u; c < 4u; c++) {
    if (n + c < p.N) {
      let o = t * p.N + n + c;
      var r = p.alpha * v[c];
      if (p.beta != 0.0) { r += p.beta * out[o]; }
      out[o] = r;
    }
  }
}

@compute @workgroup_size({{WGX}}, {{WGY}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n0 = gid.x * ({{TN4}}u * 4u);
  let t0 = gid.y * {{TM}}u;
  if (n0 >= p.N || t0 >= p.T) { return; }
//#for i in TM
  let xr{i} = min(t0 + {i}u, p.T - 1u) * (KW / 4u);
//#for j in TN4
  var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
//#for j in TN4
  let c{j} = n0 + {j}u * 4u;
  let c{j}_0 = min(c{j}, p.N - 1u);
  let c{j}_1 = min(c{j} + 1u, p.N - 1u);
  let c{j}_2 = min(c{j} + 2u, p.N - 1u);
  let c{j}_3 = min(c{j} + 3u, p.N - 1u);
//#end
  for (var k4 = 0u; k4 < KW / 4u; k4++) {
//#for j in TN4
    let m{j} = mat4x4<f32>(load_w4(c{j}_0, k4), load_w4(c{j}_1, k4), load_w4(c{j}_2, k4), load_w4(c{j}_3, k4));
//#end
//#for i in TM
    let x{i} = x[xr{i} + k4];
//#for j in TN4
    acc{i}_{j} += x{i} * m{j};
//#end
//#end
  }
//#for i in TM
//#for j in TN4
  store4(t0 + {i}u, c{j}, acc{i}_{j});
//#end
//#end
}
