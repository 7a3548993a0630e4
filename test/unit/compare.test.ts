/**
 * The statistics of `nlft compare` (src/eval/compare.ts) on hand-computed cases — mean, sample sd,
 * quantiles, the paired bootstrap (its point estimate, its interval against the normal
 * approximation, determinism for a seed), the rows and the Markdown table — and compare's own
 * parsing of --arms and --seeds; the system text a training set had (`trainedSystemText`).
 */
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.ts';
import { describeSystem, trainedSystemText } from '../../src/eval/accuracy.ts';
import { compareMarkdown, compareRows, itemScores, mean, pairedBootstrap, quantile, sampleSd } from '../../src/eval/compare.ts';
import { argvOf, parseArms, seedsOption } from '../../src/node/cli/compare.ts';
import { TRAIN_FLAGS } from '../../src/node/cli/train.ts';
import { Rng } from '../../src/util/rng.ts';

describe('statistics', () => {
  it('mean, sample sd (n − 1) and type-7 quantiles by hand', () => {
    expect(mean([1, 2, 3, 4])).toBe(2.5);
    expect(sampleSd([1, 2, 3, 4])).toBeCloseTo(Math.sqrt(5 / 3), 12);
    expect(sampleSd([0.5, 0.5])).toBe(0);
    expect(sampleSd([0.3])).toBeNull();
    expect(quantile([0, 10], 0.25)).toBe(2.5);
    expect(quantile([1, 2, 3, 4, 5], 0.5)).toBe(3);
    expect(quantile([1, 2, 3, 4], 0.975)).toBeCloseTo(3.925, 12);
    expect(quantile([7], 0.025)).toBe(7);
  });

  it('paired bootstrap: degenerate cases are exact', () => {
    const same = pairedBootstrap([1, 0, 1, 1], [1, 0, 1, 1]);
    expect([same.diff, same.lo, same.hi]).toEqual([0, 0, 0]);
    const all = pairedBootstrap([1, 1, 1], [0, 0, 0]);
    expect([all.diff, all.lo, all.hi]).toEqual([1, 1, 1]);
    // Two items with differences 1 and 0: resampled means are 0, 0.5, 1 with probabilities ¼, ½, ¼,
    // so with 10 000 resamples the 2.5 % and 97.5 % quantiles are 0 and 1.
    const two = pairedBootstrap([1, 0], [0, 0]);
    expect([two.diff, two.lo, two.hi]).toEqual([0.5, 0, 1]);
    expect([two.level, two.resamples, two.seed]).toEqual([0.95, 10_000, 0]);
  });

  it('paired bootstrap: the interval holds the estimate, matches the normal approximation, and is fixed by its seed', () => {
    const rng = new Rng(7);
    const n = 300;
    const a = Array.from({ length: n }, () => (rng.next() < 0.45 ? 1 : 0));
    const b = a.map((x) => (rng.next() < 0.2 ? 1 - x : x)); // b disagrees with a on ~20 % of the items
    const r = pairedBootstrap(a, b);
    const d = a.map((x, i) => x - b[i]);
    expect(r.diff).toBeCloseTo(mean(d), 15);
    expect(r.lo).toBeLessThan(r.diff);
    expect(r.hi).toBeGreaterThan(r.diff);
    // Normal approximation of the mean's 95 % interval: ± 1.96 · sd/√n (population sd, as the bootstrap resamples it).
    const se = Math.sqrt(mean(d.map((x) => (x - r.diff) ** 2)) / n);
    expect(r.hi - r.lo).toBeGreaterThan(2 * 1.96 * se * 0.9);
    expect(r.hi - r.lo).toBeLessThan(2 * 1.96 * se * 1.1);
    expect(Math.abs((r.lo + r.hi) / 2 - r.diff)).toBeLessThan(0.2 * se);
    expect(pairedBootstrap(a, b)).toEqual(r);
    // With few resamples the interval moves with the seed (with 10 000 both ends land on the same 1/300 grid step).
    const few = (seed: number) => pairedBootstrap(a, b, { resamples: 50, level: 0.95, seed });
    expect(few(3)).toEqual(few(3));
    expect(few(3).diff).toBe(r.diff);
    expect([few(3).lo, few(3).hi]).not.toEqual([few(4).lo, few(4).hi]);
    const wide = pairedBootstrap(a, b, { resamples: 10_000, level: 0.99, seed: 0 });
    expect(wide.hi - wide.lo).toBeGreaterThan(r.hi - r.lo);
    for (let s = 0; s < 20; s++) {
      const x = Array.from({ length: 12 }, () => rng.int(2));
      const y = Array.from({ length: 12 }, () => rng.int(2));
      const p = pairedBootstrap(x, y, { resamples: 2000, level: 0.95, seed: s });
      expect(p.lo).toBeLessThanOrEqual(p.diff);
      expect(p.hi).toBeGreaterThanOrEqual(p.diff);
    }
  });

  it('paired bootstrap refuses unpaired lists', () => {
    expect(() => pairedBootstrap([1, 0], [1])).toThrow(UsageError);
    expect(() => pairedBootstrap([1, 0], [1])).toThrow('expected two equal, non-empty lists of item scores, found 2 and 1');
    expect(() => pairedBootstrap([], [])).toThrow(UsageError);
  });
});

