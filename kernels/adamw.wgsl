// AdamW step over the n LoRA parameters, elementwise, with torch.optim.AdamW semantics
// (decoupled weight decay) and torch's clip_grad_norm_ folded in:
//   clip = maxNorm > 0 ? min(1, maxNorm / (norm + 1e-6)) : 1,  norm = stats[0] (gradnorm.wgsl)
//   g  = grads * gradScale * clip
//   p -= lrWd * p                                            lrWd = lr * weightDecay
//   m  = b1 m + (1 - b1) g
//   v  = b2 v + (1 - b2) g^2
//   p -= stepSize * m / (sqrt(v) * invSqrtBc2 + eps)         stepSize = lr / (1 - b1^t),
//                                                            invSqrtBc2 = 1 / sqrt(1 - b2^t)
//   grads = 0
// which is p -= lr * m^ / (sqrt(v^) + eps) with m^ = m / (1 - b1^t), v^ = v / (1 - b2^t), in
// torch's operation order. Host-side f64: the bias corrections, lr * weightDecay, 1 - b1 and
// 1 - b2 (in f32, 1.0 - 0.999 would be off by 1e-5 relative). Fusions: the clip factor is applied
// on the fly, so the gradient is never rescaled in place; and grads is zeroed here, ready for the
// next step's accumulation, which saves a separate clearing pass over the buffer.
// Zero padding between the LoRA matrices stays zero (p = g = m = v = 0 gives a zero update).
//
// CPU reference: test/reference/adamw.ts adamwStepRef (float64, torch order).
// Test: test/gpu/optimizer.test.ts.

struct Params {
  n: u32, lrWd: f32, b1: f32, omb1: f32,
  b2: f32, omb2: f32, stepSize: f32, invSqrtBc2: f32,
  eps: f32, gradScale: f32, maxNorm: f32, _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> params: array<f32>; // (n)
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;  // (n) zeroed on exit
@group(0) @binding(3) var<storage, read_write> m: array<f32>;      // (n) first moment
@group(0) @binding(4) var<storage, read_write> v: array<f32>;      // (n) second moment
@group(0) @binding(5) var<storage, read> stats: array<f32>;        // (1) gradient norm

// grid: grid1d(n, 64)
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n) { return; }
  var clip = 1.0;
  if (p.maxNorm > 0.0) { clip = min(1.0, p.maxNorm / (stats[0] + 1e-6)); }
  let gi = grads[i] * p.gradScale * clip;
  let mi = p.b1 * m[i] + p.omb1 * gi;
  let vi = p.b2 * v[i] + p.omb2 * (gi * gi);
  var w = params[i];
  w -= p.lrWd * w;
  params[i] = w - p.stepSize * mi / (sqrt(vi) * p.invSqrtBc2 + p.eps);
  m[i] = mi;
  v[i] = vi;
  grads[i] = 0.0;
}
