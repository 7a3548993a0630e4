import { describe, expect, it } from 'vitest';
import { NlftError } from '../../src/errors.ts';
import { DEFAULT_SALIENCY, expandClusters, recordLoss, saliency } from '../../src/nlft/saliency.ts';
import { type SaliencySummary, towardsWarning } from '../../src/nlft/method.ts';

/** Hidden states (N, 2) from 2-vectors. */
const H = (...rows: [number, number][]) => Float32Array.from(rows.flat());
const fill = <T>(n: number, v: T) => new Array<T>(n).fill(v);
const closeAll = (got: ArrayLike<number>, want: number[], digits = 12) => {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(got[i], `index ${i}`).toBeCloseTo(w, digits));
};

// Values written out (computed by hand from the formulas of docs/method.md §3):
const POW06_05 = 0.6803742043184604; // (0.5/0.95)^0.6
const POW06_02 = 0.3926303202207753; // (0.2/0.95)^0.6
const POW06_03 = 0.5007703300981267; // (0.3/0.95)^0.6
const POW03_06 = 0.8712209164997194; // (0.6/0.95)^0.3
const POW03_09 = 0.9839106721548712; // (0.9/0.95)^0.3
const U35 = 1.9413755384972873; // 2*sigmoid(5 - 1.5): r1 = 0.5/0.1

/**
 * Seed 2. Left: cos((1,0),(0,1)) = 0, d = 1 > 0.4: add 1, centre (0.5,0.5); cos(centre,(1,1)) = 1: stop.
 * Right with the left walk's centre (0.5,0.5): cos with (2,-1) = 0.5/(0.7071*2.2361) = 0.3162,
 * d = 0.684 > 0.4: add 3, centre (1.25,-0.25); cos with (1,0) = 0.981: stop.  -> {1,2,3}
 * Had the centre been reset to hb[2] = (1,0): cos((1,0),(2,-1)) = 0.894, d = 0.106: stop -> {1,2}.
 */
const NO_RESET_HB = H([1, 1], [0, 1], [1, 0], [2, -1], [1, 0]);

/** Seed 1. distance: cos((1,0),(0,1)) = 0 -> add 0, centre (0.5,0.5); cos with (1,0.1) = 0.774, d = 0.226: stop.
 *  similarity: cos 0 > 0.6 fails on the left; cos((1,0),(1,0.1)) = 0.995 > 0.6: add 2. */
const CRITERIA_HB = H([0, 1], [1, 0], [1, 0.1]);

describe('DEFAULT_SALIENCY', () => {
  it('holds the spec defaults', () => {
    expect(DEFAULT_SALIENCY).toEqual({
      lambda: 10,
      tauC: 0.95,
      rho: 1.5,
      theta: 1.5,
      delta: 0.4,
      pjMin: 0.01,
      unlikelyFractionMax: 0.06,
      clusterCriterion: 'distance',
      sftOnNegatives: false,
      negativesWithoutSaliency: 'train',
      negatives: 'authors',
      anchorWeight: 1,
    });
  });
});

describe('expandClusters', () => {
  it('walks left, then right continuing with the left walk’s centre (not reset)', () => {
    expect([...expandClusters([2], NO_RESET_HB, 5, 2, 0.4, 'distance')].sort()).toEqual([1, 2, 3]);
  });

  it('the two criteria give different sets on the same input', () => {
    expect([...expandClusters([1], CRITERIA_HB, 3, 2, 0.4, 'distance')].sort()).toEqual([0, 1]);
    expect([...expandClusters([1], CRITERIA_HB, 3, 2, 0.4, 'similarity')].sort()).toEqual([1, 2]);
  });

  it('the seed belongs to the set even when no neighbour joins; no seeds, empty set', () => {
    expect([...expandClusters([1], H([1, 0], [1, 0], [1, 0]), 3, 2, 0.4, 'distance')]).toEqual([1]);
    expect(expandClusters([], H([1, 0], [0, 1]), 2, 2, 0.4, 'distance').size).toBe(0);
  });

  it('seeds are independent: each starts from its own hidden state, walks may cross other seeds', () => {
    // Seed 0 (1,0): right j=1 (0,1) cos 0 -> add, centre (0.5,0.5); j=2 (1,0) cos 0.707, d 0.293: stop.
    // Seed 3 (0,1): left j=2 (1,0) cos 0 -> add, centre (0.5,0.5); j=1 (0,1) cos 0.707: stop. Right: end.
    const hb = H([1, 0], [0, 1], [1, 0], [0, 1], [0, 1]);
    expect([...expandClusters([3, 0], hb, 5, 2, 0.4, 'distance')].sort()).toEqual([0, 1, 2, 3]);
    expect([...expandClusters([3], hb, 5, 2, 0.4, 'distance')].sort()).toEqual([2, 3]);
  });

  it('stops at the first neighbour that fails even if a farther one would join', () => {
    // Seed 0 (1,0): j=1 (1,0) fails (d 0); j=2 (0,1) would join but is never reached.
    expect([...expandClusters([0], H([1, 0], [1, 0], [0, 1]), 3, 2, 0.4, 'distance')]).toEqual([0]);
  });

  it('refuses a seed outside the response and mis-sized hidden states', () => {
    expect(() => expandClusters([3], H([1, 0], [1, 0]), 2, 2, 0.4, 'distance')).toThrow(NlftError);
    expect(() => expandClusters([0], H([1, 0], [1, 0]), 3, 2, 0.4, 'distance')).toThrow(NlftError);
  });
});

