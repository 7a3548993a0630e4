// Linear layer forward: out (T,N) = beta*out + alpha * x (T,K) @ W(N,K)^T
//
// W is a frozen base weight in f32/q8/q4 (kernels/qweight.wgsl, spliced in as `load_w4`),
// dequantized in registers, or a LoRA factor (f32). Fusions:
//   - beta = 1 accumulates into `out`: o_proj/down_proj add straight into the residual stream;
//   - with an adapter (r > 0) the LoRA up-projection s * u B^T (u = dropout(x) A^T, s = alpha/r)
//     is r more k of the same tile (matmul_common.wgsl `lora`).
// Register tiling without shared memory: each thread owns TM rows x (4*TN4) columns of outputs,
// streams K four at a time, and multiplies a row's vec4 of x by a mat4x4 of four weight columns
// (16 FMAs). No barriers: on SwiftShader this beats shared-memory tiling by ~3x
// (docs/architecture.md §3b); the tile shape is picked per adapter. The tile is unrolled (//#for) so it
// lives in registers. Rows/columns past T/N are clamped on load and skipped on store, so any T, N
// work; K must be a multiple of 4 (32 for quantized weights).
//
// CPU reference: test/reference/cpu-ops.ts matmulRef (quantized W: on the dequantized weight).
// Test: test/gpu/kernels.test.ts. The uniforms, bindings, `store4` and the tile's K step are
// kernels/matmul_common.wgsl's, shared with the other variants (matmul_shared.wgsl, matmul_subgroup.wgsl).

//#include matmul_common io

{{WEIGHT}}

@compute @workgroup_size({{WGX}}, {{WGY}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n0 = gid.x * ({{TN4}}u * 4u);
  let t0 = gid.y * {{TM}}u;
  if (n0 >= p.N || t0 >= p.T) { return; }
//#for i in TM
  let xr{i} = min(t0 + {i}u, p.T - 1u) * (p.K / 4u);
//#for j in TN4
  var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
//#include matmul_common columns
  for (var k4 = 0u; k4 < p.K / 4u; k4++) {
//#include matmul_common fma
  }
  for (var k4 = 0u; k4 < p.r / 4u; k4++) {
//#include matmul_common lora
  }
//#for i in TM
//#for j in TN4
  store4(t0 + {i}u, c{j}, acc{i}_{j});
//#end
//#end
}
