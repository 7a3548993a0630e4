// Causal grouped-query attention forward, tiled with online softmax (FlashAttention-style):
//   q (T, H*D), k (T, KVH*D), v (T, KVH*D) -> out (T, H*D), lse (H, T)
// Query head h reads kv head h / (H/KVH). Scores s = q.k / sqrt(D) never go to memory: each
// thread owns one query row and folds key tiles into a running max m, sum l and accumulator,
// so memory is O(T*H*D) not O(T^2*H). lse = m + log(l) is kept for the backward pass, which
// recomputes the probabilities tile by tile from it.
// Workgroup: BQ query rows of one head; keys/values are staged in workgroup memory BK at a time.

const D: u32 = {{D}}u;
const BQ: u32 = {{BQ}}u;
const BK: u32 = {{BK}}u;

struct Params { T: u32, H: u32, KVH: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

var<workgroup> kt: array<f32, BK * D>;
var<workgroup> vt: array<f32, BK * D>;

@compute @workgroup_size(BQ)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let kvh = h / (p.H / p.KVH);
  let t = wg.x * BQ + lid.x;
  let live = t < p.T;
  let tq = min(t, p.T - 1u);
  var qv: array<f32, D>;
  var acc: array<f32, D>;
  for (var d = 0u; d < D; d++) { qv[d] = q[(tq * p.H + h) * D + d] * p.scale; }
  var m = -3.0e38;
  var l = 0.0;
  let kEnd = min(p.T, wg.x * BQ + BQ); // causal: no key past the block's last query
  for (var k0 = 0u; k0 < kEnd; k0 += BK) {
    for (var e = lid.x; e < BK * D; e += BQ) {
      let s = min(k0 + e / D, p.T - 1u);
      let src = (s * p.KVH + kvh) * D + e % D;
      kt[e] = k[src];
      vt[e] = v[src];
    }
    workgroupBarrier();
    var sc: array<f32, BK>;
    var mt = m;
    for (var j = 0u; j < BK; j++) {
      var dotv = -3.0e38;
      if (k0 + j <= tq) {
        dotv = 0.0;
        for (var d = 0u; d < D; d++) { dotv += qv[d] * kt[j * D + d]; }
      }
      sc[j] = dotv;
      mt = max(mt, dotv);
    }
    let corr = exp(m - mt);
    l *= corr;
    for (var d = 0u; d < D; d++) { acc[d] *= corr; }
    for (var j = 0u; j < BK; j++) {
      if (k0 + j <= tq) {
        let pj = exp(sc[j] - mt);
        l += pj;
        for (var d = 0u; d < D; d++) { acc[d] += pj * vt[j * D + d]; }
      }
    }
    m = mt;
    workgroupBarrier();
  }
  if (live) {
    let inv = 1.0 / l;
    for (var d = 0u; d < D; d++) { out[(t * p.H + h) * D + d] = acc[d] * inv; }
    lse[h * p.T + t] = m + log(l);
  }
}
