// Causal grouped-query attention forward, tiled with online softmax (FlashAttention-style):
//   q (T, H*D), k (T, KVH*D), v (T, KVH*D) -> out (T, H*D), lse (H, T)
// Query head h reads kv head h / (H/KVH). Scores s = q.k / sqrt(D) never go to memory: each
// thread owns one query row and folds keys into a running max m, sum l and accumulator, so
// memory is O(T*H*D), not O(T^2*H). lse = m + log(l) is kept for the backward pass, which
// recomputes the probabilities tile by tile from it.
// Workgroup: BQ query rows of one head; keys/values are staged in workgroup memory BK at a time.
// The head dimension is unrolled (//#for) into D/4 vec4 registers for q and the accumulator.
// Packed batches: several sequences laid end to end (no padding). seg[t] is the index of the first
// token of t's sequence; query t attends keys seg[t]..t only, so one pass scores many records with
// each record's result as if it ran alone. A single sequence has seg = 0 everywhere.
//
// CPU references: test/reference/cpu-ops.ts attentionRef (forward and, for its last row, decode),
// test/reference/cpu-backward.ts attentionBackwardRef (delta, dq, dkdv).
// Tests: test/gpu/kernels.test.ts (forward, decode), test/gpu/kernels-backward.test.ts (backward).

const D4: u32 = {{D4}}u;
const BQ: u32 = {{BQ}}u;
const BK: u32 = {{BK}}u;

struct Params { T: u32, H: u32, KVH: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(11) var<storage, read> seg: array<u32>;                 // (T) first token of t's sequence

var<workgroup> kt: array<vec4<f32>, BK * D4>;
var<workgroup> vt: array<vec4<f32>, BK * D4>;
var<workgroup> blockSeg: u32;

/// One key of an online softmax (forward and decode): the running max m and sum l take the key's
/// score s. Returns (m, l) after it and (corr, p): the factor the row's accumulator is rescaled by
/// and the key's weight, so that the accumulator becomes acc * corr + p * v. (By value: passing m
/// and l by pointer made SwiftShader's decode attention ~30 % slower.)
fn online_key(m: f32, l: f32, s: f32) -> vec4<f32> {
  let mn = max(m, s);
  let corr = exp(m - mn);
  let pj = exp(s - mn);
  return vec4<f32>(mn, l * corr + pj, corr, pj);
}

/// First key tile a query block needs: the tile holding its first query's sequence start.
/// (Made workgroup-uniform, since it bounds a loop with barriers.)
fn first_key_tile(q0: u32, lane: u32) -> u32 {
  if (lane == 0u) { blockSeg = seg[min(q0, p.T - 1u)]; }
  return (workgroupUniformLoad(&blockSeg) / BK) * BK;
}

/// Stage keys and values k0 .. k0+BK of kv head kvh in workgroup memory (BQ threads cooperate).
fn load_kv_tile(k0: u32, kvh: u32, lane: u32) {
  for (var e = lane; e < BK * D4; e += BQ) {
    let src = (min(k0 + e / D4, p.T - 1u) * p.KVH + kvh) * D4 + e % D4;
    kt[e] = k[src];
    vt[e] = v[src];
  }
}

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let kvh = h / (p.H / p.KVH);
  let t = wg.x * BQ + lid.x;
  let tq = min(t, p.T - 1u);
  let qrow = (tq * p.H + h) * D4;
//#for d in D4
  let q{d} = q[qrow + {d}u] * p.scale;
  var a{d} = vec4<f32>(0.0);
//#end
  var m = -3.0e38;
  var l = 0.0;
  let s0 = seg[tq];
  let kEnd = min(p.T, wg.x * BQ + BQ); // causal: no key past the block's last query
  for (var k0 = first_key_tile(wg.x * BQ, lid.x); k0 < kEnd; k0 += BK) {
    load_kv_tile(k0, kvh, lid.x);
    workgroupBarrier();
    let jBeg = max(s0, k0) - k0; // keys before the sequence start are another record's
    let jEnd = min(BK, tq + 1u - min(k0, tq + 1u));
    for (var j = jBeg; j < jEnd; j++) {
      let base = j * D4;
      var s = 0.0;
//#for d in D4
      s += dot(q{d}, kt[base + {d}u]);
//#end
      let w = online_key(m, l, s);
      m = w.x;
      l = w.y;
//#for d in D4
      a{d} = a{d} * w.z + w.w * vt[base + {d}u];
//#end
    }
    workgroupBarrier();
  }
  if (t < p.T) {
    let inv = 1.0 / l;
//#for d in D4
    out[qrow + {d}u] = a{d} * inv;
//#end
    lse[h * p.T + t] = m + log(l);
  }
}

