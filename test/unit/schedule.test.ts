import { describe, expect, it } from 'vitest';
import { cosineWithWarmup, type CosineScheduleOptions } from '../../src/train/schedule.ts';

/** Hugging Face's get_cosine_schedule_with_warmup lr_lambda (num_cycles 0.5), transcribed. */
function hfLambda(currentStep: number, numWarmupSteps: number, numTrainingSteps: number): number {
  if (currentStep < numWarmupSteps) return currentStep / Math.max(1, numWarmupSteps);
  const progress = (currentStep - numWarmupSteps) / Math.max(1, numTrainingSteps - numWarmupSteps);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
}

describe('cosineWithWarmup', () => {
  it('baseLr 1e-3, 100 steps, 10 warm-up: values at written-out steps', () => {
    const lr = cosineWithWarmup({ baseLr: 1e-3, totalSteps: 100, warmupSteps: 10 });
    expect(lr(1)).toBeCloseTo(1e-4, 15);
    expect(lr(5)).toBeCloseTo(5e-4, 15);
    expect(lr(10)).toBe(1e-3);
    // Decay: progress (s - 10) / 90.
    expect(lr(11)).toBeCloseTo(1e-3 * 0.5 * (1 + Math.cos(Math.PI / 90)), 15); // 0.99969541e-3
    expect(lr(11)).toBeCloseTo(9.9969541e-4, 11);
    expect(lr(25)).toBeCloseTo(9.330127e-4, 10); // progress 1/6: 0.5 * (1 + sqrt(3)/2)
    expect(lr(55)).toBeCloseTo(5e-4, 15); // progress 1/2
    expect(lr(85)).toBeCloseTo(6.69873e-5, 10); // progress 5/6: 0.5 * (1 - sqrt(3)/2)
    expect(lr(100)).toBe(0);
  });

  it('minLr: decays to exactly minLr at the last step', () => {
    const lr = cosineWithWarmup({ baseLr: 1e-3, totalSteps: 100, warmupSteps: 10, minLr: 1e-4 });
    expect(lr(1)).toBeCloseTo(1e-4, 15); // warm-up ignores minLr (as HF's min-lr schedule does)
    expect(lr(10)).toBe(1e-3);
    expect(lr(55)).toBeCloseTo(5.5e-4, 15); // 1e-4 + 0.9e-3 * 0.5
    expect(lr(100)).toBe(1e-4);
  });

  it('equals baseLr * HF lr_lambda(current_step = s) at every step', () => {
    for (const [T, W] of [
      [100, 10],
      [37, 0],
      [20, 20],
      [1, 1],
      [7, 3],
    ] as const) {
      const lr = cosineWithWarmup({ baseLr: 2e-4, totalSteps: T, warmupSteps: W });
      for (let s = 1; s <= T; s++) expect(lr(s)).toBeCloseTo(2e-4 * hfLambda(s, W, T), 18);
    }
  });

  it('rises during warm-up and never rises after it', () => {
    const lr = cosineWithWarmup({ baseLr: 3e-4, totalSteps: 200, warmupFraction: 0.2 });
    for (let s = 2; s <= 40; s++) expect(lr(s)).toBeGreaterThan(lr(s - 1));
    for (let s = 41; s <= 200; s++) expect(lr(s)).toBeLessThanOrEqual(lr(s - 1));
    expect(lr(40)).toBe(3e-4);
  });

  it('warmupFraction: default 0.1, rounded up, free of float noise', () => {
    const lr30 = cosineWithWarmup({ baseLr: 3e-3, totalSteps: 30 }); // 0.1 * 30 = 3.0000000000000004 -> 3 steps
    expect(lr30(1)).toBeCloseTo(1e-3, 15);
    expect(lr30(3)).toBe(3e-3);
    expect(lr30(4)).toBeLessThan(3e-3);
    const lr10 = cosineWithWarmup({ baseLr: 3e-3, totalSteps: 10, warmupFraction: 0.25 }); // ceil(2.5) = 3
    expect(lr10(2)).toBeCloseTo(2e-3, 15);
    expect(lr10(3)).toBe(3e-3);
    const lr5 = cosineWithWarmup({ baseLr: 1, totalSteps: 5, warmupFraction: 0 });
    expect(lr5(1)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI / 5)), 15);
  });

  it('edge cases: no warm-up, one step, all warm-up', () => {
    const noWarmup = cosineWithWarmup({ baseLr: 1e-3, totalSteps: 10, warmupSteps: 0 });
    expect(noWarmup(1)).toBeCloseTo(1e-3 * 0.5 * (1 + Math.cos(Math.PI / 10)), 15); // 0.97552826e-3
    expect(noWarmup(10)).toBe(0);
    // totalSteps 1: the default fraction gives ceil(0.1) = 1 warm-up step, i.e. baseLr ...
    expect(cosineWithWarmup({ baseLr: 1e-3, totalSteps: 1 })(1)).toBe(1e-3);
    // ... while with no warm-up the only step is the last one, at minLr.
    expect(cosineWithWarmup({ baseLr: 1e-3, totalSteps: 1, warmupSteps: 0 })(1)).toBe(0);
    expect(cosineWithWarmup({ baseLr: 1e-3, totalSteps: 1, warmupSteps: 0, minLr: 1e-5 })(1)).toBe(1e-5);
    const allWarmup = cosineWithWarmup({ baseLr: 1e-3, totalSteps: 4, warmupSteps: 4 });
    expect([1, 2, 3, 4].map(allWarmup)).toEqual([2.5e-4, 5e-4, 7.5e-4, 1e-3]);
  });

  it('bad arguments: exact messages', () => {
    const bad = (o: Record<string, unknown>) => () => cosineWithWarmup({ baseLr: 1e-3, totalSteps: 10, ...o } as CosineScheduleOptions);
    expect(bad({ baseLr: 0 })).toThrow('cosineWithWarmup: baseLr must be a finite number > 0 (got 0)');
    expect(bad({ baseLr: Infinity })).toThrow('cosineWithWarmup: baseLr must be a finite number > 0 (got Infinity)');
    expect(bad({ totalSteps: 0 })).toThrow('cosineWithWarmup: totalSteps must be an integer >= 1 (got 0)');
    expect(bad({ totalSteps: 2.5 })).toThrow('cosineWithWarmup: totalSteps must be an integer >= 1 (got 2.5)');
    expect(bad({ minLr: 2e-3 })).toThrow('cosineWithWarmup: minLr must be in [0, baseLr = 0.001] (got 0.002)');
    expect(bad({ minLr: -1 })).toThrow('cosineWithWarmup: minLr must be in [0, baseLr = 0.001] (got -1)');
    expect(bad({ warmupSteps: 2, warmupFraction: 0.1 })).toThrow('cosineWithWarmup: give warmupSteps or warmupFraction, not both');
    expect(bad({ warmupSteps: 11 })).toThrow('cosineWithWarmup: warmupSteps must be an integer in [0, totalSteps = 10] (got 11)');
    expect(bad({ warmupSteps: -1 })).toThrow('cosineWithWarmup: warmupSteps must be an integer in [0, totalSteps = 10] (got -1)');
    expect(bad({ warmupFraction: 1.5 })).toThrow('cosineWithWarmup: warmupFraction must be in [0, 1] (got 1.5)');
    expect(bad({ warmupFraction: NaN })).toThrow('cosineWithWarmup: warmupFraction must be in [0, 1] (got NaN)');
    const lr = cosineWithWarmup({ baseLr: 1e-3, totalSteps: 10 });
    for (const s of [0, 11, 1.5])
      expect(() => lr(s)).toThrow(`cosineWithWarmup: step must be an integer in [1, totalSteps = 10] (got ${s})`);
  });
});
