/**
 * Plain-TypeScript CPU references for the backward kernels, used by test/gpu/kernels-backward.test.ts
 * on small random shapes. Same conventions as `cpu-ops.ts` (row-major, (T,C) = T rows of C, nn.Linear
 * weight = [out, in]); every sum accumulates in float64. Unlike `cpu-ops.ts`, results are returned as
 * Float64Array and inputs are any ArrayLike<number>, so the references themselves can be checked by
 * float64 central finite differences of the forward functions (done in the test file).
 *
 * Each gradient is derived by hand from its forward definition (the derivation is in the comment);
 * none reuses a trick of the kernels (e.g. attention recomputes its probabilities from scratch and
 * never uses the forward's out or lse). Each backward kernel's header (kernels/*.wgsl) names the
 * function here it is checked against.
 */

function checkLength(name: string, a: ArrayLike<number>, expected: number): void {
  if (a.length !== expected) {
    throw new RangeError(`${name}: length ${a.length}, expected ${expected}`);
  }
}

/**
 * Input gradient of a linear layer y = x W^T (x (T,K), W (N,K), y (T,N)):
 *   dL/dx[t,k] = sum_n dy[t,n] * W[n,k],   i.e. dx (T,K) = dy (T,N) @ W (N,K).
 * With `nOff`, dy holds a chunk of N columns of a wider dy and multiplies rows nOff .. nOff+N-1 of
 * W (`wRows` rows in all, default w.length / K): dx = dy_chunk @ W[nOff : nOff+N]. Chunk columns
 * whose W row does not exist (nOff + n >= wRows, the padding of the last vocabulary chunk) must
 * carry a zero gradient; they contribute nothing (a non-zero value there throws).
 * dy (T,N), w (wRows,K) -> dx (T,K), without alpha/beta (the caller forms beta*dx + alpha*ref).
 */
export function matmulDxRef(
  dy: ArrayLike<number>,
  w: ArrayLike<number>,
  T: number,
  N: number,
  K: number,
  opts: { nOff?: number; wRows?: number } = {},
): Float64Array {
  const nOff = opts.nOff ?? 0;
  const wRows = opts.wRows ?? w.length / K;
  checkLength('matmulDxRef dy', dy, T * N);
  checkLength('matmulDxRef w', w, wRows * K);
  const dx = new Float64Array(T * K);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      const g = dy[t * N + n]!;
      const row = nOff + n;
      if (row >= wRows) {
        if (g !== 0) throw new RangeError(`matmulDxRef: dy[${t},${n}] = ${g} meets W row ${row}, past the last row ${wRows - 1}`);
        continue;
      }
      if (g === 0) continue;
      for (let k = 0; k < K; k++) dx[t * K + k] += g * w[row * K + k]!;
    }
  }
  return dx;
}

/**
 * A reduction over tokens, as in the LoRA weight gradients (dB = dy^T u, dA = g^T x):
 *   out[m,p] = sum_t a[t,m] * b[t,p].
 * a (T,M), b (T,P) -> out (M,P), without alpha/beta.
 */
export function matmulTnRef(a: ArrayLike<number>, b: ArrayLike<number>, T: number, M: number, P: number): Float64Array {
  checkLength('matmulTnRef a', a, T * M);
  checkLength('matmulTnRef b', b, T * P);
  const out = new Float64Array(M * P);
  for (let m = 0; m < M; m++) {
    for (let p = 0; p < P; p++) {
      let s = 0;
      for (let t = 0; t < T; t++) s += a[t * M + m]! * b[t * P + p]!;
      out[m * P + p] = s;
    }
  }
  return out;
}

/**
 * RMSNorm backward with a frozen weight. Per row: y_c = x_c r w_c, r = (mean_c(x_c^2) + eps)^(-1/2),
 * so dr/dx_j = -1/2 (mean + eps)^(-3/2) * 2 x_j / C = -r^3 x_j / C and
 *   dx_j = sum_c dy_c w_c (delta_cj r + x_c dr/dx_j) = r w_j dy_j - x_j r^3 * mean_c(w_c dy_c x_c).
 * r is recomputed here in float64 from x and eps (the kernel reads the forward's saved rstd).
 * The result is added onto `dx0` (the residual gradient flowing past the norm) when given.
 * x (T,C), w (C), dy (T,C), dx0 (T,C)? -> dx (T,C).
 */