// ---- Backward (FlashAttention-2 style: probabilities recomputed from q, k and the saved lse) ----
//   P[t,s] = exp(scale * q_t.k_s - lse_t),  dP[t,s] = dO_t.v_s,  Dt = dO_t.O_t
//   dq_t = scale * sum_s P (dP - Dt) k_s;  dk_s = scale * sum_t P (dP - Dt) q_t;  dv_s = sum_t P dO_t
// Three passes, none holding a T x T buffer: `delta` (Dt), `dq` (a thread per query row, like the
// forward), `dkdv` (a thread per key row of a kv head, summing over the query heads of its group,
// so no atomics are needed and the result is deterministic). With packed sequences, dq starts at
// its sequence like the forward; dkdv stops at the end of its last key's sequence (`sequence_end`)
// and masks the queries of other sequences in the tiles it shares with them.

@group(0) @binding(6) var<storage, read> dout: array<vec4<f32>>;           // (T, H*D) dO
@group(0) @binding(7) var<storage, read_write> delta: array<f32>;          // (H, T)   Dt
@group(0) @binding(8) var<storage, read_write> dq: array<vec4<f32>>;       // (T, H*D)
@group(0) @binding(9) var<storage, read_write> dk: array<vec4<f32>>;       // (T, KVH*D)
@group(0) @binding(10) var<storage, read_write> dv: array<vec4<f32>>;      // (T, KVH*D)

var<workgroup> qt: array<vec4<f32>, BQ * D4>;
var<workgroup> ot: array<vec4<f32>, BQ * D4>;
var<workgroup> lt: array<f32, BQ>;
var<workgroup> dt: array<f32, BQ>;
var<workgroup> st: array<u32, BQ>;
var<workgroup> blockEnd: u32;

/// One past the last token of the sequence holding token s: seg is non-decreasing (sequences lie end
/// to end), so a binary search for the first t > s with seg[t] != seg[s]. Made workgroup-uniform,
/// since it bounds a loop with barriers.
fn sequence_end(s: u32, lane: u32) -> u32 {
  if (lane == 0u) {
    let first = seg[s];
    var lo = s + 1u;
    var hi = p.T;
    while (lo < hi) {
      let mid = (lo + hi) / 2u;
      if (seg[mid] == first) { lo = mid + 1u; } else { hi = mid; }
    }
    blockEnd = lo;
  }
  return workgroupUniformLoad(&blockEnd);
}

@compute @workgroup_size(64)
fn delta_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u; // i = h * T + t
  if (i >= p.H * p.T) { return; }
  let h = i / p.T;
  let t = i % p.T;
  let row = (t * p.H + h) * D4;
  var s = 0.0;
//#for d in D4
  s += dot(dout[row + {d}u], out[row + {d}u]);
//#end
  delta[i] = s;
}

@compute @workgroup_size(BQ)
fn dq_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let kvh = h / (p.H / p.KVH);
  let t = wg.x * BQ + lid.x;
  let tq = min(t, p.T - 1u);
  let qrow = (tq * p.H + h) * D4;
  let l = lse[h * p.T + tq];
  let dlt = delta[h * p.T + tq];
//#for d in D4
  let q{d} = q[qrow + {d}u] * p.scale;
  let g{d} = dout[qrow + {d}u];
  var a{d} = vec4<f32>(0.0);
