/**
 * The tuner's race (src/engine/tune.ts `raceMs`), on a simulated clock: candidates timed in
 * interleaved rounds rank by their own cost while the machine's speed drifts, where timing one
 * candidate's runs after another's ranked them by when they ran; a candidate far slower than the
 * quickest stops after the first round; each candidate reports done once.
 */
import { expect, it } from 'vitest';
import { type RaceClock, raceMs } from '../../src/engine/tune.ts';

/** A machine that gets `drift` times slower with every run; each run of candidate i costs costs[i] at today's speed. */
function driftingMachine(costs: number[], drift: number) {
  let clock = 0;
  let speed = 1;
  const calls: number[] = [];
  const clockApi: RaceClock = { settle: async () => undefined, now: () => clock };
  const runs = costs.map((cost, i) => async () => {
    calls.push(i);
    clock += cost * speed;
    speed *= drift;
  });
  return { clock: clockApi, runs, calls };
}

it('ranks candidates by their cost on a machine that slows down while they are timed', async () => {
  // The slower candidate first: timed back to back, its runs would all land in the fast period.
  const m = driftingMachine([11, 10], 1.2);
  const ms = await raceMs(m.clock, m.runs);
  expect(ms[1]).toBeLessThan(ms[0]);
  // A warm-up each, then three rounds in rotated order.
  expect(m.calls).toEqual([0, 1, 0, 1, 1, 0, 0, 1]);
  // Back to back (what the tuner did before): the same machine ranks them the wrong way.
  const seq = driftingMachine([11, 10], 1.2);
  const backToBack: number[] = [];
  for (const run of seq.runs) {
    await run();
    const times: number[] = [];
    for (let r = 0; r < 3; r++) {
      const t0 = seq.clock.now();
      await run();
      times.push(seq.clock.now() - t0);
    }
    backToBack.push(times.sort((a, b) => a - b)[1]);
  }
  expect(backToBack[0]).toBeLessThan(backToBack[1]);
});

it('on a steady machine returns each candidate’s time; one over the give-up factor runs only its warm-up and the first round', async () => {
  const m = driftingMachine([4, 2, 7, 3], 1);
  let done = 0;
  const ms = await raceMs(m.clock, m.runs, { reps: 3, giveUpFactor: 3, onDone: () => done++ });
  expect(ms).toEqual([4, 2, 7, 3]);
  expect(m.calls.filter((i) => i === 2)).toHaveLength(2);
  expect(m.calls.filter((i) => i === 1)).toHaveLength(4);
  expect(done).toBe(4);
  // One round: every candidate once after its warm-up, each done once.
  const one = driftingMachine([5, 1], 1);
  let doneOne = 0;
  expect(await raceMs(one.clock, one.runs, { reps: 1, giveUpFactor: 3, onDone: () => doneOne++ })).toEqual([5, 1]);
  expect(doneOne).toBe(2);
});
