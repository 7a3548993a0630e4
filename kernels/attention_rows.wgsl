// Causal grouped-query attention with one thread per RT rows of one head and no workgroup memory or
// barriers: the variant of attention.wgsl for adapters that run barriers slowly (SwiftShader
// suspends every invocation of a workgroup at each barrier), chosen per adapter by the tuner
// (src/engine/tune.ts, docs/architecture.md §3b). Same bindings and results as attention.wgsl up
// to the order of the sums:
//   forward  q (T, H*D), k, v (T, KVH*D) -> out (T, H*D), lse (H, T)
//   backward dq (T, H*D), dk, dv (T, KVH*D) from the forward's out and lse and dO (T, H*D)
// Each thread takes RT consecutive rows (register tiles, unrolled) and reads each key and value (or
// query) row it needs once from storage for all of them; neighbouring threads of a workgroup take
// neighbouring rows of one head, so they read the same rows in step.
// Packed sequences: seg[t] is the first token of t's sequence. A query walks keys seg[t]..t only;
// a key walks queries from itself to its sequence's end (the first t whose seg differs), so a
// packed training pass does no work across sequences.
// Masks without branches: a (row, key) pair outside the causal window or the sequence still computes
// its scores, and `select` zeroes its probability (the forward's running max ignores it), so every
// accumulator is updated unconditionally. SwiftShader runs a branch that some lanes of a SIMD group
// skip as masked code, in which each accumulator assigned costs a select per component (RT x 2 D
// floats a thread in dkdv); the branchless loops measured on the toy-math step (4 layers, f32, packed
// batches of 4): forward 45 -> 31 ms a step, dq 32 -> 23, dkdv 92 -> 54.
//
// CPU references: test/reference/cpu-ops.ts attentionRef (forward),
// test/reference/cpu-backward.ts attentionBackwardRef (dq, dk, dv).
// Tests: test/gpu/kernels.test.ts (forward), test/gpu/kernels-backward.test.ts (backward).

const D4: u32 = {{D4}}u;
const WG: u32 = {{WG}}u;
const RT: u32 = {{RT}}u;

struct Params { T: u32, H: u32, KVH: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(11) var<storage, read> seg: array<u32>; // (T) first token of t's sequence

/// Forward: thread (rows first..first+RT-1, h); row r folds keys seg[t_r]..t_r into a running max m, sum
/// l and accumulator.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let first = (wg.x * WG + lid.x) * RT;
  if (first >= p.T) { return; }
  let kvh = h / (p.H / p.KVH);
//#for r in RT
  let t{r} = min(first + {r}u, p.T - 1u);
  let s{r} = seg[t{r}];
  var m{r} = -3.0e38;
  var l{r} = 0.0;
//#for d in D4
  let q{r}_{d} = q[(t{r} * p.H + h) * D4 + {d}u] * p.scale;
  var a{r}_{d} = vec4<f32>(0.0);
//#end
//#end
  for (var j = s0; j <= first + RT - 1u && j < p.T; j++) {
    let base = (j * p.KVH + kvh) * D4;
//#for d in D4
    let k{d} = k[base + {d}u];
    let v{d} = v[base + {d}u];
//#end
//#for r in RT
    {
      var s = 0.0;
//#for d in D4
      s += dot(q{r}_{d}, k{d});
//#end
      let on = j >= s{r} && j <= t{r};
      let mn = max(m{r}, select(-3.0e38, s, on));
      let corr = exp(m{r} - mn);
      let pj = select(0.0, exp(s - mn), on);
      l{r} = l{r} * corr + pj;
//#for d in D4
      a{r}_{d} = a{r}_{d} * corr + pj * v{d};
//#end
      m{r} = mn;
    }
//#end
  }
//#for r in RT
  if (first + {r}u < p.T) {
    let inv = 1.0 / l{r};
//#for d in D4
    out[(t{r} * p.H + h) * D4 + {d}u] = a{r}_{d} * inv;
//#end
    lse[h * p.T + t{r}] = m{r} + log(l{r});
  }
//#end
}

// ---- Backward: P = exp(scale q.k - lse), dP = dO.v, Dt = dO_t.O_t (see attention.wgsl) ----
// `dq_main` also writes Dt (of its own rows), which `dkdv_main`, dispatched after it, reads: the
// variant needs no separate delta pass.

@group(0) @binding(6) var<storage, read> dout: array<vec4<f32>>;      // (T, H*D) dO
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;     // (H, T)   Dt
@group(0) @binding(8) var<storage, read_write> dq: array<vec4<f32>>;  // (T, H*D)
@group(0) @binding(9) var<storage, read_write> dk: array<vec4<f32>>;  // (T, KVH*D)
@group(0) @binding(10) var<storage, read_write> dv: array<vec4<f32>>; // (T, KVH*D)

