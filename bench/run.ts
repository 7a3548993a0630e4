/**
 * Benchmarks (`npm run bench -- <name> [options]`). Each measurement prints one JSON line,
 * then a short table. Runs on whatever WebGPU adapter is present.
 *   forward   SmolLM2-135M-shaped model, seeded random weights, one forward pass + fused lm-head
 *   nlft      one NLFT step on a negative record, split by phase, against an SFT step on the same record
 *   train     the same shape with LoRA: one SFT step (forward + backward + AdamW), against tfjs-webgpu autodiff
 *   generate  the same shape: prefill into the KV cache, then decode steps (ms per token)
 *   memory    Llama-3.2-1B shape, q4, LoRA r16 on all seven projections: one NLFT step on 2 of its layers, measured
 *             peak GPU bytes per part against the estimate; the estimate for all 16 layers against a 1.5 GiB budget
 *   reclassify  classifyScores on cached scores (50 records x 200 tokens, hidden 576), the explorer's CPU step
 * `train` and `nlft` take `--shape toy` (the toy-math model, 4 records × 180 tokens a step) and
 * `--profile` (GPU time per kernel and phase, dispatches, submits, uploads, readbacks per step).
 */
import { forwardBench } from './forward.ts';
import { generateBench } from './generate.ts';
import { memoryBench } from './memory.ts';
import { nlftBench } from './nlft.ts';
import { reclassifyBench } from './reclassify.ts';
import { trainBench } from './train.ts';

const BENCHES: Record<string, (argv: string[]) => Promise<void>> = {
  forward: forwardBench,
  train: trainBench,
  nlft: nlftBench,
  generate: generateBench,
  memory: memoryBench,
  reclassify: reclassifyBench,
};

const [name, ...rest] = process.argv.slice(2);
const bench = name ? BENCHES[name] : undefined;
if (!bench) {
  console.error(`usage: npm run bench -- <${Object.keys(BENCHES).join('|')}> [options]`);
  process.exitCode = 2;
} else {
  await bench(rest);
}