export function rmsnormBackwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  dy: ArrayLike<number>,
  T: number,
  C: number,
  eps: number,
  dx0?: ArrayLike<number>,
): Float64Array {
  checkLength('rmsnormBackwardRef x', x, T * C);
  checkLength('rmsnormBackwardRef w', w, C);
  checkLength('rmsnormBackwardRef dy', dy, T * C);
  if (dx0) checkLength('rmsnormBackwardRef dx0', dx0, T * C);
  const dx = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    const o = t * C;
    let ss = 0;
    let wdx = 0;
    for (let c = 0; c < C; c++) {
      const xv = x[o + c]!;
      ss += xv * xv;
      wdx += w[c]! * dy[o + c]! * xv;
    }
    const r = 1 / Math.sqrt(ss / C + eps);
    const k = (r * r * r * wdx) / C;
    for (let c = 0; c < C; c++) dx[o + c] = (dx0 ? dx0[o + c]! : 0) + r * w[c]! * dy[o + c]! - x[o + c]! * k;
  }
  return dx;
}

/**
 * SwiGLU backward, elementwise: h = silu(g) u, silu(g) = g s, s = sigmoid(g) = 1/(1+exp(-g)),
 * ds/dg = s(1-s), so dsilu/dg = s + g s (1-s) = s (1 + g (1-s)) and
 *   dgate = dh * u * s * (1 + g (1 - s)),   dup = dh * g * s.
 * s is evaluated without overflow for any g (exp of a non-positive argument only).
 * gate, up, dh (n) -> dgate, dup (n).
 */
export function swigluBackwardRef(
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
  dh: ArrayLike<number>,
): { dgate: Float64Array; dup: Float64Array } {
  const n = gate.length;
  checkLength('swigluBackwardRef up', up, n);
  checkLength('swigluBackwardRef dh', dh, n);
  const dgate = new Float64Array(n);
  const dup = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const g = gate[i]!;
    const e = Math.exp(-Math.abs(g));
    const s = g >= 0 ? 1 / (1 + e) : e / (1 + e);
    const oneMinusS = g >= 0 ? e / (1 + e) : 1 / (1 + e);
    dgate[i] = dh[i]! * up[i]! * s * (1 + g * oneMinusS);
    dup[i] = dh[i]! * g * s;
  }
  return { dgate, dup };
}

/**
 * Causal grouped-query attention backward. Forward (per query head h, kv head kh = floor(h/(H/KVH)),
 * scale = 1/sqrt(D)): S[t,j] = scale q_t.k_j for j <= t, P[t,:] = softmax(S[t, 0..t]), O_t = sum_j P v_j.
 * Backward, with dP[t,j] = dO_t.v_j and the softmax Jacobian dS = P (dP - sum_j' P[t,j'] dP[t,j']):
 *   dv_j = sum_h sum_{t>=j} P[t,j] dO_t
 *   dq_t = scale sum_{j<=t} dS[t,j] k_j
 *   dk_j = scale sum_h sum_{t>=j} dS[t,j] q_t
 * where sum_h runs over the H/KVH query heads sharing the kv head. P is recomputed here in float64
 * from q and k, and the row term sum_j P dP is formed from P and dP directly (the kernels use the
 * equivalent dO_t.O_t with the forward's f32 O and lse instead).
 * q (T,H*D), k,v (T,KVH*D), dout (T,H*D) -> dq (T,H*D), dk, dv (T,KVH*D).
 */
