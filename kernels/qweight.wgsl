// Frozen base-weight formats, read inside the matmul tiles (never dequantized to memory).
//
// A weight W is (N,K) row-major (nn.Linear layout: N outputs, K inputs). Quantized formats use
// blocks of 32 consecutive k within a row, one f32 scale per block, symmetric (no zero point):
//   f32: wf32 (N, K/4) vec4<f32>
//   q8 : wq (N, K/4) u32, byte j of word = int8 of k = 4*word + j;  ws (N, K/32) f32;  w = q*s
//   q4 : wq (N, K/8) u32, nibble j of word = (q+8) of k = 8*word+j; ws (N, K/32) f32;  w = q*s
// The sections f32, q8, q4 define `load_w4(n, k4) -> vec4<f32>` = W[n, 4*k4 .. 4*k4+3] (the tiles;
// the `*_dot` sections at the end are decode's), and the bindings
// it reads at {{WB}} (and {{WB}}+1 for the scales). The host splices exactly one section into a
// kernel, so unused bindings never appear in the pipeline layout. `{{KW}}` is the kernel's expression
// for K (inputs per row): `p.K`, a uniform, in the kernels a model runs at several widths (one
// pipeline serves every width: on SwiftShader each compiled width cost the first step 1-5 s), or
// the kernel's own constant.
//
// CPU reference: src/model/quant.ts dequantize (the host quantizer writes these formats; test/unit/quant.test.ts).
// Tests: every kernel that splices a section in (matmul, matmul_dx, embedding, lmhead, matvec) runs q8
// and q4 cases against its reference on the dequantized weight, in test/gpu/kernels.test.ts,
// test/gpu/kernels-backward.test.ts and test/gpu/matvec.test.ts.

//#section f32
@group(0) @binding({{WB}}) var<storage, read> wf32: array<vec4<f32>>;
fn load_w4(n: u32, k4: u32) -> vec4<f32> {
  return wf32[n * ({{KW}} / 4u) + k4];
}
//#end

//#section q8
@group(0) @binding({{WB}}) var<storage, read> wq: array<u32>;
@group(0) @binding({{WB1}}) var<storage, read> ws: array<f32>;
fn load_w4(n: u32, k4: u32) -> vec4<f32> {
  // unpack4x8snorm gives q/127 per byte in one instruction (codes are in [-127, 127]).
  return unpack4x8snorm(wq[n * ({{KW}} / 4u) + k4]) * (ws[n * ({{KW}} / 32u) + k4 / 8u] * 127.0);
}
//#end

//#section q4
@group(0) @binding({{WB}}) var<storage, read> wq: array<u32>;
@group(0) @binding({{WB1}}) var<storage, read> ws: array<f32>;
fn load_w4(n: u32, k4: u32) -> vec4<f32> {
  let word = wq[n * ({{KW}} / 8u) + k4 / 2u];
  let sh = (k4 & 1u) * 16u;
  let s = ws[n * ({{KW}} / 32u) + k4 / 8u];
  return (vec4<f32>(f32(extractBits(word, sh, 4u)), f32(extractBits(word, sh + 4u, 4u)),
                    f32(extractBits(word, sh + 8u, 4u)), f32(extractBits(word, sh + 12u, 4u))) - 8.0) * s;
}
//#end

// Decode-side sections (kernels/matvec.wgsl, one row): each defines the weight's bindings,
// `codes4(n, k4) -> vec4<f32>`, W[n, 4*k4 .. 4*k4+3] before its block's scale (q8: q/127, the one
// instruction `unpack4x8snorm`; q4: q), and `block_scale(n, b) -> f32`, what row n's block b (32 k)
// multiplies them by (1 for f32), applied once to a block's dot instead of to every weight. Unpacking
// with per-component shifts (vec4 << vec4) measured 1.5-1.9x slower on SwiftShader (docs/architecture.md §3d).

//#section f32_dot
@group(0) @binding({{WB}}) var<storage, read> wf32: array<vec4<f32>>;
fn codes4(n: u32, k4: u32) -> vec4<f32> {
  return wf32[n * ({{KW}} / 4u) + k4];
}
fn block_scale(n: u32, b: u32) -> f32 {
  return 1.0;
}
//#end

//#section q8_dot
@group(0) @binding({{WB}}) var<storage, read> wq: array<u32>;
@group(0) @binding({{WB1}}) var<storage, read> ws: array<f32>;
fn codes4(n: u32, k4: u32) -> vec4<f32> {
  return unpack4x8snorm(wq[n * ({{KW}} / 4u) + k4]); // q/127 a byte in one instruction
}
fn block_scale(n: u32, b: u32) -> f32 {
  return ws[n * ({{KW}} / 32u) + b] * 127.0;
}
//#end

//#section q4_dot
@group(0) @binding({{WB}}) var<storage, read> wq: array<u32>;
@group(0) @binding({{WB1}}) var<storage, read> ws: array<f32>;
fn codes4(n: u32, k4: u32) -> vec4<f32> {
  let word = wq[n * ({{KW}} / 8u) + k4 / 2u];
  let sh = (k4 & 1u) * 16u;
  return vec4<f32>(f32(extractBits(word, sh, 4u)), f32(extractBits(word, sh + 4u, 4u)),
                   f32(extractBits(word, sh + 8u, 4u)), f32(extractBits(word, sh + 12u, 4u))) - 8.0;
}
fn block_scale(n: u32, b: u32) -> f32 {
  return ws[n * ({{KW}} / 32u) + b];
}
//#end
