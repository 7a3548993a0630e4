/** Packed-batch layout (src/engine/packing.ts): per-token positions and sequence starts, and token-bounded grouping. */
import { describe, expect, it } from 'vitest';
import { groupByTokens, packing } from '../../src/engine/packing.ts';

describe('packing', () => {
  it("lays sequences end to end; positions restart; seg names each token's first token", () => {
    const p = packing([3, 1, 2]);
    expect(p.T).toBe(6);
    expect(p.starts).toEqual([0, 3, 4]);
    expect([...p.positions]).toEqual([0, 1, 2, 0, 0, 1]);
    expect([...p.seg]).toEqual([0, 0, 0, 3, 4, 4]);
  });
  it('one sequence: positions 0..T-1, seg all 0', () => {
    const p = packing([4]);
    expect([...p.positions]).toEqual([0, 1, 2, 3]);
    expect([...p.seg]).toEqual([0, 0, 0, 0]);
  });
});

describe('groupByTokens', () => {
  const len = (s: string) => s.length;
  it('fills groups in order up to the limit', () => {
    expect(groupByTokens(['aa', 'bbb', 'c', 'dddd', 'e'], len, 5)).toEqual([['aa', 'bbb'], ['c', 'dddd'], ['e']]);
  });
  it('an item over the limit goes alone; limit 1 gives one item per group', () => {
    expect(groupByTokens(['a', 'bbbbbbb', 'c'], len, 3)).toEqual([['a'], ['bbbbbbb'], ['c']]);
    expect(groupByTokens(['a', 'b'], len, 1)).toEqual([['a'], ['b']]);
  });
  it('no items: no groups', () => {
    expect(groupByTokens([], len, 8)).toEqual([]);
  });
});
