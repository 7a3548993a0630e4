/**
 * Learning-rate schedules: functions from the 1-based optimizer step to the learning rate.
 */

/** How long the linear warm-up lasts: a step count, or a fraction of `totalSteps` (not both). */
export type WarmupLength = { warmupSteps: number; warmupFraction?: never } | { warmupSteps?: never; warmupFraction?: number };

/** Options of `cosineWithWarmup`. */
export type CosineScheduleOptions = {
  /** Peak learning rate, reached at the last warm-up step. */
  baseLr: number;
  /** Number of optimizer steps of the run (the last step is `totalSteps`). */
  totalSteps: number;
  /** Learning rate of the last step (default 0). */
  minLr?: number;
} & WarmupLength;

/**
 * Linear warm-up then cosine decay. With W = warmupSteps (or ceil(warmupFraction * totalSteps),
 * warmupFraction defaulting to 0.1, rounded up like HF TrainingArguments' warmup_ratio but
 * without its float noise: 0.1 of 30 steps is 3, where HF's math.ceil(30 * 0.1) gives 4) and
 * T = totalSteps, the learning rate of step s (1 <= s <= T) is
 *
 *   s <= W:  baseLr * (s / W)
 *   s >  W:  minLr + (baseLr - minLr) * 0.5 * (1 + cos(pi * (s - W) / (T - W)))
 *
 * so it rises from baseLr/W at step 1 to baseLr at step W, then falls to exactly minLr at step T.
 * This is baseLr times Hugging Face's `get_cosine_schedule_with_warmup` lambda (num_cycles 0.5;
 * with minLr > 0, the lambda of `get_cosine_with_min_lr_schedule_with_warmup` with
 * min_lr = minLr) evaluated at current_step = s. The HF Trainer applies lambda(s - 1) to its
 * s-th optimizer step instead (it calls scheduler.step() after optimizer.step()), which spends
 * step 1 at lr 0 when W > 0; here the schedule is one step ahead of that: step s gets the rate
 * HF's scheduler holds after s scheduler steps. Consequently the last step runs at minLr (no
 * update when minLr = 0), and with W = 0 every step is in the decay, step T = 1 included.
 */
export function cosineWithWarmup(o: CosineScheduleOptions): (step: number) => number {
  const { baseLr, totalSteps, minLr = 0 } = o;
  if (!(baseLr > 0 && Number.isFinite(baseLr)))
    throw new RangeError(`cosineWithWarmup: baseLr must be a finite number > 0 (got ${baseLr})`);
  if (!Number.isInteger(totalSteps) || totalSteps < 1)
    throw new RangeError(`cosineWithWarmup: totalSteps must be an integer >= 1 (got ${totalSteps})`);
  if (!(minLr >= 0 && minLr <= baseLr)) throw new RangeError(`cosineWithWarmup: minLr must be in [0, baseLr = ${baseLr}] (got ${minLr})`);
  if (o.warmupSteps !== undefined && o.warmupFraction !== undefined) {
    throw new RangeError('cosineWithWarmup: give warmupSteps or warmupFraction, not both');
  }
  let warmup: number;
  if (o.warmupSteps !== undefined) {
    warmup = o.warmupSteps;
    if (!Number.isInteger(warmup) || warmup < 0 || warmup > totalSteps) {
      throw new RangeError(`cosineWithWarmup: warmupSteps must be an integer in [0, totalSteps = ${totalSteps}] (got ${warmup})`);
    }
  } else {
    const f = o.warmupFraction ?? 0.1;
    if (!(f >= 0 && f <= 1)) throw new RangeError(`cosineWithWarmup: warmupFraction must be in [0, 1] (got ${f})`);
    // 1e-9 absorbs the rounding of f * totalSteps (0.1 * 30 = 3.0000000000000004 would give 4).
    warmup = Math.ceil(f * totalSteps - 1e-9);
  }
  return (step) => {
    if (!Number.isInteger(step) || step < 1 || step > totalSteps) {
      throw new RangeError(`cosineWithWarmup: step must be an integer in [1, totalSteps = ${totalSteps}] (got ${step})`);
    }
    if (step <= warmup) return baseLr * (step / warmup);
    const progress = (step - warmup) / (totalSteps - warmup);
    return minLr + (baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}
