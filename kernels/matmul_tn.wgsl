// LoRA weight gradient: out (M,P) = beta*out + alpha * a(T,M)^T @ b(T,P), a reduction over tokens.
//   dB (out,r) += scale * dy(T,out)^T @ u(T,r)          (u = dropout(x) A^T, saved by the forward)
//   dA (r,in)  += scale * g(T,r)^T @ dropout(x)(T,in)   (g = dy B)
// beta = 1 accumulates over micro-batches of gradient accumulation. Each thread owns TM rows x
// (4*TP4) columns of the output and streams T: acc_i += a[t, m_i] * b[t, p..p+3].
// The sum runs over t in a fixed order, so results are deterministic. P must be a multiple of 4.
//
// CPU reference: test/reference/cpu-backward.ts matmulTnRef.
// Test: test/gpu/kernels-backward.test.ts.

struct Params { T: u32, M: u32, P: u32, alpha: f32, beta: f32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;              // (T, M)
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;        // (T, P/4)
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (M, P/4)

@compute @workgroup_size({{WGX}}, {{WGY}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let p40 = gid.x * {{TP4}}u;
  let m0 = gid.y * {{TM}}u;
  let P4 = p.P / 4u;
  if (p40 >= P4 || m0 >= p.M) { return; }
//#for i in TM
  let mm{i} = min(m0 + {i}u, p.M - 1u);
//#for j in TP4
  var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
//#for j in TP4
  let pp{j} = min(p40 + {j}u, P4 - 1u);
//#end
  for (var t = 0u; t < p.T; t++) {
//#for j in TP4
    let b{j} = b[t * P4 + pp{j}];
//#end
//#for i in TM
    let a{i} = a[t * p.M + mm{i}];
//#for j in TP4
    acc{i}_{j} += a{i} * b{j};
//#end
//#end
  }
//#for i in TM
//#for j in TP4
  if (m0 + {i}u < p.M && p40 + {j}u < P4) {
    let o = (m0 + {i}u) * P4 + p40 + {j}u;
    var r = p.alpha * acc{i}_{j};
    if (p.beta != 0.0) { r += p.beta * out[o]; }
    out[o] = r;
  }
//#end
//#end
}
