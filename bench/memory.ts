/**
 * Memory benchmark (`npm run bench -- memory`): does a model fit a browser's GPU memory budget for
 * an NLFT step? By default the Llama-3.2-1B shape (bench/forward.ts `BENCH_SHAPES`, seeded random
 * weights), q4 base, LoRA r16 on all seven projections, one negative record whose three views are
 * `--tokens` (512) tokens each, `--rows` of them scored (default all), a budget of `--budget` MiB
 * (default 1536 = 1.5 × 2^30 bytes).
 *
 * 1. Plans the full model as `nlft train --memory-budget` does (`planMemory`, src/session/train.ts):
 *    over the budget with every layer's activations kept, it recomputes layers.
 * 2. Runs one real NLFT step on `--layers` (2) of its layers with that decision: the trainer with
 *    NLFT's method, as `runTraining` builds them (the step's standard and judge views scored
 *    no-grad in packed passes sized by `scorePassTokens`, the base view's forward, saliency, the
 *    weighted backward, AdamW), under the budget.
 * 3. Prints the measured peak GPU bytes (the buffer manager's) per part — model, LoRA and AdamW,
 *    activations — beside `estimateTrainBytes` for the same layers, T and R; then the estimate for
 *    the whole model at `--tokens` with every row scored (the bound for any record of that length)
 *    and whether it is under the budget.
 *
 * The kernels keep their default tiles (the estimate's lm-head scratch is sized for them); on
 * SwiftShader the vocabulary-128256 lm-head makes the step slow, so `--rows` may score fewer rows.
 */
import { parseArgs } from 'node:util';
import { formatBytes } from '../src/engine/buffers.ts';
import { describeAdapter } from '../src/engine/gpu.ts';
import { GpuLlama } from '../src/engine/llama.ts';
import { estimateScoreBytes, estimateTrainBytes, type TrainMemoryEstimate } from '../src/engine/memory.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { makeTinyLlama, tinyLlamaConfig } from '../src/model/demo.ts';
import { initLora, type LoraConfig } from '../src/model/lora.ts';
import type { QuantFormat } from '../src/model/quant.ts';
import { PROJECTIONS } from '../src/model/weights.ts';
import { type NlftSample, nlftMethod } from '../src/nlft/method.ts';
import { createNodeEngine } from '../src/node/engine.ts';
import { planMemory, scorePassTokens } from '../src/session/train.ts';
import { DEFAULT_TRAIN, type StepMetrics, Trainer } from '../src/train/trainer.ts';
import { Rng } from '../src/util/rng.ts';
import { benchShape, rowHeader, shapeLabel } from './forward.ts';

/**
 * A negative NLFT record whose base, standard and judge views are each T tokens fed (prompt of
 * T + 1 − R tokens, response of R), random ids from `seed`.
 */
function memorySample(c: LlamaConfig, T: number, R: number, seed: number): NlftSample {
  const rng = new Rng(seed);
  const ids = (n: number) => Array.from({ length: n }, () => rng.int(c.vocabSize));
  const P = T + 1 - R;
  return {
    id: 'memory',
    index: 1,
    polarity: 'negative',
    promptIds: ids(P),
    standardIds: ids(P),
    judgeIds: ids(P),
    responseIds: ids(R),
    truncatedBy: 0,
    anchor: null,
  };
}

const PARTS = ['model', 'lora', 'activations', 'total'] as const;
const PART_NAMES: Record<(typeof PARTS)[number], string> = {
  model: 'model (base weights)',
  lora: 'LoRA + AdamW (×5)',
  activations: 'activations + scratch',
  total: 'total',
};