describe('saliency: positive records', () => {
  it('all correct: s = 1 + ((pc - 0.95)/0.05)^5, weights 10*(1+s)/N, loss from pb', () => {
    const r = saliency({ polarity: 'positive', pc: [0.96, 1.0], pb: [0.5, 0.25], hb: H([1, 0], [1, 0]), hiddenSize: 2 });
    expect(r.classes).toEqual(['correct', 'correct']);
    expect(r.kinds).toEqual(['likelihood', 'likelihood']);
    closeAll(r.coefficients, [1.00032, 2]);
    closeAll(r.weights, [10.0016, 15]); // 10*(2.00032)/2, 10*3/2
    expect(r.loss).toBeCloseTo(27.726996257886707, 12); // 10.0016*ln 2 + 15*ln 4
    expect(r.unlikelyFraction).toBe(0);
    expect(r.sixPercentRule).toBe(false);
    expect(r.skipped).toBe(false);
    expect(r.extra).toBeUndefined();
  });

  it('none correct (pc = tauC exactly is not correct): s = (pc/0.95)^0.6, no clusters', () => {
    const r = saliency({ polarity: 'positive', pc: [0.5, 0.95, 0.2], hb: H([1, 0], [0, 1], [1, 0]), hiddenSize: 2 });
    expect(r.classes).toEqual(['plain', 'plain', 'plain']);
    closeAll(r.coefficients, [POW06_05, 1, POW06_02]);
    closeAll(r.weights, [5.601247347728202, 20 / 3, 4.642101067402584]);
    expect(r.loss).toBeUndefined(); // no base view given
  });

  it('clusters extend left and right; the non-reset centre adds token 3; K tokens get (pc/0.95)^0.3', () => {
    const r = saliency({ polarity: 'positive', pc: [0.5, 0.6, 0.99, 0.9, 0.3], hb: NO_RESET_HB, hiddenSize: 2 });
    expect(r.classes).toEqual(['plain', 'cluster', 'correct', 'cluster', 'plain']);
    closeAll(r.coefficients, [POW06_05, POW03_06, 1.32768, POW03_09, POW06_03]);
    closeAll(
      r.weights,
      [POW06_05, POW03_06, 1.32768, POW03_09, POW06_03].map((s) => (10 * (1 + s)) / 5),
    );
  });

  it('a token both in K (reached by another seed) and in C is correct: the C rule overrides', () => {
    // Seeds 0 and 1 (pc 0.97, 0.99); seed 0's right walk adds 1 (cos 0), seed 1's left walk adds 0.
    const r = saliency({ polarity: 'positive', pc: [0.97, 0.99, 0.5], hb: H([1, 0], [0, 1], [1, 1]), hiddenSize: 2 });
    expect(r.classes).toEqual(['correct', 'correct', 'plain']);
    closeAll(r.coefficients, [1.01024, 1.32768, POW06_05]); // not (0.99/0.95)^0.3 for token 1
  });

  it('lambda and 1/N are in the weights, not in the coefficients', () => {
    const r = saliency({ polarity: 'positive', pc: [0.5, 0.5, 0.5, 0.5], hb: new Float32Array(8).fill(1), hiddenSize: 2 }, { lambda: 2 });
    closeAll(r.coefficients, fill(4, POW06_05));
    closeAll(r.weights, fill(4, 0.8401871021592302)); // 2 * (1 + s) / 4
  });

  it('N = 1', () => {
    const r = saliency({ polarity: 'positive', pc: [0.99], hb: [3, 4], hiddenSize: 2 });
    expect(r.classes).toEqual(['correct']);
    closeAll(r.weights, [23.2768]); // 10 * (1 + 1.32768) / 1
  });

  it('the similarity criterion clusters other tokens than the distance criterion', () => {
    const pc = [0.5, 0.99, 0.3];
    const d = saliency({ polarity: 'positive', pc, hb: CRITERIA_HB, hiddenSize: 2 });
    const s = saliency({ polarity: 'positive', pc, hb: CRITERIA_HB, hiddenSize: 2 }, { clusterCriterion: 'similarity' });
    expect(d.classes).toEqual(['cluster', 'correct', 'plain']);
    expect(s.classes).toEqual(['plain', 'correct', 'cluster']);
    closeAll(d.coefficients, [0.8248479886127263, 1.32768, POW06_03]); // (0.5/0.95)^0.3
    closeAll(s.coefficients, [POW06_05, 1.32768, 0.7076512771825729]); // (0.3/0.95)^0.3
  });
});

