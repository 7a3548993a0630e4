/**
 * Packed-batch references: the kernels take several sequences laid end to end (src/engine/packing.ts);
 * the reference of a packed call is the single-sequence reference run on each sequence alone, its
 * results laid out the way the packed kernels write them.
 */

/** Rows start..start+n of a (T, width) row-major array. */
export function segmentRows(a: ArrayLike<number>, width: number, start: number, n: number): Float32Array {
  return Float32Array.from({ length: n * width }, (_, i) => a[start * width + i]!);
}

/** Per-sequence (n_i, width) results concatenated into (T, width). */
export function concatRows(parts: readonly ArrayLike<number>[]): Float64Array {
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(Array.from(p), at);
    at += p.length;
  }
  return out;
}

/** Per-sequence (H, n_i) head-major results interleaved into (H, T). */
export function concatHeadMajor(parts: readonly ArrayLike<number>[], lengths: readonly number[], H: number): Float64Array {
  const T = lengths.reduce((a, n) => a + n, 0);
  const out = new Float64Array(H * T);
  let start = 0;
  parts.forEach((p, i) => {
    const n = lengths[i]!;
    for (let h = 0; h < H; h++) for (let t = 0; t < n; t++) out[h * T + start + t] = p[h * n + t]!;
    start += n;
  });
  return out;
}