//#end
  let s0 = seg[tq];
  let kEnd = min(p.T, wg.x * BQ + BQ);
  for (var k0 = first_key_tile(wg.x * BQ, lid.x); k0 < kEnd; k0 += BK) {
    load_kv_tile(k0, kvh, lid.x);
    workgroupBarrier();
    let jBeg = max(s0, k0) - k0;
    let jEnd = min(BK, tq + 1u - min(k0, tq + 1u));
    for (var j = jBeg; j < jEnd; j++) {
      let base = j * D4;
      var s = 0.0;
      var dp = 0.0;
//#for d in D4
      s += dot(q{d}, kt[base + {d}u]);
      dp += dot(g{d}, vt[base + {d}u]);
//#end
      let ds = exp(s - l) * (dp - dlt);
//#for d in D4
      a{d} += ds * kt[base + {d}u];
//#end
    }
    workgroupBarrier();
  }
  if (t < p.T) {
//#for d in D4
    dq[qrow + {d}u] = a{d} * p.scale;
//#end
  }
}

@compute @workgroup_size(BK)
fn dkdv_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let kvh = wg.y;
  let group = p.H / p.KVH;
  let s = wg.x * BK + lid.x;
  let sk = min(s, p.T - 1u);
  let krow = (sk * p.KVH + kvh) * D4;
  let ss = seg[sk]; // only queries of this key's sequence see it
//#for d in D4
  let k{d} = k[krow + {d}u] * p.scale;
  let v{d} = v[krow + {d}u];
  var ak{d} = vec4<f32>(0.0);
  var av{d} = vec4<f32>(0.0);
//#end
  let tStart = (wg.x * BK / BQ) * BQ; // first query tile that can see this block's keys
  let tEnd = sequence_end(min(wg.x * BK + BK, p.T) - 1u, lid.x); // no query past the last key's sequence sees the block
  for (var hg = 0u; hg < group; hg++) {
    let h = kvh * group + hg;
    for (var t0 = tStart; t0 < tEnd; t0 += BQ) {
      for (var e = lid.x; e < BQ * D4; e += BK) {
        let src = (min(t0 + e / D4, p.T - 1u) * p.H + h) * D4 + e % D4;
        qt[e] = q[src];
        ot[e] = dout[src];
      }
      for (var e = lid.x; e < BQ; e += BK) {
        let tt = min(t0 + e, p.T - 1u);
        lt[e] = lse[h * p.T + tt];
        dt[e] = delta[h * p.T + tt];
        st[e] = seg[tt];
      }
      workgroupBarrier();
      for (var i = 0u; i < BQ; i++) {
        let t = t0 + i;
        if (t >= sk && t < p.T && st[i] == ss) {
          let base = i * D4;
          var sc = 0.0;
          var dp = 0.0;
//#for d in D4
          sc += dot(k{d}, qt[base + {d}u]);
          dp += dot(v{d}, ot[base + {d}u]);
//#end
          let pr = exp(sc - lt[i]);
          let ds = pr * (dp - dt[i]);
//#for d in D4
          av{d} += pr * ot[base + {d}u];
          ak{d} += ds * qt[base + {d}u];
//#end
        }
      }
      workgroupBarrier();
    }
  }
  if (s < p.T) {
//#for d in D4
    dk[krow + {d}u] = ak{d} * p.scale;
    dv[krow + {d}u] = av{d};
//#end
  }
}