/**
 * N = 50 negative: plain tokens pb 0.5, pc 0.64, pj 0.1 (r1 = 0.2); unlikely tokens pb 0.1, pc 0.2,
 * pj 0.5 (r1 = 5, r2 = 2.5). hb all (1,0) but token 11 (0,1), so seed 10's right walk adds 11.
 */
function negative50(unlikely: number[]) {
  const pb = fill(50, 0.5);
  const pc = fill(50, 0.64);
  const pj = fill(50, 0.1);
  for (const t of unlikely) [pb[t], pc[t], pj[t]] = [0.1, 0.2, 0.5];
  const hb = new Float32Array(100);
  for (let t = 0; t < 50; t++) hb[2 * t + (t === 11 ? 1 : 0)] = 1;
  return { polarity: 'negative' as const, pb, pc, pj, hb, hiddenSize: 2 };
}

describe('saliency: negative records', () => {
  it('3 unlikely of 50 (6%, not above): plain sqrt(pc), cluster 0, unlikely 2*sigmoid(r1 - 1.5)', () => {
    const r = saliency(negative50([10, 20, 30]));
    expect(r.unlikelyFraction).toBe(0.06);
    expect(r.sixPercentRule).toBe(false);
    const cls = fill<string>(50, 'plain');
    [cls[10], cls[11], cls[20], cls[30]] = ['unlikely', 'cluster', 'unlikely', 'unlikely'];
    expect(r.classes).toEqual(cls);
    expect(r.kinds.flatMap((k, t) => (k === 'unlikelihood' ? [t] : []))).toEqual([10, 20, 30]);
    const coef = fill(50, 0.8);
    [coef[10], coef[11], coef[20], coef[30]] = [U35, 0, U35, U35];
    closeAll(r.coefficients, coef);
    const w = fill(50, 0.16); // 10 * 0.8 / 50
    [w[10], w[11], w[20], w[30]] = [0.38827510769945744, 0, 0.38827510769945744, 0.38827510769945744];
    closeAll(r.weights, w);
    // 46 * 0.16 * ln 2 + 3 * 0.388275 * -ln(1 - 0.1)
    expect(r.loss).toBeCloseTo(5.224289845614137, 12);
    expect(r.extra).toBeUndefined();
  });

  it('4 unlikely of 50 (8% > 6%): every non-unlikely token gets 0', () => {
    const r = saliency(negative50([10, 20, 30, 40]));
    expect(r.unlikelyFraction).toBe(0.08);
    expect(r.sixPercentRule).toBe(true);
    const coef = fill(50, 0);
    for (const t of [10, 20, 30, 40]) coef[t] = U35;
    closeAll(r.coefficients, coef);
    expect(r.classes[11]).toBe('cluster');
    expect(r.weights.filter((w) => w !== 0).length).toBe(4);
  });

  it('pj must exceed pjMin (0.01), strictly', () => {
    // All ratios are 10 or 20; only the third token has pj > 0.01. 1/3 > 6%: the others get 0.
    const r = saliency({
      polarity: 'negative',
      pb: [0.001, 0.0009, 0.001],
      pc: [0.001, 0.0009, 0.001],
      pj: [0.01, 0.009, 0.02],
      hb: H([1, 0], [1, 0], [1, 0]),
      hiddenSize: 2,
    });
    expect(r.classes).toEqual(['plain', 'plain', 'unlikely']);
    closeAll(r.coefficients, [0, 0, 1.9999999815251008]); // 2*sigmoid(20 - 1.5)
    closeAll(r.weights, [0, 0, 6.666666605083669]);
  });

  it('a ratio exactly at rho is not above it', () => {
    // r1 = 0.375/0.25 = 1.5 exactly; r2 = 0.375/0.25 = 1.5 exactly; third: r1 = r2 = 3.
    const r = saliency({
      polarity: 'negative',
      pb: [0.25, 0.125, 0.125],
      pc: [0.125, 0.25, 0.125],
      pj: [0.375, 0.375, 0.375],
      hb: H([1, 0], [1, 0], [1, 0]),
      hiddenSize: 2,
    });
    expect(r.classes).toEqual(['plain', 'plain', 'unlikely']);
    closeAll(r.coefficients, [0, 0, 1.6351489523872873]); // 2*sigmoid(3 - 1.5)
  });

  it('N = 1: a lone unlikely token keeps its weight (rule 3 overrides the 6% rule); a lone plain one gets sqrt(pc)', () => {
    const u = saliency({ polarity: 'negative', pb: [0.1], pc: [0.2], pj: [0.5], hb: [1, 0], hiddenSize: 2 });
    expect(u.classes).toEqual(['unlikely']);
    expect(u.kinds).toEqual(['unlikelihood']);
    expect(u.sixPercentRule).toBe(true);
    closeAll(u.weights, [19.413755384972873]);
    const p = saliency({ polarity: 'negative', pb: [0.5], pc: [0.81], pj: [0.1], hb: [1, 0], hiddenSize: 2 });
    expect(p.classes).toEqual(['plain']);
    closeAll(p.weights, [9]); // 10 * 0.9 / 1
  });

  it('log-probabilities give the same result as probabilities', () => {
    const p = negative50([10, 20, 30]);
    const r = saliency({
      ...p,
      pb: undefined,
      pc: undefined,
      pj: undefined,
      logpb: p.pb.map(Math.log),
      logpc: p.pc.map(Math.log),
      logpj: p.pj.map(Math.log),
      log1mpb: p.pb.map((x) => Math.log(1 - x)),
    });
    const q = saliency(p);
    expect(r.classes).toEqual(q.classes);
    closeAll(r.weights, [...q.weights]);
    expect(r.loss).toBeCloseTo(5.224289845614137, 12);
  });

  it('sftOnNegatives: the main terms are unchanged, a second all-likelihood set of weight lambda/N comes back', () => {
    const r = saliency(negative50([10, 20, 30]), { sftOnNegatives: true });
    const plain = saliency(negative50([10, 20, 30]));
    expect(r.kinds).toEqual(plain.kinds);
    closeAll(r.weights, [...plain.weights]);
    expect(r.extra!.kinds).toEqual(fill(50, 'likelihood'));
    closeAll(r.extra!.weights, fill(50, 0.2)); // 10 / 50
    // main 5.224289845614137 + 0.2 * (47 * ln 2 + 3 * -ln 0.1) = 7.897134553059914
    expect(r.loss).toBeCloseTo(13.121424398674051, 12);
    // Positives never get the extra set.
    expect(saliency({ polarity: 'positive', pc: [0.5], hb: [1, 0], hiddenSize: 2 }, { sftOnNegatives: true }).extra).toBeUndefined();
  });

  describe('a negative with no unlikely token', () => {
    const input = {
      polarity: 'negative' as const,
      pb: [0.5, 0.5, 0.5],
      pc: [0.25, 0.81, 0.64],
      pj: [0.1, 0.1, 0.1],
      hb: H([1, 0], [0, 1], [1, 0]),
      hiddenSize: 2,
    };

    it("'train' (default, the authors'): likelihood with sqrt(pc), towards the wrong response", () => {
      const r = saliency(input);
      expect(r.skipped).toBe(false);
      expect(r.classes).toEqual(['plain', 'plain', 'plain']);
      expect(r.kinds).toEqual(['likelihood', 'likelihood', 'likelihood']);
      closeAll(r.coefficients, [0.5, 0.9, 0.8]);
      closeAll(r.weights, [5 / 3, 3, 8 / 3]); // 10 * sqrt(pc) / 3
      closeAll(saliency(input, { lambda: 3 }).weights, [0.5, 0.9, 0.8]); // 3 * sqrt(pc) / 3
      expect(saliency(input, { sftOnNegatives: true }).extra).toBeDefined();
    });

    it("'skip': all-zero weights, skipped, no SFT set", () => {
      const r = saliency(input, { negativesWithoutSaliency: 'skip', sftOnNegatives: true });
      expect(r.skipped).toBe(true);
      expect([...r.weights]).toEqual([0, 0, 0]);
      expect([...r.coefficients]).toEqual([0, 0, 0]);
      expect(r.extra).toBeUndefined();
      expect(r.loss).toBe(0);
      // A negative that has an unlikely token is trained under 'skip' too.
      expect(saliency(negative50([10, 20, 30]), { negativesWithoutSaliency: 'skip' }).skipped).toBe(false);
    });
  });
});

