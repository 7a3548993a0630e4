// Linear layer backward, input gradient: dx (T,K) = beta*dx + alpha * dy (T,N) @ W(N,K)
//
// The partner of matmul.wgsl. W is a frozen base weight (f32/q8/q4 via qweight.wgsl, dequantized in
// registers: base weights get no gradient, but activations' gradients flow through them), a LoRA
// factor, or a vocabulary chunk of the lm-head (rows nOff .. nOff+N of W, for the chunked fused
// cross-entropy backward). beta = 1 accumulates: the q/k/v (and gate/up) input gradients sum into
// one dx, and the LoRA path adds onto the base path.
// Register tile: each thread owns TM rows x (4*TK4) columns of dx and streams N four rows at a
// time: dx_i += mat4x4(W[n], W[n+1], W[n+2], W[n+3]) * dy_i[n..n+3] for each vec4 of k.
// With an adapter (r > 0) the LoRA branch's input gradient is fused in:
//   dx = beta*dx + alpha * (dy W + s * dropout'(g A)),   g = dy B (T,r), A (r,K) f32
// The tile first streams the r rows of A (r/4 steps of the same mat4x4 product), multiplies that
// part by s and, with dropout (rate > 0), by the forward's mask over its (token, column) /(1-rate)
// (dropout.wgsl `mask`, hashed from the token's sequence seed and position and the projection's
// salt), then streams W on top. So an adapted projection's input gradient is one dispatch and one
// write of dx, instead of three: this, g A into a scratch, and the dropout pass adding it onto dx.
// N must be a multiple of 4 (a vocabulary chunk is padded with zero gradients; its rows past
// nLast are clamped); K a multiple of 4 (32 for quantized weights).
//
// CPU reference: test/reference/cpu-backward.ts matmulDxRef (whole W and the vocabulary-chunk form).
// Test: test/gpu/kernels-backward.test.ts.

struct Params {
  T: u32, N: u32, alpha: f32, beta: f32, nOff: u32, nLast: u32,
  r: u32, s: f32, salt: u32, rate: f32, // the adapter: rank, scale, dropout mask
  K: u32, _b: u32, // K: dx's width (W's row length), a uniform so one pipeline serves every width
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<vec4<f32>>;    // (T, N/4)
@group(0) @binding(2) var<storage, read_write> dx: array<vec4<f32>>; // (T, K/4)
@group(0) @binding(5) var<storage, read> lg: array<vec4<f32>>;    // (T, r/4) the adapter's g = dy B
@group(0) @binding(6) var<storage, read> la: array<vec4<f32>>;    // (r, K/4) the adapter's A
@group(0) @binding(7) var<storage, read> token_seed: array<vec2<u32>>; // (T) sequence seed, position

{{WEIGHT}}

//#include dropout mask

/// s times the dropout mask over dx[t, 4*k4 .. 4*k4+3] / (1 - rate), for token t's seed and position `ts`.
fn lora_scale4(ts: vec2<u32>, k4: u32) -> vec4<f32> {
  if (p.rate == 0.0) { return vec4<f32>(p.s); }
  let seed = mask_seed(ts.x);
  let i = ts.y * p.K + k4 * 4u;
  let kept = vec4<f32>(select(0.0, 1.0, keep(i, seed)), select(0.0, 1.0, keep(i + 1u, seed)),
                       select(0.0, 1.0, keep(i + 2u, seed)), select(0.0, 1.0, keep(i + 3u, seed)));
  return kept * (p.s / (1.0 - p.rate));
}

@compute @workgroup_size({{WGX}}, {{WGY}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let k40 = gid.x * {{TK4}}u;
  let t0 = gid.y * {{TM}}u;
  if (k40 >= p.K / 4u || t0 >= p.T) { return; }
//#for i in TM
  let yr{i} = min(t0 + {i}u, p.T - 1u) * (p.N / 4u);
//#for j in TK4
  var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
//#for j in TK4
  let kk{j} = min(k40 + {j}u, p.K / 4u - 1u);
//#end
  if (p.r > 0u) {
    // The adapter's part first: g A, then times s and the dropout mask.
    for (var r4 = 0u; r4 < p.r / 4u; r4++) {
//#for j in TK4
      let a{j} = mat4x4<f32>(la[(4u * r4) * (p.K / 4u) + kk{j}], la[(4u * r4 + 1u) * (p.K / 4u) + kk{j}],
                             la[(4u * r4 + 2u) * (p.K / 4u) + kk{j}], la[(4u * r4 + 3u) * (p.K / 4u) + kk{j}]);
//#end
//#for i in TM
      let h{i} = lg[min(t0 + {i}u, p.T - 1u) * (p.r / 4u) + r4];
//#for j in TK4
      acc{i}_{j} += a{j} * h{i};
//#end
//#end
    }
//#for i in TM
    let ts{i} = token_seed[min(t0 + {i}u, p.T - 1u)];
//#for j in TK4
    acc{i}_{j} *= lora_scale4(ts{i}, kk{j});
//#end
//#end
  }
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
  if (t0 + {i}u < p.T && k40 + {j}u < p.K / 4u) {
    let o = (t0 + {i}u) * (p.K / 4u) + k40 + {j}u;
    var r = p.alpha * acc{i}_{j};
    if (p.beta != 0.0) { r += p.beta * dx[o]; }
    dx[o] = r;
  }
//#end
//#end
}
