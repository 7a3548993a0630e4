/**
 * Plain-TypeScript CPU references for each engine kernel, used by kernel tests on small random
 * shapes. Every reduction accumulates in float64; results are returned as Float32Array (what a
 * GPU buffer holds) except where noted. Layouts are row-major and follow Hugging Face
 * `LlamaForCausalLM` (nn.Linear weight = [out, in]; activations (T, features)).
 *
 * These functions are deliberately naive (loops, no blocking) so that they are easy to audit;
 * they are independent of the tfjs reference in `llama-tf.ts`, and the two are checked against
 * each other in `test/unit/reference.test.ts`. Each kernel's header (kernels/*.wgsl) names the
 * function here it is checked against; the backward kernels' references are in `cpu-backward.ts`.
 */
import type { Llama3RopeScaling } from '../../src/model/config.ts';

function checkLength(name: string, a: ArrayLike<number>, expected: number): void {
  if (a.length !== expected) {
    throw new RangeError(`${name}: length ${a.length}, expected ${expected}`);
  }
}

/**
 * Embedding gather.
 * table (V,C), ids (T) -> out (T,C). Throws on an id outside [0, V).
 */
export function embeddingRef(table: Float32Array, V: number, C: number, ids: ArrayLike<number>): Float32Array {
  checkLength('embeddingRef table', table, V * C);
  const T = ids.length;
  const out = new Float32Array(T * C);
  for (let t = 0; t < T; t++) {
    const id = ids[t]!;
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new RangeError(`embeddingRef: ids[${t}] = ${id} is outside [0, ${V})`);
    }
    out.set(table.subarray(id * C, (id + 1) * C), t * C);
  }
  return out;
}

/**
 * RMSNorm: out = x * w / sqrt(mean(x^2) + eps), per row.
 * x (T,C), w (C) -> out (T,C), rstd (T) = 1 / sqrt(mean(x^2) + eps) (what a backward pass saves).
 */
export function rmsnormRef(x: Float32Array, w: Float32Array, T: number, C: number, eps: number): { out: Float32Array; rstd: Float32Array } {
  checkLength('rmsnormRef x', x, T * C);
  checkLength('rmsnormRef w', w, C);
  const out = new Float32Array(T * C);
  const rstd = new Float32Array(T);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let c = 0; c < C; c++) {
      const v = x[t * C + c]!;
      ss += v * v;
    }
    const r = 1 / Math.sqrt(ss / C + eps);
    rstd[t] = r;
    for (let c = 0; c < C; c++) out[t * C + c] = x[t * C + c]! * r * w[c]!;
  }
  return { out, rstd };
}

/**
 * Linear layer without bias: out = x W^T.
 * x (T,K), w (N,K) -> out (T,N).
 */
export function matmulRef(x: Float32Array, w: Float32Array, T: number, N: number, K: number): Float32Array {
  checkLength('matmulRef x', x, T * K);
  checkLength('matmulRef w', w, N * K);
  const out = new Float32Array(T * N);
  for (let t = 0; t < T; t++) {
    const xo = t * K;
    for (let n = 0; n < N; n++) {
      const wo = n * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += x[xo + k]! * w[wo + k]!;
      out[t * N + n] = s;
    }
  }
  return out;
}

/**
 * The LoRA delta only: out = scale * (x A^T) B^T (no dropout). The intermediate x A^T is kept
 * in float64.
 * x (T,K), A (r,K), B (N,r) -> out (T,N).
 */
export function loraRef(
  x: Float32Array,
  A: Float32Array,
  B: Float32Array,
  T: number,
  K: number,
  N: number,
  r: number,
  scale: number,
): Float32Array {
  checkLength('loraRef x', x, T * K);
  checkLength('loraRef A', A, r * K);
  checkLength('loraRef B', B, N * r);
  // u (T,r) = x A^T
  const u = new Float64Array(T * r);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < r; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[t * K + k]! * A[j * K + k]!;
      u[t * r + j] = s;
    }
  }
  // out (T,N) = scale * u B^T
  const out = new Float32Array(T * N);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let j = 0; j < r; j++) s += u[t * r + j]! * B[n * r + j]!;
      out[t * N + n] = scale * s;
    }
  }
  return out;
}

/** Elementwise sum a + b (residual connections). */
export function addRef(a: Float32Array, b: Float32Array): Float32Array {
  checkLength('addRef b', b, a.length);
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

/**
 * Rotary inverse frequencies, float64: inv_freq[i] = 1 / theta^(2i/D) for i < D/2, then, when
 * `scaling` is given, Hugging Face's `_compute_llama3_parameters`:
 * wavelen = 2π / inv_freq; wavelen < old_ctx/high_freq_factor → unchanged;
 * wavelen > old_ctx/low_freq_factor → inv_freq / factor; otherwise
 * smooth = (old_ctx/wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor) and
 * (1 - smooth) * inv_freq / factor + smooth * inv_freq. Explicit per-frequency `factors` (a GGUF
 * file's `rope_freqs`; never with `scaling`) divide: inv_freq[i] / factors[i].
 * -> (D/2)
 */
export function ropeInvFreq(D: number, theta: number, scaling: Llama3RopeScaling | null, factors?: readonly number[]): Float64Array {
  if (D % 2 !== 0) throw new RangeError(`ropeInvFreq: head dim ${D} is odd`);
  const half = D / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / theta ** ((2 * i) / D);
  if (factors !== undefined) {
    if (factors.length !== half) throw new RangeError(`ropeInvFreq: ${factors.length} factors for ${half} frequencies`);
    return inv.map((f, i) => f / factors[i]!);
  }
  if (scaling === null) return inv;
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldCtx } = scaling;
  const lowFreqWavelen = oldCtx / lowFreqFactor;
  const highFreqWavelen = oldCtx / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const f = inv[i]!;
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) continue; // high frequency: unchanged
    if (wavelen > lowFreqWavelen) {
      inv[i] = f / factor; // low frequency: scaled
    } else {
      const smooth = (oldCtx / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      inv[i] = ((1 - smooth) * f) / factor + smooth * f;
    }
  }
  return inv;
}

