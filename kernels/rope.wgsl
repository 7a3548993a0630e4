// Rotary position embedding, in place, HF `rotate_half` (non-interleaved) convention:
//   x (T, nHeads*D): for i < D/2, (x[i], x[i+D/2]) <- (x[i]*c - x[i+D/2]*s, x[i+D/2]*c + x[i]*s)
// with c, s = cos, sin(pos[t] * inv_freq[i]). The table cs (T, D/2, 2), a row per token, is computed
// on the host in float64 (llama3 frequency scaling included; src/model/rope.ts): WGSL's cos/sin are
// only accurate on [-pi, pi] and positions make the angles much larger. A row per token (not per
// position) lets packed sequences restart their positions at 0 with no extra index buffer.
// `dir` = +1 applies the rotation (forward), -1 its transpose (the backward pass).
//
// CPU reference: test/reference/cpu-ops.ts ropeRef (angles from its own ropeInvFreq, float64).
// Test: test/gpu/kernels.test.ts (forward; dir -1 restores the input).

struct Params { T: u32, nHeads: u32, halfD: u32, dir: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;  // (T, nHeads*2*halfD)
@group(0) @binding(2) var<storage, read> cs: array<vec2<f32>>; // (T, halfD) cos, sin

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  let perRow = p.nHeads * p.halfD;
  if (idx >= p.T * perRow) { return; }
  let t = idx / perRow;
  let rem = idx % perRow;
  let h = rem / p.halfD;
  let i = rem % p.halfD;
  let a = t * perRow * 2u + h * 2u * p.halfD + i;
  let b = a + p.halfD;
  let c = cs[t * p.halfD + i];
  let s = c.y * p.dir;
  let x1 = x[a];
  let x2 = x[b];
  x[a] = x1 * c.x - x2 * s;
  x[b] = x2 * c.x + x1 * s;
}
