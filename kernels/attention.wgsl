// Causal grouped-query attention forward, tiled with online softmax (FlashAttention-style):
//   q (T, H*D), k (T, KVH*D), v (T, KVH*D) -> out (T, H*D), lse (H, T)
// Query head h reads kv head h / (H/KVH). Scores s = q.k / sqrt(D) never go to memory: each
// thread owns one query row and folds keys into a running max m, sum l and accumulator, so
// memory is O(T*H*D), not O(T^2*H). lse = m + log(l) is kept for the backward pass, which
// recomputes the probabilities tile by tile from it.
// Workgroup: BQ query rows of one head; keys/values are staged in workgroup memory BK at a time.
// The head dimension is unrolled (//#for) into D/4 vec4 registers for q and the accumulator.

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

var<workgroup> kt: array<vec4<f32>, BK * D4>;
var<workgroup> vt: array<vec4<f32>, BK * D4>;

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
  let kEnd = min(p.T, wg.x * BQ + BQ); // causal: no key past the block's last query
  for (var k0 = 0u; k0 < kEnd; k0 += BK) {
    for (var e = lid.x; e < BK * D4; e += BQ) {
      let src = (min(k0 + e / D4, p.T - 1u) * p.KVH + kvh) * D4 + e % D4;
      kt[e] = k[src];
      vt[e] = v[src];
    }
    workgroupBarrier();
    let jEnd = min(BK, tq + 1u - min(k0, tq + 1u));
    for (var j = 0u; j < jEnd; j++) {
      let base = j * D4;
      var s = 0.0;
//#for d in D4
      s += dot(q{d}, kt[base + {d}u]);
//#end
      let mn = max(m, s);
      let corr = exp(m - mn);
      let pj = exp(s - mn);
      l = l * corr + pj;
//#for d in D4
      a{d} = a{d} * corr + pj * vt[base + {d}u];
//#end
      m = mn;
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