/**
 * Rotary position embedding, `rotate_half` (non-interleaved) convention: within each head the
 * pairs are (i, i + D/2); angle = (posOffset + t) * invFreq[i], computed in float64;
 * out[i] = x[i] cos - x[i+D/2] sin, out[i+D/2] = x[i+D/2] cos + x[i] sin.
 * x (T, nHeads*D), invFreq (D/2) -> out (T, nHeads*D).
 */
export function ropeRef(x: Float32Array, T: number, nHeads: number, D: number, invFreq: ArrayLike<number>, posOffset = 0): Float32Array {
  const half = D / 2;
  checkLength('ropeRef x', x, T * nHeads * D);
  checkLength('ropeRef invFreq', invFreq, half);
  const out = new Float32Array(x.length);
  for (let t = 0; t < T; t++) {
    const pos = posOffset + t;
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i]!;
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      for (let h = 0; h < nHeads; h++) {
        const base = t * nHeads * D + h * D;
        const x1 = x[base + i]!;
        const x2 = x[base + i + half]!;
        out[base + i] = x1 * c - x2 * s;
        out[base + i + half] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}

/**
 * Causal grouped-query attention: query head h reads kv head floor(h / (H/KVH)); scores are
 * q·k / sqrt(D) over keys s ≤ t; softmax; weighted sum of v.
 * q (T,H*D), k (T,KVH*D), v (T,KVH*D) -> out (T,H*D),
 * lse (H,T) = natural-log logsumexp of the scaled scores of query row t over s ≤ t.
 */
export function attentionRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  H: number,
  KVH: number,
  D: number,
): { out: Float32Array; lse: Float32Array } {
  if (H % KVH !== 0) throw new RangeError(`attentionRef: H=${H} is not a multiple of KVH=${KVH}`);
  checkLength('attentionRef q', q, T * H * D);
  checkLength('attentionRef k', k, T * KVH * D);
  checkLength('attentionRef v', v, T * KVH * D);
  const nRep = H / KVH;
  const scale = 1 / Math.sqrt(D);
  const out = new Float32Array(T * H * D);
  const lse = new Float32Array(H * T);
  const scores = new Float64Array(T);
  const acc = new Float64Array(D);
  for (let h = 0; h < H; h++) {
    const kvh = Math.floor(h / nRep);
    for (let t = 0; t < T; t++) {
      const qo = t * H * D + h * D;
      let max = -Infinity;
      for (let s = 0; s <= t; s++) {
        const ko = s * KVH * D + kvh * D;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qo + d]! * k[ko + d]!;
        scores[s] = dot * scale;
        if (scores[s]! > max) max = scores[s]!;
      }
      let sum = 0;
      for (let s = 0; s <= t; s++) {
        scores[s] = Math.exp(scores[s]! - max);
        sum += scores[s]!;
      }
      lse[h * T + t] = max + Math.log(sum);
      acc.fill(0);
      for (let s = 0; s <= t; s++) {
        const p = scores[s]! / sum;
        const vo = s * KVH * D + kvh * D;
        for (let d = 0; d < D; d++) acc[d] += p * v[vo + d]!;
      }
      for (let d = 0; d < D; d++) out[qo + d] = acc[d]!;
    }
  }
  return { out, lse };
}

/**
 * SwiGLU activation: silu(gate) * up, silu(g) = g / (1 + exp(-g)).
 * gate (T,F), up (T,F) -> out (T,F).
 */
export function swigluRef(gate: Float32Array, up: Float32Array): Float32Array {
  checkLength('swigluRef up', up, gate.length);
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    out[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
  return out;
}

/**
 * Fused lm-head + log-softmax reference: logits = h W^T (float64, never stored as a whole),
 * lse[t] = logsumexp_v logits[t,v], logp[t] = logits[t, targets[t]] - lse[t]
 * (NaN where targets[t] < 0).
 * h (T,C), w (V,C), targets (T) -> lse (T), logp (T).
 */
export function lmHeadRef(
  h: Float32Array,
  w: Float32Array,
  T: number,
  V: number,
  C: number,
  targets: ArrayLike<number>,
): { lse: Float32Array; logp: Float32Array } {
  checkLength('lmHeadRef h', h, T * C);
  checkLength('lmHeadRef w', w, V * C);
  checkLength('lmHeadRef targets', targets, T);
  const lse = new Float32Array(T);
  const logp = new Float32Array(T);
  const logits = new Float64Array(V);
  for (let t = 0; t < T; t++) {
    let max = -Infinity;
    for (let vi = 0; vi < V; vi++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += h[t * C + c]! * w[vi * C + c]!;
      logits[vi] = s;
      if (s > max) max = s;
    }
    let sum = 0;
    for (let vi = 0; vi < V; vi++) sum += Math.exp(logits[vi]! - max);
    const l = max + Math.log(sum);
    lse[t] = l;
    const target = targets[t]!;
    if (target < 0) {
      logp[t] = NaN;
    } else {
      if (!Number.isInteger(target) || target >= V) {
        throw new RangeError(`lmHeadRef: targets[${t}] = ${target} is outside [0, ${V})`);
      }
      logp[t] = logits[target]! - l;
    }
  }
  return { lse, logp };
}
