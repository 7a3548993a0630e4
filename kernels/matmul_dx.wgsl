// Linear layer backward, input gradient: dx (T,K) = beta*dx + alpha * dy (T,N) @ W(N,K)
//
// The partner of matmul.wgsl. W is a frozen base weight (f32/q8/q4 via qweight.wgsl, dequantized in
// registers: base weights get no gradient, but activations' gradients flow through them), a LoRA
// factor, or a vocabulary chunk of the lm-head (rows nOff .. nOff+N of W, for the chunked fused
// cross-entropy backward). beta = 1 accumulates: the q/k/v (and gate/up) input gradients sum into
// one dx, and the LoRA path adds onto the base path.
// Register tile: each thread owns TM rows x (4*TK4) columns of dx and streams N four rows at a
// time: dx_i += mat4x4(W[n], W[n+1], W[n+2], W[n+3]) * dy_i[n..n+3] for each vec4 of k.
// N must be a multiple of 4 (a vocabulary chunk is padded with zero gradients; its rows past
// nLast are clamped); K a multiple of 4 (32 for quantized weights).
//
// CPU reference: test/reference/cpu-backward.ts matmulDxRef (whole W and the vocabulary-chunk form).
// Test: test/gpu/kernels-backward.test.ts.

const KW: u32 = {{K}}u;

struct Params { T: u32, N: u32, alpha: f32, beta: f32, nOff: u32, nLast: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4<f32>>;    // (T, N/4)
@group(0) @binding(2) var<storage, read_write> dx: array<vec4<f32>>; // (T, K/4)

{{WEIGHT}}

@compute @workgroup_size({{WGX}}, {{WGY}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k40 = gid.x * {{TK4}}u;
  let t0 = gid.y * {{TM}}u;
  if (k40 >= KW / 4u || t0 >= p.T) { return; }
//#for i in TM
  let yr{i} = min(t0 + {i}u, p.T - 1u) * (p.N / 4u);
//#for j in TK4
  var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
//#for j in TK4
  let kk{j} = min(k40 + {j}u, KW / 4u - 1u);
//#end
  for (var n4 = 0u; n4 < p.N / 4u; n4++) {
    let n = min(p.nOff + n4 * 4u, p.nLast);
    let n1 = min(n + 1u, p.nLast);
    let n2 = min(n + 2u, p.nLast);
    let n3 = min(n + 3u, p.nLast);
//#for j in TK4
    let m{j} = mat4x4<f32>(load_w4(n, kk{j}), load_w4(n1, kk{j}), load_w4(n2, kk{j}), load_w4(n3, kk{j}));
//#end
//#for i in TM
    let g{i} = dy[yr{i} + n4];
//#for j in TK4
    acc{i}_{j} += m{j} * g{i};
//#end
//#end
  }
//#for i in TM
//#for j in TK4
  if (t0 + {i}u < p.T && k40 + {j}u < KW / 4u) {
    let o = (t0 + {i}u) * (KW / 4u) + k40 + {j}u;
    var r = p.alpha * acc{i}_{j};
    if (p.beta != 0.0) { r += p.beta * dx[o]; }
    dx[o] = r;
  }
//#end
//#end
}
