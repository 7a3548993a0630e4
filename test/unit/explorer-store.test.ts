/**
 * The saliency explorer's stored scores (src/storage/explorer.ts): stored and read back through a
 * structured clone (what IndexedDB does to a value), they re-classify bit for bit as the fresh
 * ones under any constants; a stored value of another shape is refused naming the field.
 */
import { describe, expect, it } from 'vitest';
import { classifyScores } from '../../src/nlft/method.ts';
import { DEFAULT_SALIENCY, type SaliencyOptions } from '../../src/nlft/saliency.ts';
import type { ScoredDataset } from '../../src/session/scoring.ts';
import { explorerStore, readStoredExplorer } from '../../src/storage/explorer.ts';
import { memoryKeyValueStore } from '../../src/storage/runs.ts';
import { syntheticScoredDataset } from '../helpers/synthetic-scores.ts';

const classify = (s: ScoredDataset, o: Partial<SaliencyOptions>) =>
  classifyScores(s.records, s.scores, o, (id) => s.tokenTexts[id] ?? `<${id}>`);

describe('explorer store', () => {
  it('keeps the scores bit-exact: read back, they re-classify as the fresh ones under any constants', async () => {
    const fresh = syntheticScoredDataset(8, 40, 24, 3);
    const store = explorerStore(memoryKeyValueStore());
    expect(await store.last()).toBeUndefined();
    const saliency: SaliencyOptions = { ...DEFAULT_SALIENCY, rho: 1.1, pjMin: 0 };
    await store.save({ scored: fresh, saliency });
    const back = await store.last();
    expect(back?.saliency).toEqual(saliency);
    const stored = back!.scored;
    expect(stored).not.toBe(fresh); // a copy, as IndexedDB gives
    stored.scores.records.forEach((r, i) => {
      const f = fresh.scores.records[i];
      expect(r.hb).toBeInstanceOf(Float32Array);
      expect(new Uint32Array(r.hb.buffer, r.hb.byteOffset, r.hb.length)).toEqual(
        new Uint32Array(f.hb.buffer, f.hb.byteOffset, f.hb.length),
      );
    });
    for (const o of [
      {},
      { tauC: 0.5, rho: 1.05, pjMin: 0 },
      { rho: 1.2, delta: 0.2, clusterCriterion: 'similarity' as const },
      { rho: 1.05, pjMin: 0, negatives: 'anchor' as const, anchorWeight: 2 },
      { negativesWithoutSaliency: 'skip' as const, unlikelyFractionMax: 0.5 },
    ]) {
      const [a, b] = [classify(fresh, o), classify(stored, o)];
      expect(b.entries).toStrictEqual(a.entries);
      expect(b.results).toStrictEqual(a.results);
    }
    // The constants matter: the synthetic data has unlikely tokens at ρ 1.05 and none at ρ 1000.
    const unlikely = (o: Partial<SaliencyOptions>) =>
      classify(stored, o)
        .entries.flatMap((e) => e.tokens)
        .filter((t) => t.class === 'unlikely').length;
    expect(unlikely({ rho: 1.05, pjMin: 0 })).toBeGreaterThan(0);
    expect(unlikely({ rho: 1000 })).toBe(0);
    // The constants' draft is kept apart (written at every change); the scores stay as stored.
    await store.saveOptions({ ...saliency, rho: 2 });
    const again = await store.last();
    expect(again?.saliency.rho).toBe(2);
    expect(again?.scored.scores.records[0].hb).toEqual(stored.scores.records[0].hb);
  });

  it('refuses a stored value of another shape, naming the field', async () => {
    const scored = syntheticScoredDataset(3, 10, 8, 4);
    const kv = memoryKeyValueStore();
    await kv.put('explorer', { scored: { ...scored, scores: { ...scored.scores, records: scored.scores.records.slice(1) } } });
    await expect(explorerStore(kv).last()).rejects.toThrow(/field "scored\.scores\.records": expected 3 entries, one per record/);
    const cut = structuredClone(scored);
    cut.scores.records[1].hb = cut.scores.records[1].hb.slice(1);
    expect(() => readStoredExplorer({ scored: cut })).toThrow(
      'field "scored.scores.records[1].hb": expected a Float32Array of 80 values); score the dataset again.',
    );
  });
});
