/**
 * `--profile` of the training benchmarks: `reps` more steps with the engine's device profiled
 * (src/engine/profile.ts), each step one profile step, averaged. Run after the timed steps, so
 * the profiler's own cost (a timestamp per pass boundary, the wrapped calls) is not in them.
 */
import type { Engine } from '../src/engine/engine.ts';
import { GpuProfiler, type ProfileReport } from '../src/engine/profile.ts';

export async function profileSteps(engine: Engine, step: () => Promise<void>, reps: number): Promise<ProfileReport> {
  const profiler = GpuProfiler.attach(engine.ctx.device);
  try {
    for (let i = 0; i < reps; i++) {
      await step();
      profiler.step();
    }
    return await profiler.report();
  } finally {
    profiler.detach();
  }
}