export function attentionBackwardRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dout: ArrayLike<number>,
  T: number,
  H: number,
  KVH: number,
  D: number,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  if (H % KVH !== 0) throw new RangeError(`attentionBackwardRef: H=${H} is not a multiple of KVH=${KVH}`);
  checkLength('attentionBackwardRef q', q, T * H * D);
  checkLength('attentionBackwardRef k', k, T * KVH * D);
  checkLength('attentionBackwardRef v', v, T * KVH * D);
  checkLength('attentionBackwardRef dout', dout, T * H * D);
  const nRep = H / KVH;
  const scale = 1 / Math.sqrt(D);
  const dq = new Float64Array(T * H * D);
  const dk = new Float64Array(T * KVH * D);
  const dv = new Float64Array(T * KVH * D);
  const P = new Float64Array(T);
  const dP = new Float64Array(T);
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / nRep);
    for (let t = 0; t < T; t++) {
      const qo = (t * H + h) * D;
      let max = -Infinity;
      for (let j = 0; j <= t; j++) {
        const ko = (j * KVH + kh) * D;
        let s = 0;
        let dp = 0;
        for (let d = 0; d < D; d++) {
          s += q[qo + d]! * k[ko + d]!;
          dp += dout[qo + d]! * v[ko + d]!;
        }
        P[j] = s * scale;
        dP[j] = dp;
        if (P[j]! > max) max = P[j]!;
      }
      let sum = 0;
      for (let j = 0; j <= t; j++) {
        P[j] = Math.exp(P[j]! - max);
        sum += P[j]!;
      }
      let rowDot = 0; // sum_j P dP
      for (let j = 0; j <= t; j++) {
        P[j] = P[j]! / sum;
        rowDot += P[j]! * dP[j]!;
      }
      for (let j = 0; j <= t; j++) {
        const ko = (j * KVH + kh) * D;
        const p = P[j]!;
        const ds = p * (dP[j]! - rowDot);
        for (let d = 0; d < D; d++) {
          dv[ko + d] += p * dout[qo + d]!;
          dq[qo + d] += scale * ds * k[ko + d]!;
          dk[ko + d] += scale * ds * q[qo + d]!;
        }
      }
    }
  }
  return { dq, dk, dv };
}

/**
 * The dropout mask as kernels/dropout.wgsl documents it: the lowbias32 finalizer of
 * (i ^ seed * 0x9e3779b9) (u32 arithmetic), whose top 24 bits as a fraction of 2^24 are compared
 * with the f32 rate: kept when u >= rate. Exact: u and the comparison are exact in f32 and f64.
 * The keep probability is therefore 1 - ceil(rate * 2^24) / 2^24, i.e. 1 - rate up to 6e-8.
 */
export function dropoutHashRef(i: number, seed: number): number {
  let h = (i ^ Math.imul(seed >>> 0, 0x9e3779b9)) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h = (h ^ (h >>> 15)) >>> 0;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h;
}

/** Mask (n): 1 where element i survives dropout with this seed and rate. */
export function dropoutMaskRef(n: number, seed: number, rate: number): Uint8Array {
  const r32 = Math.fround(rate);
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) mask[i] = (dropoutHashRef(i, seed) >>> 8) / 16777216 >= r32 ? 1 : 0;
  return mask;
}

/**
 * Inverted dropout, accumulated: out = beta * prev + mask * x / (1 - rate), with mask from
 * `dropoutMaskRef` (the same mask forward on x and backward on dL/d(dropout(x)), since
 * d(mask x / (1-rate))/dx = mask / (1-rate)). 1 - rate is taken in f32, as the kernel does.
 * x (n), prev (n)? -> out (n).
 */
export function dropoutRef(x: ArrayLike<number>, seed: number, rate: number, beta = 0, prev?: ArrayLike<number>): Float64Array {
  const n = x.length;
  if (prev) checkLength('dropoutRef prev', prev, n);
  const mask = dropoutMaskRef(n, seed, rate);
  const keepScale = 1 / Math.fround(1 - Math.fround(rate));
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (mask[i] ? x[i]! * keepScale : 0) + (beta !== 0 && prev ? beta * prev[i]! : 0);
  return out;
}

/**
 * Scatter-add of the scored rows' hidden-state gradient: dxn[rows[r], :] += coef[r] * g[r, :]; rows
 * distinct. Each element gets one f32 product and one f32 addition (Math.fround of each).
 * dxn (T,C), coef (R), g (R,C), rows (R) -> new dxn (T,C) as Float32Array.
 */
export function scatterRowsRef(
  dxn: Float32Array,
  coef: ArrayLike<number>,
  g: ArrayLike<number>,
  rows: ArrayLike<number>,
  C: number,
): Float32Array {
  const R = rows.length;
  checkLength('scatterRowsRef g', g, R * C);
  checkLength('scatterRowsRef coef', coef, R);
  const T = dxn.length / C;
  const out = Float32Array.from(dxn);
  const seen = new Set<number>();
  for (let r = 0; r < R; r++) {
    const row = rows[r]!;
    if (!Number.isInteger(row) || row < 0 || row >= T) throw new RangeError(`scatterRowsRef: rows[${r}] = ${row} is outside [0, ${T})`);
    if (seen.has(row)) throw new RangeError(`scatterRowsRef: row ${row} appears twice`);
    seen.add(row);
    for (let c = 0; c < C; c++) out[row * C + c] = Math.fround(out[row * C + c]! + Math.fround(coef[r]! * g[r * C + c]!));
  }
  return out;
}