describe("saliency: anchored negatives (negatives 'anchor')", () => {
  const ANCHOR = { negatives: 'anchor' as const };

  it('3 unlikely of 50: unlikely tokens keep 2*sigmoid(r1 - 1.5), every other token 0; the anchor weighs lambda*a/N_answer', () => {
    const r = saliency({ ...negative50([10, 20, 30]), anchorTokens: 8 }, ANCHOR);
    const cls = fill<string>(50, 'plain');
    [cls[10], cls[11], cls[20], cls[30]] = ['unlikely', 'cluster', 'unlikely', 'unlikely'];
    expect(r.classes).toEqual(cls); // the classes do not depend on the rule
    expect(r.kinds.flatMap((k, t) => (k === 'unlikelihood' ? [t] : []))).toEqual([10, 20, 30]);
    const coef = fill(50, 0);
    [coef[10], coef[20], coef[30]] = [U35, U35, U35];
    closeAll(r.coefficients, coef);
    const w = fill(50, 0);
    [w[10], w[20], w[30]] = [0.38827510769945744, 0.38827510769945744, 0.38827510769945744]; // 10 * U35 / 50
    closeAll(r.weights, w);
    expect(r.anchor!.kinds).toEqual(fill(8, 'likelihood'));
    closeAll(r.anchor!.weights, fill(8, 1.25)); // 10 * 1 / 8
    // Only the unlikely tokens' terms: 3 * 0.388275 * -ln(1 - 0.1); the anchor's loss is its own pass's.
    expect(r.loss).toBeCloseTo(0.12272659669293863, 12);
    expect(r.sixPercentRule).toBe(false);
    expect(r.skipped).toBe(false);
    expect(r.extra).toBeUndefined();
    closeAll(
      saliency({ ...negative50([10, 20, 30]), anchorTokens: 4 }, { ...ANCHOR, anchorWeight: 0.5, lambda: 2 }).anchor!.weights,
      fill(4, 0.25),
    );
  });

  it('without an unlikely token: no term on the response, still the anchor (train); nothing at all (skip)', () => {
    const input = { polarity: 'negative' as const, pb: [0.5, 0.5], pc: [0.25, 0.81], pj: [0.1, 0.1], hb: H([1, 0], [0, 1]), hiddenSize: 2 };
    const r = saliency({ ...input, anchorTokens: 5 }, ANCHOR);
    expect(r.classes).toEqual(['plain', 'plain']);
    expect(r.kinds).toEqual(['likelihood', 'likelihood']);
    expect([...r.weights]).toEqual([0, 0]);
    expect([...r.coefficients]).toEqual([0, 0]);
    expect(r.loss).toBe(0);
    expect(r.skipped).toBe(false);
    closeAll(r.anchor!.weights, fill(5, 2)); // 10 / 5
    const skip = saliency({ ...input, anchorTokens: 5 }, { ...ANCHOR, negativesWithoutSaliency: 'skip' });
    expect(skip.skipped).toBe(true);
    expect(skip.anchor).toBeUndefined();
    expect(saliency({ ...input, anchorTokens: 5 }, { ...ANCHOR, anchorWeight: 0 }).anchor).toBeUndefined();
  });

  it('the 6% rule changes nothing (the other tokens are 0 anyway) but is still reported', () => {
    const r = saliency({ ...negative50([10, 20, 30, 40]), anchorTokens: 3 }, ANCHOR);
    expect(r.sixPercentRule).toBe(true);
    expect(r.weights.filter((w) => w !== 0).length).toBe(4);
    expect(r.anchor).toBeDefined();
  });

  it('positives are unchanged and get no anchor', () => {
    const pos = { polarity: 'positive' as const, pc: [0.5, 0.99, 0.3], pb: [0.5, 0.5, 0.5], hb: CRITERIA_HB, hiddenSize: 2 };
    const a = saliency({ ...pos, anchorTokens: 4 }, ANCHOR);
    const b = saliency(pos);
    expect(a).toEqual(b);
    expect(a.anchor).toBeUndefined();
  });

  it('refuses a negative without its anchor, sftOnNegatives with it, and bad values', () => {
    expect(() => saliency(negative50([10]), ANCHOR)).toThrow(/negatives anchor: a negative record needs its anchor/);
    expect(() => saliency({ ...negative50([10]), anchorTokens: 2 }, { ...ANCHOR, sftOnNegatives: true })).toThrow(
      'sftOnNegatives: expected false with negatives anchor (the anchor trains the standard answer instead), found true',
    );
    expect(() => saliency(negative50([10]), { negatives: 'towards' as 'anchor' })).toThrow(
      'negatives: expected authors or anchor, found "towards"',
    );
    expect(() => saliency(negative50([10]), { anchorWeight: -1 })).toThrow('anchorWeight: expected a non-negative number, found -1');
  });
});

