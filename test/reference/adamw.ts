/**
 * Plain-TypeScript float64 reference of one optimizer step: torch.nn.utils.clip_grad_norm_
 * (on gradScale * grads) followed by torch.optim.AdamW (decoupled weight decay), written as
 * naive loops so it is easy to audit against the PyTorch docs. Independent of
 * src/train/optimizer.ts: every hyper-parameter is explicit, nothing is defaulted.
 */

/** Hyper-parameters; `maxGradNorm <= 0` disables clipping. */
export interface AdamWRefOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  maxGradNorm: number;
}

/** Parameters and moments, updated in place by `adamwStepRef`. */
export interface AdamWRefState {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

/** Fresh state: parameters copied, moments zero. */
export function adamwStateRef(params: ArrayLike<number>): AdamWRefState {
  const n = params.length;
  return { p: Float64Array.from(params), m: new Float64Array(n), v: new Float64Array(n) };
}

/** L2 norm of gradScale * grads. */
export function gradNormRef(grads: ArrayLike<number>, gradScale: number): number {
  let ss = 0;
  for (let i = 0; i < grads.length; i++) {
    const g = grads[i] * gradScale;
    ss += g * g;
  }
  return Math.sqrt(ss);
}

/**
 * One step on `s` with the accumulated `grads`: g = gradScale * grads, clipped to norm
 * maxGradNorm (coefficient min(1, maxGradNorm / (norm + 1e-6))), then
 *   p -= lr * weightDecay * p
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   p -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
 * @returns the norm of gradScale * grads before clipping
 */
export function adamwStepRef(
  s: AdamWRefState,
  grads: ArrayLike<number>,
  a: { lr: number; step: number; gradScale: number },
  o: AdamWRefOptions,
): number {
  const n = s.p.length;
  if (grads.length !== n) throw new RangeError(`adamwStepRef: ${grads.length} grads for ${n} parameters`);
  const norm = gradNormRef(grads, a.gradScale);
  const clip = o.maxGradNorm > 0 ? Math.min(1, o.maxGradNorm / (norm + 1e-6)) : 1;
  const bc1 = 1 - o.beta1 ** a.step;
  const bc2 = 1 - o.beta2 ** a.step;
  for (let i = 0; i < n; i++) {
    const g = grads[i] * a.gradScale * clip;
    s.p[i] -= a.lr * o.weightDecay * s.p[i];
    s.m[i] = o.beta1 * s.m[i] + (1 - o.beta1) * g;
    s.v[i] = o.beta2 * s.v[i] + (1 - o.beta2) * g * g;
    s.p[i] -= (a.lr * (s.m[i] / bc1)) / (Math.sqrt(s.v[i] / bc2) + o.eps);
  }
  return norm;
}