describe('rows and table', () => {
  const sft = {
    arm: 'sft',
    seeds: [0, 1],
    correct: [
      [true, false, true, false],
      [true, true, false, false],
    ],
    trainSeconds: [10, 12],
  };
  const nlft = {
    arm: 'nlft:lambda=5',
    seeds: [0, 1],
    correct: [
      [true, true, true, false],
      [true, true, true, true],
    ],
    trainSeconds: [20, 22],
  };

  it('per seed, mean ± sd, training time and the difference to the reference by hand', () => {
    expect(itemScores(nlft.correct)).toEqual([1, 1, 1, 0.5]);
    const [s, n] = compareRows([sft, nlft], 'sft');
    expect(s).toMatchObject({ arm: 'sft', accuracy: [0.5, 0.5], mean: 0.5, sd: 0, vsReference: null, trainSeconds: 11 });
    expect(n.accuracy).toEqual([0.75, 1]);
    expect(n.mean).toBe(0.875);
    expect(n.sd).toBeCloseTo(Math.sqrt(0.125 ** 2 * 2), 12);
    expect(n.trainSeconds).toBe(21);
    // Per item (seed-averaged): nlft [1, 1, 1, 0.5] vs sft [1, 0.5, 0.5, 0]: differences 0, 0.5, 0.5, 0.5.
    expect(n.vsReference?.diff).toBe(0.375);
    expect(n.vsReference?.lo).toBeGreaterThanOrEqual(0);
    expect(n.vsReference?.hi).toBeLessThanOrEqual(0.5);
    expect(compareRows([nlft], 'sft')[0].vsReference).toBeNull();
  });

  it('the Markdown table has the header, the base row and a row per arm', () => {
    const rows = compareRows([sft, nlft], 'sft');
    const md = compareMarkdown(rows, { eval: 'test.jsonl', items: 4, base: 0.25, reference: 'sft' });
    const lines = md.split('\n');
    expect(lines[0]).toBe('| arm | accuracy per seed (%) | mean ± sd (%) | vs sft (points, 95 % CI) | train s |');
    expect(lines[2]).toBe('| base model | 25.0 | 25.0 | | |');
    expect(lines[3]).toBe('| sft | 50.0 (seed 0), 50.0 (seed 1) | 50.0 ± 0.0 | (reference) | 11.0 |');
    const v = rows[1].vsReference!;
    const pts = (x: number) => `${x >= 0 ? '+' : '−'}${(100 * Math.abs(x)).toFixed(1)}`;
    expect(lines[4]).toBe(`| nlft:lambda=5 | 75.0 (seed 0), 100.0 (seed 1) | 87.5 ± 17.7 | +37.5 [${pts(v.lo)}, ${pts(v.hi)}] | 21.0 |`);
    expect(md).toContain('test.jsonl: 4 items, greedy, graded by the final number.');
  });
});

describe('compare options', () => {
  it('--arms: methods, key=value flags, switches, commas inside a value', () => {
    expect(
      parseArms('sft,nlft,nlft:negatives-without-saliency=skip:lambda=5,nlft:targets=q_proj,v_proj,nlft:sft-on-negatives', TRAIN_FLAGS),
    ).toEqual([
      { name: 'sft', method: 'sft', flags: {} },
      { name: 'nlft', method: 'nlft', flags: {} },
      {
        name: 'nlft:negatives-without-saliency=skip:lambda=5',
        method: 'nlft',
        flags: { 'negatives-without-saliency': 'skip', lambda: '5' },
      },
      { name: 'nlft:targets=q_proj,v_proj', method: 'nlft', flags: { targets: 'q_proj,v_proj' } },
      { name: 'nlft:sft-on-negatives', method: 'nlft', flags: { 'sft-on-negatives': true } },
    ]);
  });

  it('--arms and --seeds: bad values name the arm and what was expected', () => {
    const bad = (text: string, message: string) => {
      expect(() => parseArms(text, TRAIN_FLAGS)).toThrow(UsageError);
      expect(() => parseArms(text, TRAIN_FLAGS)).toThrow(message);
    };
    bad('dpo', '--arms: expected arms like sft, nlft or nlft:lambda=5, found "dpo"');
    bad('sft,dpo', '--arms: expected arms like sft, nlft or nlft:lambda=5, found "dpo"');
    bad('nlft:lamda=5', '--arms nlft:lamda=5: expected training flags as key=value, found "lamda"');
    bad('nlft:seed=3', '--arms nlft:seed=3: expected training flags as key=value, found "seed" (use --seeds)');
    bad('nlft:lambda', '--arms nlft:lambda: expected lambda=value, found "lambda"');
    bad('nlft:recompute=yes', '--arms nlft:recompute=yes: expected "recompute" alone (a switch), found "recompute=yes"');
    bad('sft,nlft,sft', '--arms: expected every arm once, found "sft" twice');
    expect(seedsOption({})).toEqual([0]);
    expect(seedsOption({ seeds: '0, 1,2' })).toEqual([0, 1, 2]);
    for (const s of ['', '1,1', '-1', '0.5', 'a'])
      expect(() => seedsOption({ seeds: s })).toThrow(`--seeds: expected distinct non-negative integers such as 0,1,2, found "${s}"`);
  });

  it('flags back to argv', () => {
    expect(argvOf({ lr: '1e-3', recompute: true, quant: undefined, lambda: '-1' })).toEqual(['--lr=1e-3', '--recompute', '--lambda=-1']);
  });
});

describe('system text', () => {
  it('the text most records were trained with; instructions win over the fallback when they are the majority', () => {
    expect(trainedSystemText([], 'F')).toBe('F');
    expect(trainedSystemText([{ instruction: null }, { instruction: 'A' }], 'F')).toBe('F');
    expect(trainedSystemText([{ instruction: 'A' }, { instruction: null }, { instruction: 'A' }], 'F')).toBe('A');
    expect(describeSystem("Solve the math problem step by step. End with '#### <answer>'.")).toBe(
      'system "Solve the math problem step by step. End with \'…"',
    );
    expect(describeSystem('  Be\nbrief. ')).toBe('system "Be brief."');
  });
});
