/** The loss chart's series: the debiased moving average and the per-epoch means. */
import { describe, expect, it } from 'vitest';
import { epochMeans, smoothLosses } from '../../src/app/views/loss-chart.ts';
import type { StepMetrics } from '../../src/train/trainer.ts';

const step = (s: number, epoch: number, loss: number) => ({ step: s, epoch, loss }) as StepMetrics;

describe('loss chart series', () => {
  it('smooths with a debiased EMA: the first point is the first loss, a constant stays constant', () => {
    expect(smoothLosses([4, 4, 4], 0.2)).toEqual([4, 4, 4].map((v) => expect.closeTo(v, 12)));
    const s = smoothLosses([2, 0], 0.5);
    expect(s[0]).toBe(2);
    // (0.5·0.5·2 + 0.5·0) / (1 − 0.25) = 0.5 / 0.75
    expect(s[1]).toBeCloseTo(0.5 / 0.75, 12);
    expect(smoothLosses([], 0.2)).toEqual([]);
  });

  it('averages each epoch over its steps so far', () => {
    const m = [step(1, 1, 3), step(2, 1, 1), step(3, 2, 2), step(4, 2, 0), step(5, 3, 5)];
    expect(epochMeans(m)).toEqual([
      { epoch: 1, first: 1, last: 2, mean: 2 },
      { epoch: 2, first: 3, last: 4, mean: 1 },
      { epoch: 3, first: 5, last: 5, mean: 5 },
    ]);
  });
});