describe('recordLoss', () => {
  it('sums weights times -log pb (likelihood) or -log(1 - pb) (unlikelihood)', () => {
    // 2 * -ln 0.5 + 3 * -ln 0.75
    expect(
      recordLoss(['likelihood', 'unlikelihood'], [2, 3], [Math.log(0.5), Math.log(0.25)], [Math.log(0.5), Math.log(0.75)]),
    ).toBeCloseTo(2.249340578475233, 12);
  });
});

describe('saliency: input and option checks', () => {
  it('refuses bad options, missing views, mismatched lengths and an empty response', () => {
    const pos = { polarity: 'positive' as const, pc: [0.5], hb: [1, 0], hiddenSize: 2 };
    expect(() => saliency(pos, { tauC: 1 })).toThrow(/tauC/);
    expect(() => saliency(pos, { clusterCriterion: 'cosine' as 'distance' })).toThrow(/clusterCriterion/);
    expect(() => saliency({ ...pos, pc: [], hb: [] })).toThrow(NlftError);
    expect(() => saliency({ ...pos, hb: [1, 0, 0] })).toThrow(/hidden states/);
    expect(() => saliency({ ...pos, pb: [0.5, 0.5] })).toThrow(/base view/);
    expect(() => saliency({ polarity: 'negative', pc: [0.5], pb: [0.5], hb: [1, 0], hiddenSize: 2 })).toThrow(/judge/);
    expect(() => saliency({ polarity: 'negative', pc: [0.5], pj: [0.5], hb: [1, 0], hiddenSize: 2 })).toThrow(/base view/);
  });
});

