/**
 * Re-classification benchmark (docs/method.md §3.1): `classifyScores` — what the saliency explorer
 * runs on the main thread at every change of a constant — over cached scores of `--records 50`
 * records of `--tokens 200` response tokens with the SmolLM2-135M hidden size (576), seeded random
 * values, every other record negative with an anchor. The median of `--reps 20` runs after a warm-up,
 * per option set (the authors' defaults, a low ρ that finds unlikely tokens, anchored negatives), wall and CPU time;
 * target under 100 ms. CPU only.
 */
import { parseArgs } from 'node:util';
import { classifyScores } from '../src/nlft/method.ts';
import type { SaliencyOptions } from '../src/nlft/saliency.ts';
import { syntheticScoredDataset } from '../test/helpers/synthetic-scores.ts';
import { SMOLLM2_135M } from './forward.ts';

const OPTION_SETS: Record<string, Partial<SaliencyOptions>> = {
  defaults: {},
  'rho 1.05, pj-min 0': { rho: 1.05, pjMin: 0 },
  'negatives anchor': { rho: 1.05, pjMin: 0, negatives: 'anchor' },
};

export async function reclassifyBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      records: { type: 'string', default: '50' },
      tokens: { type: 'string', default: '200' },
      hidden: { type: 'string', default: String(SMOLLM2_135M.hiddenSize) },
      reps: { type: 'string', default: '20' },
    },
  });
  const [records, tokens, hidden, reps] = [values.records, values.tokens, values.hidden, values.reps].map(Number);
  const scored = syntheticScoredDataset(records, tokens, hidden, 11);
  const text = (id: number) => scored.tokenTexts[id];
  const lines: string[] = [];
  for (const [name, opts] of Object.entries(OPTION_SETS)) {
    classifyScores(scored.records, scored.scores, opts, text); // warm-up (JIT)
    const ms: number[] = [];
    const cpu: number[] = [];
    for (let i = 0; i < reps; i++) {
      const [t0, c0] = [performance.now(), process.cpuUsage()];
      classifyScores(scored.records, scored.scores, opts, text);
      const c = process.cpuUsage(c0);
      ms.push(performance.now() - t0);
      cpu.push((c.user + c.system) / 1000);
    }
    const median = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
    const [wall, cpuMs] = [median(ms), median(cpu)];
    const row = {
      bench: 'reclassify',
      options: name,
      records,
      tokens,
      hidden_size: hidden,
      reps,
      median_ms: +wall.toFixed(2),
      min_ms: +ms[0].toFixed(2),
      median_cpu_ms: +cpuMs.toFixed(2),
    };
    console.log(JSON.stringify(row));
    const verdict = wall < 100 ? 'under' : 'OVER';
    lines.push(
      `${name.padEnd(20)} median ${row.median_ms} ms wall (min ${row.min_ms}), ${row.median_cpu_ms} ms CPU: ${verdict} the 100 ms target`,
    );
  }
  console.log(`\nclassifyScores, ${records} records x ${tokens} tokens, hidden ${hidden}, median of ${reps}:\n${lines.join('\n')}`);
  console.log('(wall time counts other processes sharing the cores; CPU time is this process alone, microsecond granularity)');
}
