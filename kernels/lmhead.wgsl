// Fused lm-head + logsumexp + target log-probability, and its backward, without a
// (tokens x vocab) logits buffer.
//
//   h (T,C) final-normed hidden states; rows (R) positions to score; targets (R) ids
//   logits z = h[rows] @ W(V,C)^T exist only in registers, one tile at a time (mode 2 alone
//   keeps them, for a chunk of rows).
// Forward, pass `partial` (mode 0): each workgroup computes one (RT x VT) tile of logits
//   (register-tiled and unrolled like matmul.wgsl; W f32/q8/q4 via qweight.wgsl), folds each row's
//   values into (max, sum exp, sum exp without the target), then reduces across its threads:
//   part (R, nTiles). The thread whose tile holds a row's target writes that logit to tlogit (R).
// Forward, pass `reduce`: per row, combine the partials: lse = logsumexp(z), logp = z_y - lse and
//   log1mq = log(1 - q_y) = logsumexp_{k != y}(z) - lse, exact even when q_y -> 1 (docs/method.md §3).
// Training forward, the gradient too: every loss term of a row is a multiple of one vector
//   g_r = dz'_r @ W, dz'_v = exp(z_v - lse'_r) for v != y (the softmax without the target,
//   lse' = logsumexp_{k != y}(z) = lse + log1mq), dz'_y = -1,
//   the gradient of -log q_y divided by (1 - q_y): likelihood c*(-log q_y) has gradient c*(1-q)*g_r,
//   unlikelihood u*(-log(1-q_y)) has -u*q*g_r (docs/method.md §5). Each dz' is in [-1, 1] and sums
//   to 0, at any q_y, so g is well scaled even when q_y -> 1. The forward makes g (R,C) with no
//   coefficient known, and the backward only scales it per row (`scatter`).
//   Mode 2 (a chunk of rows at a time): `partial` also stores the tile's logits into dz (R, VC), VC
//   the vocabulary padded to 4 (rows x V for the chunk's rows only); `reduce` as above; `dz_rows`
//   turns each row's logits into dz' in place; then g = dz' @ W is matmul_dx.wgsl: two lm-head
//   products a row.
//   Mode 1, when a chunk of rows' logits would be too large to keep: `partial` recomputes z for one
//   vocabulary chunk [vOff, vOff + VC) and writes dz' into dz (R, VC) (padded columns 0), and
//   matmul_dx adds dz' @ W[chunk] into g; memory R x VC, never R x V; three products a row.
// Backward, `scatter`: the rows' hidden-state gradient dxn[rows[r]] += coef_r * g_r, coef (R) from
//   the host (src/engine/train-pass.ts lossCoefficients).
//
// CPU references: test/reference/cpu-ops.ts lmHeadRef (forward), test/reference/cpu-backward.ts
// scatterRowsRef (scatter); the gradient against float64 finite differences of the loss.
// Tests: test/gpu/kernels.test.ts (forward), test/gpu/ce.test.ts (g from modes 1 and 2 + matmul_dx,
// scaled by `scatter`, against finite differences; mode 2 against mode 1),
// test/gpu/kernels-backward.test.ts (scatter).

const WGX: u32 = {{WGX}}u;
const WGY: u32 = {{WGY}}u;
const TM: u32 = {{TM}}u;
const TN: u32 = {{TN4}}u * 4u;
const KW: u32 = {{K}}u;
const NONE: u32 = 0xffffffffu;
const NEG: f32 = -3.0e38;