describe('towardsWarning (the summary line before training)', () => {
  const summary = (over: Partial<SaliencySummary>): SaliencySummary => ({
    records: 50,
    positives: 12,
    negatives: 38,
    negativesWithoutUnlikely: 31,
    sixPercentRule: 0,
    negativesWithoutSaliency: 'train',
    affected: 31,
    negativesRule: 'authors',
    anchored: 0,
    meanCoefficient: { correct: null, cluster: null, unlikely: null, plain: null },
    tokensByClass: { correct: 0, cluster: 0, unlikely: 0, plain: 0 },
    ...over,
  });
  it('warns when most negatives would train towards their own wrong answers, and names the settings that avoid it', () => {
    expect(towardsWarning(summary({}))).toBe(
      "31 of 38 negatives have no unlikely token, so the authors' rule trains them towards their own wrong answers. To avoid it, " +
        'train with anchored negatives (negatives: anchor), or leave those records out (negatives without an unlikely token: skip).',
    );
  });
  it('is silent when half or fewer would, or when anchor or skip already avoids it', () => {
    expect(towardsWarning(summary({ negativesWithoutUnlikely: 19 }))).toBeNull();
    expect(towardsWarning(summary({ negativesRule: 'anchor' }))).toBeNull();
    expect(towardsWarning(summary({ negativesWithoutSaliency: 'skip' }))).toBeNull();
    expect(towardsWarning(summary({ negatives: 0, negativesWithoutUnlikely: 0 }))).toBeNull();
  });
});
