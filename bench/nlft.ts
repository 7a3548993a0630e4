/**
 * NLFT-step benchmark: one NLFT micro-batch on a negative record (three views; `--polarity positive`:
 * a positive, two views) for the SmolLM2-135M shape, split into its phases — no-grad standard and judge views, base forward
 * keeping activations, the saliency weights (hidden-state readback + CPU rules), backward, AdamW —
 * against an SFT step on the same record (base forward + backward + AdamW), with peak GPU bytes
 * of each, and the ratio's floor: the step's products counted in FLOPs (`stepFloor`), what the ratio
 * would be if every product ran at the same rate. Targets: NLFT under 2x an SFT step's time and 1.2x
 * its peak memory. Then an NLFT step with
 * static saliency (fixed coefficients, no side views, no hidden-state readback) against the SFT step,
 * medians of --reps alternate runs (target: at most 1.2x). Then the no-grad
 * views of several records (--records) scored one pass per view against packed passes.
 * The records are synthetic (random ids: prompt P, standard and judge prompts ~1.3 P, response N).
 */
import { parseArgs } from 'node:util';
import { formatBytes } from '../src/engine/buffers.ts';
import { formatProfile } from '../src/engine/profile.ts';
import { GpuLlama } from '../src/engine/llama.ts';
import { lossCoefficients, TrainPass } from '../src/engine/train-pass.ts';
import { tuneKernels, tuningShapeOf } from '../src/engine/tune.ts';
import { makeTinyLlama } from '../src/model/demo.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import type { LoraConfig } from '../src/model/lora.ts';
import type { QuantFormat } from '../src/model/quant.ts';
import type { Projection } from '../src/model/weights.ts';
import { scoreBatchTokens } from '../src/engine/memory.ts';
import {
  classifyScores,
  DEFAULT_SCORE_BATCH_TOKENS,
  type NlftSample,
  recordSaliency,
  scoreRecords,
  scoreSideViews,
  staticNlftMethod,
} from '../src/nlft/method.ts';
import { viewSequence } from '../src/nlft/views.ts';
import { createNodeEngine } from '../src/node/engine.ts';
import { AdamW } from '../src/train/optimizer.ts';
import { Rng } from '../src/util/rng.ts';
import { benchShape, forwardFlops, rowHeader, shapeLabel } from './forward.ts';
import { profileSteps } from './profile.ts';
import { benchLora, trainFlops } from './train.ts';

