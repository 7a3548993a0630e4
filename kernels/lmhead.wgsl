// Fused lm-head + logsumexp + target log-probability, without a (rows x vocab) logits buffer.
//
//   h (T,C) final-normed hidden states; rows (R) positions to score; targets (R) ids
//   logits z = h[rows] @ W(V,C)^T exist only in registers, one tile at a time.
// Pass `partial`: each workgroup computes a (RT x VT) logits tile (register-tiled like matmul.wgsl,
//   W f32/q8/q4 via qweight.wgsl) and reduces it to a running (max, sum exp) per row: part (R, nTiles).
//   The thread whose tile holds a row's target writes that logit to tlogit (R).
// Pass `reduce`: per row, combine the nTiles partials: lse = logsumexp(z), logp = z_y - lse.
// The same tiling recomputes the logits in the backward pass from h and lse.

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const WGX: u32 = {{WGX}}u;
const WGY: u32 = {{WGY}}u;
const VSUB: u32 = {{VSUB}}u;
const KW: u32 = {{K}}u;
const NONE: u32 = 0xffffffffu;

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

@compute @workgroup_size(WGX, WGY)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let r0 = (wg.y * WGY + lid.y) * TM;
  var hr: array<u32, TM>;
  var tg: array<u32, TM>;
  var m: array<f32, TM>;
  var l: array<f32, TM>;
  for (var i = 0u; i < TM; i++) {
    let r = min(r0 + i, p.R - 1u);
    hr[i] = rows[r] * (KW / 4u);
    tg[i] = targets[r];
    m[i] = -3.0e38;
  }
  for (var s = 0u; s < VSUB; s++) {
    let n0 = (wg.x * VSUB + s) * WGX * TN + lid.x * TN;
    // Explicitly zeroed: a `var` inside a loop is not reliably re-initialised on every driver.
    var acc: array<array<f32, TN>, TM>;
    for (var i = 0u; i < TM; i++) { for (var j = 0u; j < TN; j++) { acc[i][j] = 0.0; } }
    var wr: array<u32, TN>;
    for (var j = 0u; j < TN; j++) { wr[j] = min(n0 + j, p.V - 1u); }
    for (var k4 = 0u; k4 < KW / 4u; k4++) {
      var xv: array<vec4<f32>, TM>;
      for (var i = 0u; i < TM; i++) { xv[i] = h[hr[i] + k4]; }
      for (var j = 0u; j < TN; j++) {
        let w = load_w4(wr[j], k4);
        for (var i = 0u; i < TM; i++) { acc[i][j] += dot(xv[i], w); }
      }
    }
    for (var i = 0u; i < TM; i++) {
      var mt = m[i];
      for (var j = 0u; j < TN; j++) { if (n0 + j < p.V) { mt = max(mt, acc[i][j]); } }
      var lt = l[i] * exp(m[i] - mt);
      for (var j = 0u; j < TN; j++) {
        if (n0 + j < p.V) {
          lt += exp(acc[i][j] - mt);
          if (n0 + j == tg[i] && r0 + i < p.R) { tlogit[r0 + i] = acc[i][j]; }
        }
      }
      m[i] = mt;
      l[i] = lt;
    }
  }
  for (var i = 0u; i < TM; i++) {
    let slot = ((lid.y * TM + i) * WGX) + lid.x;
    redm[slot] = m[i];
    redl[slot] = l[i];
  }
  workgroupBarrier();
  if (lid.x == 0u) {
    for (var i = 0u; i < TM; i++) {
      let r = r0 + i;
      if (r >= p.R) { break; }
      let base = (lid.y * TM + i) * WGX;
      var mm = -3.0e38;
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
  var mm = -3.0e38;
  for (var i = 0u; i < p.nTiles; i++) { mm = max(mm, part[r * p.nTiles + i].x); }
  var ll = 0.0;
  for (var i = 0u; i < p.nTiles; i++) { let q = part[r * p.nTiles + i]; ll += q.y * exp(q.x - mm); }
  let z = mm + log(ll);
  lse[r] = z;
  if (targets[r] == NONE) { logp[r] = 0.0; } else { logp[r] = tlogit[r] - z; }
}
