/**
 * Packed batches: several sequences laid end to end in one forward pass, with no padding. Each
 * token carries its position within its own sequence (the RoPE table's row) and the index of its
 * sequence's first token (the attention kernel's `seg`), so every sequence is scored exactly as if
 * it ran alone while the weights are read once for the whole batch.
 */

/** Per-token layout of sequences of the given lengths packed in order. */
export interface Packing {
  /** Total tokens. */
  T: number;
  /** Offset of each sequence's first token. */
  starts: number[];
  /** (T) position of each token within its sequence. */
  positions: Uint32Array;
  /** (T) index of the first token of each token's sequence. */
  seg: Uint32Array;
}

export function packing(lengths: readonly number[]): Packing {
  const T = lengths.reduce((a, n) => a + n, 0);
  const positions = new Uint32Array(T);
  const seg = new Uint32Array(T);
  const starts: number[] = [];
  let at = 0;
  for (const n of lengths) {
    starts.push(at);
    for (let i = 0; i < n; i++) {
      positions[at + i] = i;
      seg[at + i] = at;
    }
    at += n;
  }
  return { T, starts, positions, seg };
}

/**
 * Split items, in order, into consecutive groups of at most `maxTokens` tokens (an item longer
 * than that goes alone). Keeping the order keeps results independent of the grouping.
 */
export function groupByTokens<T>(items: readonly T[], tokensOf: (item: T) => number, maxTokens: number): T[][] {
  const groups: T[][] = [];
  let cur: T[] = [];
  let used = 0;
  for (const it of items) {
    const n = tokensOf(it);
    if (cur.length > 0 && used + n > maxTokens) {
      groups.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(it);
    used += n;
  }
  if (cur.length > 0) groups.push(cur);
  return groups;
}