export async function nlftBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      shape: { type: 'string', default: 'smollm2' },
      quant: { type: 'string', default: 'q8' },
      prompt: { type: 'string' },
      response: { type: 'string' },
      layers: { type: 'string' },
      records: { type: 'string', default: '8' },
      polarity: { type: 'string', default: 'negative' },
      reps: { type: 'string', default: '3' },
      profile: { type: 'boolean', default: false },
    },
  });
  const benchModel = benchShape(values.shape!);
  const quant = values.quant as QuantFormat;
  // A record of the shape's length: 96 + 128 tokens for SmolLM2, 77 + 103 for toy-math.
  const P = Number(values.prompt ?? Math.round((benchModel.tokens * 96) / 224));
  const N = Number(values.response ?? benchModel.tokens - P);
  const shape = { ...benchModel.model, numLayers: Number(values.layers ?? benchModel.layers) };
  const modelName = shapeLabel(benchModel, shape.numLayers);
  const probe = await createNodeEngine();
  const tuned = await tuneKernels(probe, tuningShapeOf(shape, P + N), quant);
  probe.destroy();
  const engine = await createNodeEngine({ tuning: tuned.tuning });
  const weights = makeTinyLlama(shape);
  const loraConfig = { r: 16, alpha: 16, dropout: 0, targets: ['gate_proj', 'up_proj', 'down_proj'] as Projection[] };
  const lora = benchLora(weights.config, loraConfig);
  const model = GpuLlama.create(engine.ops, weights, quant, lora);
  const rng = new Rng(3);
  const ids = (n: number) => Array.from({ length: n }, () => rng.int(shape.vocabSize));
  if (values.polarity !== 'negative' && values.polarity !== 'positive') {
    throw new Error(`--polarity: expected negative or positive, got ${values.polarity}`);
  }
  const negative = values.polarity === 'negative';
  const s: NlftSample = {
    id: 'bench',
    index: 1,
    polarity: negative ? 'negative' : 'positive',
    promptIds: ids(P),
    standardIds: ids(Math.round(1.3 * P)),
    judgeIds: negative ? ids(Math.round(1.2 * P)) : null,
    responseIds: ids(N),
    truncatedBy: 0,
  };
  const seq = viewSequence(s.promptIds, s.responseIds);
  const opt = new AdamW(engine, model.lora!.params, model.lora!.enableGradients(), model.lora!.n);
  const now = () => performance.now();
  const sync = () => engine.ctx.device.queue.onSubmittedWorkDone();
  const optimizerStep = async (step: number) => {
    const enc = engine.ctx.device.createCommandEncoder();
    await opt.step(enc, { lr: 1e-5, step, gradScale: 1 });
    engine.ctx.device.queue.submit([enc.finish()]);
    await sync();
  };
  const nlftStep = async (step: number) => {
    const t: Record<string, number> = {};
    let t0 = now();
    const [side] = await scoreSideViews(model, [s]);
    t.views = now() - t0;
    t0 = now();
    const pass = await TrainPass.forward(model, seq.ids, seq.rows, seq.targets, { rate: 0, seed: step });
    t.baseForward = now() - t0;
    t0 = now();
    const r = recordSaliency(
      s,
      { logp: pass.scores.logp, log1mq: pass.scores.log1mq, hidden: await pass.hiddenRows() },
      side,
      weights.config.hiddenSize,
      {},
    );
    t.weights = now() - t0;
    t0 = now();
    await pass.backward(lossCoefficients(r.kinds, r.weights, pass.scores));
    t.backward = now() - t0;
    t0 = now();
    await optimizerStep(step);
    t.optimizer = now() - t0;
    return t;
  };
  const sftStep = async (step: number) => {
    const t0 = now();
    const pass = await TrainPass.forward(model, seq.ids, seq.rows, seq.targets, { rate: 0, seed: step });
    const w = new Float32Array(N).fill(1 / N);
    await pass.backward(
      lossCoefficients(
        seq.rows.map(() => 'likelihood'),
        w,
        pass.scores,
      ),
    );
    await optimizerStep(step);
    return now() - t0;
  };
  await nlftStep(1); // warm-up (compiles)
  await sftStep(2);
  engine.buffers.resetPeak();
  const n = await nlftStep(3);
  const nlftPeak = engine.buffers.peak;
  engine.buffers.resetPeak();
  const sft = await sftStep(4);
  const sftPeak = engine.buffers.peak;
  const nlftMs = Object.values(n).reduce((a, b) => a + b, 0);
  const row = {
    ...rowHeader('nlft', engine, modelName, quant),
    prompt: P,
    response: N,
    ms: Object.fromEntries(Object.entries(n).map(([k, v]) => [k, +v.toFixed(1)])),
    nlft_ms: +nlftMs.toFixed(1),
    sft_ms: +sft.toFixed(1),
    time_ratio: +(nlftMs / sft).toFixed(2),
    floor_ratio: +stepFloor(weights.config, s, loraConfig).toFixed(2),
    tokens_per_s: +(((P + N) * 1000) / nlftMs).toFixed(2),
    nlft_peak_bytes: nlftPeak,
    sft_peak_bytes: sftPeak,
    memory_ratio: +(nlftPeak / sftPeak).toFixed(3),
  };
  console.log(JSON.stringify(row));
  console.log(
    `\n| phase | ms |\n|---|---|\n${Object.entries(row.ms)
      .map(([k, v]) => `| ${k} | ${v} |`)
      .join('\n')}\n| NLFT step | ${row.nlft_ms} |\n| SFT step | ${row.sft_ms} |`,
  );
  console.log(
    `\nNLFT/SFT time ${row.time_ratio}x (issue 11: <= 1.5x; the products' floor for this ${values.polarity} record: ${row.floor_ratio}x), peak ${formatBytes(nlftPeak)} vs ${formatBytes(sftPeak)} = ${row.memory_ratio}x (target < 1.2x)`,
  );
  if (values.profile) {
    let step = 100;
    const profile = await profileSteps(engine, async () => void (await nlftStep(step++)), Number(values.reps));
    console.log(JSON.stringify({ bench: 'nlft_profile', model: modelName, quant, prompt: P, response: N, ...profile }));
    console.log(`\nNLFT step (dynamic saliency):\n${formatProfile(profile)}\n`);
  }

  // Static saliency (docs/method.md §3.1): classes and coefficients fixed once from cached scores;
  // the step is the base forward, the fixed terms, backward and AdamW. Medians of alternate runs.
  const cached = await scoreRecords(model, [s]);
  const { results } = classifyScores([s], cached, {}, String);
  const fixedMethod = staticNlftMethod(new Map([[s, { scores: cached.records[0], result: results[0] }]]), { tokenText: String });
  const staticStep = async (step: number) => {
    const t0 = now();
    const pass = await TrainPass.forward(model, seq.ids, seq.rows, seq.targets, { rate: 0, seed: step });
    const t = await fixedMethod.terms(s, pass);
    await pass.backward(lossCoefficients(t.kinds, t.weights, pass.scores));
    await optimizerStep(step);
    return now() - t0;
  };
  await staticStep(5); // warm-up
  const reps = Number(values.reps);
  const staticMs: number[] = [];
  const sftMs: number[] = [];
  engine.buffers.resetPeak();
  for (let i = 0; i < reps; i++) {
    staticMs.push(await staticStep(6 + 2 * i));
    sftMs.push(await sftStep(7 + 2 * i));
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const staticRow = {
    ...rowHeader('nlft-static', engine, modelName, quant),
    prompt: P,
    response: N,
    reps,
    static_ms: +median(staticMs).toFixed(1),
    sft_ms: +median(sftMs).toFixed(1),
    time_ratio: +(median(staticMs) / median(sftMs)).toFixed(3),
    peak_bytes: engine.buffers.peak,
  };
  console.log(JSON.stringify(staticRow));
  console.log(
    `\nNLFT step with static saliency ${staticRow.static_ms} ms vs SFT step ${staticRow.sft_ms} ms (medians of ${reps}) = ` +
      `${staticRow.time_ratio}x (target <= 1.2x); dynamic NLFT ${row.time_ratio}x`,
  );

  // The no-grad views of a step's (or a scoring run's) records: one pass per view vs packed passes.
  const K = Number(values.records);
  const recs = Array.from(
    { length: K },
    (_, i): NlftSample => ({
      ...s,
      id: `r${i}`,
      standardIds: ids(s.standardIds.length),
      judgeIds: ids(s.judgeIds!.length),
      responseIds: ids(N),
    }),
  );
  const packTokens = Math.min(
    DEFAULT_SCORE_BATCH_TOKENS,
    scoreBatchTokens(weights.config, loraConfig, 256 * 2 ** 20, engine.ctx.device.limits.maxStorageBufferBindingSize),
  );
  const views = async (maxTokens: number) => {
    engine.buffers.resetPeak();
    const before = engine.buffers.current;
    const t0 = now();
    await scoreSideViews(model, recs, maxTokens);
    return { ms: now() - t0, peak: engine.buffers.peak - before };
  };
  await views(packTokens); // warm-up
  const alone = await views(1);
  const packed = await views(packTokens);
  const viewTokens = recs.reduce((a, r) => a + r.standardIds.length + r.judgeIds!.length + 2 * (N - 1), 0);
  const packRow = {
    bench: 'nlft-views',
    records: K,
    view_tokens: viewTokens,
    pack_tokens: packTokens,
    alone_ms: +alone.ms.toFixed(1),
    packed_ms: +packed.ms.toFixed(1),
    speedup: +(alone.ms / packed.ms).toFixed(2),
    alone_tokens_per_s: +((viewTokens * 1000) / alone.ms).toFixed(1),
    packed_tokens_per_s: +((viewTokens * 1000) / packed.ms).toFixed(1),
    alone_peak_activation_bytes: alone.peak,
    packed_peak_activation_bytes: packed.peak,
  };
  console.log(JSON.stringify(packRow));
  console.log(
    `\nno-grad views of ${K} negative records (${viewTokens} tokens): one pass per view ${packRow.alone_ms} ms, packed (<= ${packTokens} ` +
      `tokens a pass) ${packRow.packed_ms} ms = ${packRow.speedup}x; activations ${formatBytes(alone.peak)} vs ${formatBytes(packed.peak)}`,
  );
  opt.destroy();
  model.destroy();
  engine.destroy();
}

/**
 * The floor of the NLFT/SFT step-time ratio for record `s`: (SFT step + the no-grad views) / SFT step,
 * each counted in FLOPs of its products (`trainFlops`: forward, input gradients through every adapted
 * layer, the lm-head's two products a scored row; `forwardFlops` per view: its prompt and the response
 * through every layer, the lm-head over the response). The LoRA factors' rank-16 products in the views
 * are left out (under 1 %). With frozen base weights a backward is about one forward (input gradients
 * only), so the views of a negative record (two forwards of about the SFT pass's length) make the floor
 * ≈ 2x, a positive's (one) ≈ 1.5x, whatever the kernels.
 */
export function stepFloor(c: LlamaConfig, s: NlftSample, lora: Pick<LoraConfig, 'r' | 'targets'>): number {
  const N = s.responseIds.length;
  const sft = trainFlops(c, s.promptIds.length + N, N, lora);
  const views = [s.standardIds, s.judgeIds].reduce((sum, prompt) => sum + (prompt ? forwardFlops(c, prompt.length + N, N) : 0), 0);
  return (sft + views) / sft;
}
