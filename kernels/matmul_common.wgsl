// Pieces shared by the forward matmul variants (matmul.wgsl, matmul_shared.wgsl,
// matmul_subgroup.wgsl), spliced in with `//#include matmul_common SECTION` (src/engine/kernels.ts):
//   io       the uniforms, x, out and adapter bindings and `store4`, the tile's write of four columns;
//   columns  the four weight rows (output columns) of each of the TN4 vec4 columns, clamped to N;
//   fma      one k4 step of a register tile: TN4 mat4x4 of weights times TM vec4 of x;
//   lora     one k4 step of the adapter's product s * u (T,r) @ B(N,r)^T into the same tile: the
//            LoRA up-projection as r more k of the base product (x|u times W|sB), so an adapted
//            projection's output is written once, by one dispatch, instead of read and written
//            again by a second matmul over B (r = 0: no adapter, the loop runs no step).
//
// CPU reference: test/reference/cpu-ops.ts matmulRef. Test: test/gpu/kernels.test.ts (every variant).

//#section io
struct Params { T: u32, N: u32, alpha: f32, beta: f32, r: u32, s: f32, K: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;     // (T, K/4)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // (T, N)
@group(0) @binding(5) var<storage, read> lu: array<vec4<f32>>;    // (T, r/4) the adapter's u = dropout(x) A^T
@group(0) @binding(6) var<storage, read> lb: array<vec4<f32>>;    // (N, r/4) the adapter's B

/// out[t, n..n+3] = beta*out + alpha*v, for the columns < N (v: the tile's x W^T + s u B^T).
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
//#end

//#section columns
//#for j in TN4
  let c{j} = n0 + {j}u * 4u;
  let c{j}_0 = min(c{j}, p.N - 1u);
  let c{j}_1 = min(c{j} + 1u, p.N - 1u);
  let c{j}_2 = min(c{j} + 2u, p.N - 1u);
  let c{j}_3 = min(c{j} + 3u, p.N - 1u);
//#end
//#end

//#section fma
//#for j in TN4
    let m{j} = mat4x4<f32>(load_w4(c{j}_0, k4), load_w4(c{j}_1, k4), load_w4(c{j}_2, k4), load_w4(c{j}_3, k4));
//#end
//#for i in TM
    let x{i} = x[xr{i} + k4];
//#for j in TN4
    acc{i}_{j} += x{i} * m{j};
//#end
//#end
//#end

//#section lora
//#for j in TN4
    let b{j} = mat4x4<f32>(lb[c{j}_0 * (p.r / 4u) + k4], lb[c{j}_1 * (p.r / 4u) + k4],
                           lb[c{j}_2 * (p.r / 4u) + k4], lb[c{j}_3 * (p.r / 4u) + k4]);
//#end
//#for i in TM
    let u{i} = lu[min(t0 + {i}u, p.T - 1u) * (p.r / 4u) + k4] * p.s;
//#for j in TN4
    acc{i}_{j} += u{i} * b{j};
//#end
//#end
//#end
