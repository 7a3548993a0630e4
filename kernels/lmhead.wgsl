// Fused lm-head + logsumexp + tgt log-probability, without a (rows x vocab) logits buffer.
//
//   h (T,C) final-normed hidden states; rows (R) positions to score; targets (R) ids
//   logits z = h[rows] @ W(V,C)^T exist only in registers, one tile at a time.
// Pass `partial`: each workgroup computes one (RT x VT) tile of logits (register-tiled and
//   unrolled like matmul.wgsl; W f32/q8/q4 via qweight.wgsl), folds each row's values into
//   (max, sum exp), then reduces across its threads: part (R, nTiles), nTiles = V / VT.
//   The thread whose tile holds a row's tgt writes that logit to tlogit (R).
// Pass `reduce`: per row, combine the nTiles partials: lse = logsumexp(z), logp = z_y - lse.
// The backward pass recomputes the logits with the same tiling from h and lse.

const WGX: u32 = {{WGX}}u;
const WGY: u32 = {{WGY}}u;
const TM: u32 = {{TM}}u;
const TN: u32 = {{TN4}}u * 4u;
const KW: u32 = {{K}}u;
const NONE: u32 = 0xffffffffu;
const NEG: f32 = -3.0e38;

struct Params { R: u32, V: u32, nTiles: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<vec4<f32>>;               // (T, C/4)
@group(0) @binding(2) var<storage, read> rows: array<u32>;                  // (R)
@group(0) @binding(3) var<storage, read> targets: array<u32>;               // (R)
@group(0) @binding(4) var<storage, read_write> part: array<vec2<f32>>;      // (R, nTiles)
@group(0) @binding(5) var<storage, read_write> tlogit: array<f32>;          // (R)
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;             // (R)
@group(0) @binding(9) var<storage, read_write> logp: array<f32>;            // (R)

{{WEIGHT}}

var<workgroup> redm: array<f32, WGX * WGY * TM>;
var<workgroup> redl: array<f32, WGX * WGY * TM>;

/// Fold four logits at columns n..n+3 (those < V) into the running (m, l) of one row;
/// write the tgt's logit when it is among them.
fn fold(ml: vec2<f32>, z: vec4<f32>, n: u32, r: u32, tgt: u32) -> vec2<f32> {
  let ok = (vec4<u32>(n) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(p.V);
  let zz = select(vec4<f32>(NEG), z, ok);
  let mt = max(ml.x, max(max(zz.x, zz.y), max(zz.z, zz.w)));
  let e = select(vec4<f32>(0.0), exp(zz - mt), ok);
  if (tgt >= n && tgt < n + 4u && r < p.R) { tlogit[r] = z[tgt - n]; }
  return vec2<f32>(mt, ml.y * exp(ml.x - mt) + e.x + e.y + e.z + e.w);
}

@compute @workgroup_size(WGX, WGY)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let r0 = (wg.y * WGY + lid.y) * TM;
//#for i in TM
  let rr{i} = min(r0 + {i}u, p.R - 1u);
  let hr{i} = rows[rr{i}] * (KW / 4u);
  let tg{i} = targets[rr{i}];
  var ml{i} = vec2<f32>(NEG, 0.0);
//#end
  let n0 = wg.x * WGX * TN + lid.x * TN;
//#for j in TN4
  let c{j} = n0 + {j}u * 4u;
  let c{j}_0 = min(c{j}, p.V - 1u);
  let c{j}_1 = min(c{j} + 1u, p.V - 1u);
  let c{j}_2 = min(c{j} + 2u, p.V - 1u);
  let c{j}_3 = min(c{j} + 3u, p.V - 1u);
//#end
//#for i in TM
//#for j in TN4
  var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
  for (var k4 = 0u; k4 < KW / 4u; k4++) {
//#for j in TN4
    let m{j} = mat4x4<f32>(load_w4(c{j}_0, k4), load_w4(c{j}_1, k4), load_w4(c{j}_2, k4), load_w4(c{j}_3, k4));
//#end
//#for i in TM
    let x{i} = h[hr{i} + k4];
//#for j in TN4
    acc{i}_{j} += x{i} * m{j};
//#end
//#end
  }
//#for i in TM
//#for j in TN4
  ml{i} = fold(ml{i}, acc{i}_{j}, c{j}, r0 + {i}u, tg{i});
//#end
//#end
//#for i in TM
  redm[((lid.y * TM + {i}u) * WGX) + lid.x] = ml{i}.x;
  redl[((lid.y * TM + {i}u) * WGX) + lid.x] = ml{i}.y;
//#end
  workgroupBarrier();
  if (lid.x == 0u) {
    for (var i = 0u; i < TM; i++) {
      let r = r0 + i;
      if (r >= p.R) { break; }
      let base = (lid.y * TM + i) * WGX;
      var mm = NEG;
      for (var x = 0u; x < WGX; x++) { mm = max(mm, redm[base + x]); }
      var ll = 0.0;
      for (var x = 0u; x < WGX; x++) { ll += redl[base + x] * exp(redm[base + x] - mm); }
      part[r * p.nTiles + wg.x] = vec2<f32>(mm, ll);
    }
  }
}

@compute @workgroup_size(64)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= p.R) { return; }
  var mm = NEG;
  for (var i = 0u; i < p.nTiles; i++) { mm = max(mm, part[r * p.nTiles + i].x); }
  var ll = 0.0;
  for (var i = 0u; i < p.nTiles; i++) { let q = part[r * p.nTiles + i]; ll += q.y * exp(q.x - mm); }
  let z = mm + log(ll);
  lse[r] = z;
  if (targets[r] == NONE) { logp[r] = 0.0; } else { logp[r] = tlogit[r] - z; }
}
