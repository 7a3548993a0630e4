/**
 * Rotary embedding frequencies and the (position, i) -> (cos, sin) table the rope kernel reads.
 * Computed in float64 on the host: WGSL's cos/sin are only specified on [-pi, pi].
 */
import type { LlamaConfig } from './config.ts';

/** inv_freq[i] = theta^(-2i/D), i < D/2, with llama3 scaling when configured (HF `_compute_llama3_parameters`). */
export function ropeInvFreq(config: Pick<LlamaConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float64Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / config.headDim);
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

/** cs (P, D/2, 2): interleaved cos, sin of pos * inv_freq[i] for positions 0..P-1. */
export function ropeTable(invFreq: Float64Array, positions: number): Float32Array {
  const half = invFreq.length;
  const out = new Float32Array(positions * half * 2);
  for (let t = 0; t < positions; t++) {
    for (let i = 0; i < half; i++) {
      // HF computes the angle in float32 (inv_freq.float() @ position_ids.float()); match that rounding.
      const angle = Math.fround(t * Math.fround(invFreq[i]));
      out[(t * half + i) * 2] = Math.cos(angle);
      out[(t * half + i) * 2 + 1] = Math.sin(angle);
    }
  }
  return out;
}
