// Linear layer forward, the workgroup-memory variant of matmul.wgsl (the tuner's 'shared' tile):
// out (T,N) = beta*out + alpha * (x (T,K) @ W(N,K)^T + s * u (T,r) @ B(N,r)^T), W f32/q8/q4
// (qweight.wgsl `load_w4`) or a LoRA factor, the adapter's term unstaged (matmul_common.wgsl `lora`).
//
// The classic GPU tiling: a workgroup of WGX x WGY threads owns a block of TM*WGY rows x 4*TN4*WGX
// columns. For each stage of BK4 vec4s along K, the threads copy the block's x rows and its
// dequantized W rows into workgroup memory together (each weight dequantized once per workgroup,
// not once per thread row), wait at a barrier, and multiply from there: each thread TM rows x
// 4*TN4 columns in registers, a row's vec4 of x times a mat4x4 of four weight rows. This is what
// wins on discrete GPUs; on SwiftShader every barrier suspends the whole workgroup (docs/architecture.md §3b).
//
// The staged operands have type ST: f32, or f16 (`enable f16;` where the adapter has shader-f16),
// halving the workgroup memory. Products and sums are f32 either way (a product of two f16 values
// is exact in f32), so the f16 tile equals the f32 kernel run on x and W rounded to f16. On an
// adapter without shader-f16 the f16 tile stores f32 values rounded to f16 (pack2x16float), the
// same numbers, which is how the tests check it there; the tuner never picks it there.
//
// Rows/columns past T/N are clamped on load and skipped on store; k past K loads zeros, so any
// T, N and K (a multiple of 4; 32 for quantized weights) work.
//
// CPU reference: test/reference/cpu-ops.ts matmulRef (quantized W: on the dequantized weight; the
// f16 tile: on x and W rounded to f16). Test: test/gpu/kernels.test.ts.

{{ENABLE}}

const BK4: u32 = {{BK4}}u;
const ROWS: u32 = {{TM}}u * {{WGY}}u;
const COLS: u32 = {{TN4}}u * 4u * {{WGX}}u;
const THREADS: u32 = {{WGX}}u * {{WGY}}u;

//#include matmul_common io

{{WEIGHT}}

var<workgroup> xs: array<vec4<{{ST}}>, ROWS * BK4>;  // [row][k4] of this stage
var<workgroup> wts: array<vec4<{{ST}}>, COLS * BK4>; // [column][k4] of this stage

/// The staged form of four values.
fn stage(v: vec4<f32>) -> vec4<{{ST}}> {
  {{STAGE}}
}

@compute @workgroup_size({{WGX}}, {{WGY}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  // No early return: every thread takes part in the loads and barriers.
  let row0 = wid.y * ROWS;
  let col0 = wid.x * COLS;
  let K4 = p.K / 4u;
//#for i in TM
  let r{i} = (lid.y * {{TM}}u + {i}u) * BK4;
//#for j in TN4
  var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
//#for j in TN4
  let w{j} = (lid.x * {{TN4}}u + {j}u) * 4u * BK4;
//#end
  for (var k0 = 0u; k0 < K4; k0 += BK4) {
    for (var e = li; e < ROWS * BK4; e += THREADS) {
      let k4 = k0 + e % BK4;
      var v = vec4<f32>(0.0);
      if (k4 < K4) { v = x[min(row0 + e / BK4, p.T - 1u) * K4 + k4]; }
      xs[e] = stage(v);
    }
    for (var e = li; e < COLS * BK4; e += THREADS) {
      let k4 = k0 + e % BK4;
      var v = vec4<f32>(0.0);
      if (k4 < K4) { v = load_w4(min(col0 + e / BK4, p.N - 1u), k4); }
      wts[e] = stage(v);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK4; kk++) {
//#for j in TN4
      let m{j} = mat4x4<f32>(vec4<f32>(wts[w{j} + kk]), vec4<f32>(wts[w{j} + BK4 + kk]),
                             vec4<f32>(wts[w{j} + 2u * BK4 + kk]), vec4<f32>(wts[w{j} + 3u * BK4 + kk]));
//#end
//#for i in TM
      let x{i} = vec4<f32>(xs[r{i} + kk]);
//#for j in TN4
      acc{i}_{j} += x{i} * m{j};
//#end
//#end
    }
    workgroupBarrier();
  }
  let t0 = row0 + lid.y * {{TM}}u;
  let n0 = col0 + lid.x * {{TN4}}u * 4u;
  // The adapter's r k (matmul_common.wgsl `lora`), f32 from storage: r/4 steps, not worth staging.
//#include matmul_common columns
  for (var k4 = 0u; k4 < p.r / 4u; k4++) {
//#include matmul_common lora
  }
//#for i in TM
//#for j in TN4
  store4(t0 + {i}u, n0 + {j}u * 4u, acc{i}_{j});
//#end
//#end
}