/// dq_t = scale * sum over keys seg[t]..t of P (dP - Dt) k_s; thread (rows first..first+RT-1, h); writes Dt.
@compute @workgroup_size(WG)
fn dq_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let first = (wg.x * WG + lid.x) * RT;
  if (first >= p.T) { return; }
  let kvh = h / (p.H / p.KVH);
//#for r in RT
  let t{r} = min(first + {r}u, p.T - 1u);
  let s{r} = seg[t{r}];
  let l{r} = lse[h * p.T + t{r}];
  var dlt{r} = 0.0;
//#for d in D4
  let q{r}_{d} = q[(t{r} * p.H + h) * D4 + {d}u] * p.scale;
  let g{r}_{d} = dout[(t{r} * p.H + h) * D4 + {d}u];
  var a{r}_{d} = vec4<f32>(0.0);
  dlt{r} += dot(g{r}_{d}, out[(t{r} * p.H + h) * D4 + {d}u]);
//#end
  if (first + {r}u < p.T) { delta[h * p.T + t{r}] = dlt{r}; }
//#end
  for (var j = s0; j <= first + RT - 1u && j < p.T; j++) {
    let base = (j * p.KVH + kvh) * D4;
//#for d in D4
    let k{d} = k[base + {d}u];
    let v{d} = v[base + {d}u];
//#end
//#for r in RT
    {
      var s = 0.0;
      var dp = 0.0;
//#for d in D4
      s += dot(q{r}_{d}, k{d});
      dp += dot(g{r}_{d}, v{d});
//#end
      let ds = select(0.0, exp(s - l{r}) * (dp - dlt{r}), j >= s{r} && j <= t{r});
//#for d in D4
      a{r}_{d} += ds * k{d};
//#end
    }
//#end
  }
//#for r in RT
  if (first + {r}u < p.T) {
//#for d in D4
    dq[(t{r} * p.H + h) * D4 + {d}u] = a{r}_{d} * p.scale;
//#end
  }
//#end
}

/// dk_s = scale * sum_t P (dP - Dt) q_t and dv_s = sum_t P dO_t over the queries t = s .. the end of
/// s's sequence, of every query head of kv head kvh; thread (keys s0..s0+RT-1, kvh), no atomics.
@compute @workgroup_size(WG)
fn dkdv_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let kvh = wg.y;
  let first = (wg.x * WG + lid.x) * RT;
  if (first >= p.T) { return; }
  let group = p.H / p.KVH;
//#for r in RT
  let s{r} = min(first + {r}u, p.T - 1u);
  let ss{r} = seg[s{r}];
//#for d in D4
  let k{r}_{d} = k[(s{r} * p.KVH + kvh) * D4 + {d}u] * p.scale;
  let v{r}_{d} = v[(s{r} * p.KVH + kvh) * D4 + {d}u];
  var ak{r}_{d} = vec4<f32>(0.0);
  var av{r}_{d} = vec4<f32>(0.0);
//#end
//#end
  let lastSeg = seg[min(first + RT - 1u, p.T - 1u)];
  for (var t = first; t < p.T; t++) {
    let st = seg[t];
    if (st != lastSeg && t > first + RT - 1u) { break; } // past the last key's sequence: no key here is seen
    for (var h = kvh * group; h < kvh * group + group; h++) {
      let base = (t * p.H + h) * D4;
//#for d in D4
      let q{d} = q[base + {d}u];
      let g{d} = dout[base + {d}u];
//#end
      let lt = lse[h * p.T + t];
      let dt = delta[h * p.T + t];
//#for r in RT
      {
        var sc = 0.0;
        var dp = 0.0;
//#for d in D4
        sc += dot(k{r}_{d}, q{d});
        dp += dot(v{r}_{d}, g{d});
//#end
        let pr = select(0.0, exp(sc - lt), t >= s{r} && st == ss{r});
        let ds = pr * (dp - dt);
//#for d in D4
        av{r}_{d} += pr * g{d};
        ak{r}_{d} += ds * q{d};
//#end
      }
//#end
    }
  }
//#for r in RT
  if (first + {r}u < p.T) {
//#for d in D4
    dk[(s{r} * p.KVH + kvh) * D4 + {d}u] = ak{r}_{d} * p.scale;
    dv[(s{r} * p.KVH + kvh) * D4 + {d}u] = av{r}_{d};
//#end
  }
//#end
}