// ---- Decode: the newest query row of each head against a KV cache (generation) ----
// The position P of the new token is read from the decode step's buffer (`dstep`, written once a
// step), not from the uniform, so a step's dispatches are recorded once and replayed every token.
//   decode_main: q (1, H*D) at position P; k, v (1, KVH*D) the new token's, kcache, vcache (maxT, KVH*D)
//   holding positions 0..P-1 -> out (1, H*D); k, v also -> row P of the caches.
// Fused: the cache append. The first query head of each kv head writes its row P; every head reads
// rows 0..P-1 from the caches and position P from k, v (never the row being written), so the append
// needs no dispatch of its own (it was one a layer: 30 a token for SmolLM2, 2.0-2.2 of its ~160 ms
// here; the fused kernel saves about half of that).
// One workgroup per head. Its DEC threads take keys lane, lane+DEC, ... each with its own online
// softmax state (m, l, acc); the DEC states are then merged pairwise in workgroup memory. DEC is
// the tuner's (Tuning.decodeAttention: 4 or 16), at most 16 so that the states of D up to 128 fit
// the 16 KiB of workgroup memory WebGPU guarantees. SwiftShader runs 4, one SIMD group whose
// barriers cost nothing, in half the time of 16 (docs/architecture.md §3d).

@group(0) @binding(12) var<storage, read> dstep: array<u32>;                // decode step: [token id, position P]
@group(0) @binding(13) var<storage, read_write> kcache: array<vec4<f32>>;  // (maxT, KVH*D)
@group(0) @binding(14) var<storage, read_write> vcache: array<vec4<f32>>;  // (maxT, KVH*D)

const DEC: u32 = {{DEC}}u;
var<workgroup> dm: array<f32, DEC>;
var<workgroup> dl: array<f32, DEC>;
var<workgroup> da: array<vec4<f32>, DEC * D4>;

@compute @workgroup_size(DEC)
fn decode_main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.x;
  let group = p.H / p.KVH;
  let kvh = h / group;
  let P = dstep[1];
  let fresh = kvh * D4; // the new token's k, v of this kv head
  if (h % group == 0u) {
    for (var d = lid.x; d < D4; d += DEC) {
      kcache[(P * p.KVH + kvh) * D4 + d] = k[fresh + d];
      vcache[(P * p.KVH + kvh) * D4 + d] = v[fresh + d];
    }
  }
//#for d in D4
  let q{d} = q[h * D4 + {d}u] * p.scale;
  var a{d} = vec4<f32>(0.0);
//#end
  var m = -3.0e38;
  var l = 0.0;
  // Cached keys j = lane, lane + DEC, ... below P; then position P, from k and v, by the lane it falls
  // to. (A branch between the two sources inside the loop cost more than the append's dispatch: a
  // SIMD group runs both sides of a branch its lanes may take apart.)
  for (var j = lid.x; j < P; j += DEC) {
    let base = (j * p.KVH + kvh) * D4;
    var s = 0.0;
//#for d in D4
    s += dot(q{d}, kcache[base + {d}u]);
//#end
    let w = online_key(m, l, s);
    m = w.x;
    l = w.y;
//#for d in D4
    a{d} = a{d} * w.z + w.w * vcache[base + {d}u];
//#end
  }
  if (lid.x == P % DEC) {
    var s = 0.0;
//#for d in D4
    s += dot(q{d}, k[fresh + {d}u]);
//#end
    let w = online_key(m, l, s);
    m = w.x;
    l = w.y;
//#for d in D4
    a{d} = a{d} * w.z + w.w * v[fresh + {d}u];
//#end
  }
  dm[lid.x] = m;
  dl[lid.x] = l;
//#for d in D4
  da[lid.x * D4 + {d}u] = a{d};
//#end
  workgroupBarrier();
  for (var stride = DEC / 2u; stride > 0u; stride = stride / 2u) {
    if (lid.x < stride) {
      let o = lid.x + stride;
      let mn = max(dm[lid.x], dm[o]);
      let c0 = exp(dm[lid.x] - mn);
      let c1 = exp(dm[o] - mn);
      dl[lid.x] = dl[lid.x] * c0 + dl[o] * c1;
      for (var d = 0u; d < D4; d++) {
        da[lid.x * D4 + d] = da[lid.x * D4 + d] * c0 + da[o * D4 + d] * c1;
      }
      dm[lid.x] = mn;
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    let inv = 1.0 / dl[0];
    for (var d = 0u; d < D4; d++) {
      out[h * D4 + d] = da[d] * inv;
    }
  }
}
