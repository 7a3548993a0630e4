// Causal grouped-query attention with one thread per row of one head and no workgroup memory or
// barriers: the variant of attention.wgsl for adapters that run barriers slowly (SwiftShader
// suspends every invocation of a workgroup at each barrier), chosen per adapter by the tuner
// (src/engine/tune.ts, docs/architecture.md §3b). Same bindings and results as attention.wgsl up
// to the order of the sums:
//   forward  q (T, H*D), k, v (T, KVH*D) -> out (T, H*D), lse (H, T)
//   backward dq (T, H*D), dk, dv (T, KVH*D) from the forward's out and lse and dO (T, H*D)
// Each thread reads the keys and values (or queries) it needs straight from storage; neighbouring
// threads of a workgroup take neighbouring rows of one head, so they read the same rows in step.
// Packed sequences: seg[t] is the first token of t's sequence. A query walks keys seg[t]..t only;
// a key walks queries from itself to its sequence's end (the first t whose seg differs), so a
// packed training pass does no work across sequences.
//
// CPU references: test/reference/cpu-ops.ts attentionRef (forward),
// test/reference/cpu-backward.ts attentionBackwardRef (dq, dk, dv).
// Tests: test/gpu/kernels.test.ts (forward), test/gpu/kernels-backward.test.ts (backward).

const D4: u32 = {{D4}}u;
const WG: u32 = {{WG}}u;

struct Params { T: u32, H: u32, KVH: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(11) var<storage, read> seg: array<u32>; // (T) first token of t's sequence

/// Forward: thread (t, h) folds keys seg[t]..t into a running max m, sum l and accumulator.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let t = wg.x * WG + lid.x;
  if (t >= p.T) { return; }
  let kvh = h / (p.H / p.KVH);
  let qrow = (t * p.H + h) * D4;
//#for d in D4
  let q{d} = q[qrow + {d}u] * p.scale;
  var a{d} = vec4<f32>(0.0);
//#end
  var m = -3.0e38;
  var l = 0.0;
  for (var j = seg[t]; j <= t; j++) {
    let base = (j * p.KVH + kvh) * D4;
    var s = 0.0;
//#for d in D4
    s += dot(q{d}, k[base + {d}u]);
//#end
    let mn = max(m, s);
    let corr = exp(m - mn);
    let pj = exp(s - mn);
    l = l * corr + pj;
//#for d in D4
    a{d} = a{d} * corr + pj * v[base + {d}u];
//#end
    m = mn;
  }
  let inv = 1.0 / l;
//#for d in D4
  out[qrow + {d}u] = a{d} * inv;
//#end
  lse[h * p.T + t] = m + log(l);
}

// ---- Backward: P = exp(scale q.k - lse), dP = dO.v, Dt = dO_t.O_t (see attention.wgsl) ----
// `dq_main` also writes Dt (its own row's), which `dkdv_main`, dispatched after it, reads: the
// variant needs no separate delta pass.

@group(0) @binding(6) var<storage, read> dout: array<vec4<f32>>;      // (T, H*D) dO
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;     // (H, T)   Dt
@group(0) @binding(8) var<storage, read_write> dq: array<vec4<f32>>;  // (T, H*D)
@group(0) @binding(9) var<storage, read_write> dk: array<vec4<f32>>;  // (T, KVH*D)
@group(0) @binding(10) var<storage, read_write> dv: array<vec4<f32>>; // (T, KVH*D)

/// dq_t = scale * sum over keys seg[t]..t of P (dP - Dt) k_s; thread (t, h); writes Dt.
@compute @workgroup_size(WG)
fn dq_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let t = wg.x * WG + lid.x;
  if (t >= p.T) { return; }
  let kvh = h / (p.H / p.KVH);
  let qrow = (t * p.H + h) * D4;
  let l = lse[h * p.T + t];
  var dlt = 0.0;
//#for d in D4
  let q{d} = q[qrow + {d}u] * p.scale;
  let g{d} = dout[qrow + {d}u];
  var a{d} = vec4<f32>(0.0);
  dlt += dot(g{d}, out[qrow + {d}u]);
//#end
  delta[h * p.T + t] = dlt;
  for (var j = seg[t]; j <= t; j++) {
    let base = (j * p.KVH + kvh) * D4;
    var s = 0.0;
    var dp = 0.0;
//#for d in D4
    s += dot(q{d}, k[base + {d}u]);
    dp += dot(g{d}, v[base + {d}u]);
//#end
    let ds = exp(s - l) * (dp - dlt);
//#for d in D4
    a{d} += ds * k[base + {d}u];
//#end
  }
//#for d in D4
  dq[qrow + {d}u] = a{d} * p.scale;
//#end
}

/// dk_s = scale * sum_t P (dP - Dt) q_t and dv_s = sum_t P dO_t over the queries t = s .. the end of
/// s's sequence, of every query head of kv head kvh; thread (s, kvh), no atomics.
@compute @workgroup_size(WG)
fn dkdv_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let kvh = wg.y;
  let s = wg.x * WG + lid.x;
  if (s >= p.T) { return; }
  let group = p.H / p.KVH;
  let krow = (s * p.KVH + kvh) * D4;
  let ss = seg[s];
//#for d in D4
  let k{d} = k[krow + {d}u] * p.scale;
  let v{d} = v[krow + {d}u];
  var ak{d} = vec4<f32>(0.0);
  var av{d} = vec4<f32>(0.0);
//#end
  for (var t = s; t < p.T; t++) {
    if (seg[t] != ss) { break; } // the next sequence: its queries never see this key
    for (var h = kvh * group; h < kvh * group + group; h++) {
      let base = (t * p.H + h) * D4;
      var sc = 0.0;
      var dp = 0.0;
//#for d in D4
      sc += dot(k{d}, q[base + {d}u]);
      dp += dot(v{d}, dout[base + {d}u]);
//#end
      let pr = exp(sc - lse[h * p.T + t]);
      let ds = pr * (dp - delta[h * p.T + t]);
//#for d in D4
      av{d} += pr * dout[base + {d}u];
      ak{d} += ds * q[base + {d}u];
//#end
    }
  }
//#for d in D4
  dk[krow + {d}u] = ak{d} * p.scale;
  dv[krow + {d}u] = av{d};
//#end
}