export async function memoryBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      shape: { type: 'string', default: 'llama-1b' },
      quant: { type: 'string', default: 'q4' },
      layers: { type: 'string' },
      tokens: { type: 'string' },
      rows: { type: 'string' },
      rank: { type: 'string', default: '16' },
      budget: { type: 'string', default: '1536' },
    },
  });
  const benchModel = benchShape(values.shape!);
  const quant = values.quant as QuantFormat;
  const T = Number(values.tokens ?? benchModel.tokens);
  const R = Number(values.rows ?? T);
  const numLayers = Number(values.layers ?? benchModel.layers);
  const budgetMiB = Number(values.budget);
  if (!(Number.isInteger(T) && T >= 2)) throw new Error(`--tokens must be an integer >= 2 (got ${values.tokens})`);
  if (!(Number.isInteger(R) && R >= 1 && R <= T))
    throw new Error(`--rows must be an integer from 1 to --tokens (${T}) (got ${values.rows})`);
  if (!(Number.isInteger(numLayers) && numLayers >= 1)) throw new Error(`--layers must be a positive integer (got ${values.layers})`);
  if (!(budgetMiB > 0)) throw new Error(`--budget must be a positive number of MiB (got ${values.budget})`);
  const r = Number(values.rank);
  const lora: LoraConfig = { r, alpha: r, dropout: 0, targets: [...PROJECTIONS] };
  const budgetBytes = budgetMiB * 2 ** 20;

  // 1. The whole model, planned as the trainer plans it: a record of T tokens, every row scored.
  const full = tinyLlamaConfig(benchModel.model);
  const fullPlan = planMemory(full, quant, lora, [memorySample(full, T, T, 1)], false, budgetMiB);
  const fullKept = estimateTrainBytes(full, quant, lora, T, T, false);
  const fullRecomputed = estimateTrainBytes(full, quant, lora, T, T, true);

  // 2. One NLFT step on `numLayers` of its layers, recomputing as the whole model's plan decided.
  const shape = { ...benchModel.model, numLayers };
  const c = tinyLlamaConfig(shape);
  const sample = memorySample(c, T, R, 2);
  const plan = planMemory(c, quant, lora, [sample], fullPlan.recompute, null);
  const engine = await createNodeEngine();
  const start = engine.buffers.current;
  const t0 = performance.now();
  const llama = GpuLlama.create(engine.ops, makeTinyLlama(shape), quant); // the f32 host weights are dropped here
  const buildS = (performance.now() - t0) / 1000;
  const modelBytes = engine.buffers.current - start;
  llama.setLora(initLora(c, lora, DEFAULT_TRAIN.seed));
  const viewTokens = scorePassTokens(c, lora, null, plan.estimate.activations, engine.ctx.device.limits.maxStorageBufferBindingSize);
  const method = nlftMethod(llama, { tokenText: String, maxBatchTokens: viewTokens });
  const train = { ...DEFAULT_TRAIN, epochs: 1, batch: 1, recompute: plan.recompute };
  const trainer = new Trainer(engine, llama, [sample], train, method, lora.dropout, plan.passTokens);
  const loraBytes = engine.buffers.current - start - modelBytes;
  engine.buffers.budget = budgetBytes;
  let metrics: StepMetrics | null = null;
  await trainer.run({ onStep: (m) => void (metrics = m) });
  const step = metrics as StepMetrics | null;
  if (!step) throw new Error('the NLFT step did not run');
  const peak = step.peakBytes - start;
  const measured: TrainMemoryEstimate = { model: modelBytes, lora: loraBytes, activations: peak - modelBytes - loraBytes, total: peak };
  const est = plan.estimate;
  const packedViews = viewTokens >= 2 * T ? 2 : 1; // the standard and judge views in one pass, or one each
  const views = estimateScoreBytes(c, lora, packedViews * T, packedViews * R);
  const modelName = shapeLabel(benchModel, numLayers);
  const row = {
    ...rowHeader('memory', engine, modelName, quant),
    tokens: T,
    rows: R,
    lora: `r${r} on ${lora.targets.length} projections`,
    recompute: plan.recompute,
    step_s: +(step.ms / 1000).toFixed(1),
    build_s: +buildS.toFixed(1),
    grad_norm: step.gradNorm,
    view_pass_tokens: viewTokens,
    views_estimate_bytes: views,
    measured,
    estimate: est,
    estimate_over_measured: +(est.total / measured.total).toFixed(4),
    largest_buffer: engine.buffers.largest,
    full: {
      layers: full.numLayers,
      tokens: T,
      rows: T,
      budget_bytes: budgetBytes,
      recompute: fullPlan.recompute,
      estimate: fullPlan.estimate,
      kept: fullKept,
      recomputed: fullRecomputed,
      under_budget: fullPlan.estimate.total <= budgetBytes,
      under_1_5e9: fullPlan.estimate.total <= 1.5e9,
    },
  };
  console.log(JSON.stringify(row));
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  console.log(
    `\n${modelName}, ${quant}, LoRA r${r} on all seven projections, one NLFT step (negative record, 3 views of ${T} tokens, ` +
      `${R} rows scored), ${plan.recompute ? 'layers recomputed' : 'activations kept'}: ${row.step_s} s on ${describeAdapter(engine.ctx.adapter)}`,
  );
  console.log(`\n| part | measured peak | estimate | estimate / measured |\n|---|---|---|---|`);
  for (const p of PARTS) console.log(`| ${PART_NAMES[p]} | ${mib(measured[p])} | ${mib(est[p])} | ${(est[p] / measured[p]).toFixed(3)} |`);
  console.log(`\nthe whole model (${full.numLayers} layers), ${T} tokens, every row scored, planned under ${budgetMiB} MiB:`);
  console.log(`\n| part | activations kept | layers recomputed |\n|---|---|---|`);
  for (const p of PARTS) console.log(`| ${PART_NAMES[p]} | ${mib(fullKept[p])} | ${mib(fullRecomputed[p])} |`);
  const verdict = row.full.under_budget ? 'under' : 'OVER';
  console.log(
    `\nplan: ${fullPlan.recompute ? 'recompute layers' : 'keep activations'}, ${formatBytes(fullPlan.estimate.total)} ` +
      `(${fullPlan.estimate.total} bytes): ${verdict} the budget of ${budgetMiB} MiB (${budgetBytes} bytes); ` +
      `${row.full.under_1_5e9 ? 'under' : 'over'} 1.5e9 bytes`,
  );
  trainer.destroy();
  llama.destroy();
  engine.destroy();
}