struct Params { R: u32, V: u32, nTiles: u32, mode: u32, vOff: u32, VC: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<vec4<f32>>;               // (T, C/4)
@group(0) @binding(2) var<storage, read> rows: array<u32>;                  // (R)
@group(0) @binding(3) var<storage, read> targets: array<u32>;               // (R)
@group(0) @binding(4) var<storage, read_write> part: array<vec4<f32>>;      // (R, nTiles) m, l, l without target
@group(0) @binding(5) var<storage, read_write> tlogit: array<f32>;          // (R)
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;             // (R)
@group(0) @binding(9) var<storage, read_write> logp: array<f32>;            // (R)
@group(0) @binding(10) var<storage, read_write> log1mq: array<f32>;         // (R)
@group(0) @binding(12) var<storage, read_write> dz: array<f32>;             // (R, VC)

{{WEIGHT}}

var<workgroup> redm: array<f32, WGX * WGY * TM>;
var<workgroup> redl: array<vec2<f32>, WGX * WGY * TM>;

/// Fold four logits at columns n..n+3 (those < V) into the running (m, l, l without target) of one
/// row; write the target's logit when it is among them.
fn fold(ml: vec3<f32>, z: vec4<f32>, n: u32, r: u32, tg: u32) -> vec3<f32> {
  let cols = vec4<u32>(n) + vec4<u32>(0u, 1u, 2u, 3u);
  let ok = cols < vec4<u32>(p.V);
  let zz = select(vec4<f32>(NEG), z, ok);
  let mt = max(ml.x, max(max(zz.x, zz.y), max(zz.z, zz.w)));
  let e = select(vec4<f32>(0.0), exp(zz - mt), ok);
  let ex = select(e, vec4<f32>(0.0), cols == vec4<u32>(tg));
  if (tg >= n && tg < n + 4u && r < p.R) { tlogit[r] = z[tg - n]; }
  let c = exp(ml.x - mt);
  return vec3<f32>(mt, ml.y * c + e.x + e.y + e.z + e.w, ml.z * c + ex.x + ex.y + ex.z + ex.w);
}

/// dz'_v of row r at word v: -1 at the target, exp(z - lse') off it (lse' = logsumexp without the
/// target; 0 where every other word's probability underflowed), 0 past V.
fn unit_dz(z: f32, v: u32, tg: u32, lo: f32) -> f32 {
  if (v == tg) { return -1.0; }
  if (v >= p.V || lo <= NEG) { return 0.0; }
  return exp(z - lo);
}

/// Mode 1: dz'[r, n - vOff .. +3] for the chunk's columns.
fn store_dz(r: u32, n: u32, z: vec4<f32>) {
  if (r >= p.R) { return; }
  let lo = lse[r] + log1mq[r];
  let tg = targets[r];
  for (var c = 0u; c < 4u; c++) {
    let col = n + c - p.vOff;
    if (col < p.VC) { dz[r * p.VC + col] = unit_dz(z[c], n + c, tg, lo); }
  }
}

/// Mode 2: the raw logits z[r, n .. n+3] into dz (R, VC), for the columns below VC.
fn store_z(r: u32, n: u32, z: vec4<f32>) {
  if (r >= p.R) { return; }
  for (var c = 0u; c < 4u; c++) {
    if (n + c < p.VC) { dz[r * p.VC + n + c] = z[c]; }
  }
}

@compute @workgroup_size(WGX, WGY)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let r0 = (wg.y * WGY + lid.y) * TM;
//#for i in TM
  let rr{i} = min(r0 + {i}u, p.R - 1u);
  let hr{i} = rows[rr{i}] * (KW / 4u);
  let tg{i} = targets[rr{i}];
  var ml{i} = vec3<f32>(NEG, 0.0, 0.0);
//#end
  let n0 = p.vOff + wg.x * WGX * TN + lid.x * TN;
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
  if (p.mode == 1u) {
//#for i in TM
//#for j in TN4
    store_dz(r0 + {i}u, c{j}, acc{i}_{j});
//#end
//#end
    return;
  }
  if (p.mode == 2u) {
//#for i in TM
//#for j in TN4
    store_z(r0 + {i}u, c{j}, acc{i}_{j});
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
  redl[((lid.y * TM + {i}u) * WGX) + lid.x] = ml{i}.yz;
//#end
  workgroupBarrier();
  if (lid.x == 0u) {
    for (var i = 0u; i < TM; i++) {
      let r = r0 + i;
      if (r >= p.R) { break; }
      let base = (lid.y * TM + i) * WGX;
      var mm = NEG;
      for (var x = 0u; x < WGX; x++) { mm = max(mm, redm[base + x]); }
      var ll = vec2<f32>(0.0);
      for (var x = 0u; x < WGX; x++) { ll += redl[base + x] * exp(redm[base + x] - mm); }
      part[r * p.nTiles + wg.x] = vec4<f32>(mm, ll, 0.0);
    }
  }
}

@compute @workgroup_size(64)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= p.R) { return; }
  var mm = NEG;
  for (var i = 0u; i < p.nTiles; i++) { mm = max(mm, part[r * p.nTiles + i].x); }
  var ll = vec2<f32>(0.0);
  for (var i = 0u; i < p.nTiles; i++) { let q = part[r * p.nTiles + i]; ll += q.yz * exp(q.x - mm); }
  let z = mm + log(ll.x);
  lse[r] = z;
  if (targets[r] == NONE) {
    logp[r] = 0.0;
    log1mq[r] = 0.0;
  } else {
    logp[r] = tlogit[r] - z;
    log1mq[r] = mm + log(ll.y) - z;
  }
}

// Mode 2's dz' in place: one workgroup a row r of dz (R, VC) holding its logits z.
@compute @workgroup_size(64)
fn dz_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let r = wg.x;
  let lo = lse[r] + log1mq[r];
  let tg = targets[r];
  for (var v = lid.x; v < p.VC; v += 64u) {
    let i = r * p.VC + v;
    dz[i] = unit_dz(dz[i], v, tg, lo);
  }
}

// dxn (T,C) rows[r] += coef[r] * g (R,C) row r. Rows are distinct (each position is scored once), so
// no two threads write the same element.
@group(0) @binding(11) var<storage, read> coef: array<f32>;                 // (R)
@group(0) @binding(13) var<storage, read> dh: array<vec4<f32>>;             // (R, C/4) g
@group(0) @binding(14) var<storage, read_write> dxn: array<vec4<f32>>;      // (T, C/4)

@compute @workgroup_size(64)
fn scatter(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let c4 = KW / 4u;
  if (i >= p.R * c4) { return; }
  let r = i / c4;
  dxn[rows[r] * c4 + i % c4] += coef[r] * dh[i];
}
