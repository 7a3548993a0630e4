/**
 * Rotary embedding frequencies and the (position, i) -> (cos, sin) table the rope kernel reads.
 * Computed in float64 on the host: WGSL's cos/sin are only specified on [-pi, pi].
 */
import type { LlamaConfig } from './config.ts';

/**
 * inv_freq[i] = theta^(-2i/D), i < D/2, with llama3 scaling when configured (HF
 * `_compute_llama3_parameters`), or divided by explicit per-frequency factors when the config
 * has them: ggml's rope (`ggml_rope_cache_init` in ggml-cpu's ops.cpp, given a `freq_factors`
 * tensor by `ggml_rope_ext`) turns frequency i's angle p·theta^(-2i/D) into that angle / factor[i],
 * which is p times this inverse frequency.
 */
export function ropeInvFreq(config: Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling' | 'ropeFreqFactors'>): Float64Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  const factors = config.ropeFreqFactors;
  for (let i = 0; i < half; i++) inv[i] = 1 / config.ropeTheta ** ((2 * i) / config.headDim) / (factors?.[i] ?? 1);
  const s = config.ropeScaling;
  if (!s) return inv;
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i];
    if (wavelen > lowWavelen) inv[i] /= s.factor;
    else if (wavelen >= highWavelen) {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
    }
  }
  return inv;
}

/**
 * cs (T, D/2, 2): interleaved cos, sin of pos[t] * inv_freq[i], a row per token; `positions` is the
 * per-token position list (packed sequences restart at 0) or a count n for positions 0..n-1.
 */
export function ropeTable(invFreq: Float64Array, positions: number | ArrayLike<number>): Float32Array {
  const half = invFreq.length;
  const pos = typeof positions === 'number' ? Array.from({ length: positions }, (_, t) => t) : positions;
  const out = new Float32Array(pos.length * half * 2);
  for (let t = 0; t < pos.length; t++) {
    for (let i = 0; i < half; i++) {
      // HF computes the angle in float32 (inv_freq.float() @ position_ids.float()); match that rounding.
      const angle = Math.fround(pos[t] * Math.fround(invFreq[i]));
      out[(t * half + i) * 2] = Math.cos(angle);
      out[(t * half + i) * 2 + 1] = Math.sin(angle);
    }
  }
  return out;
}
