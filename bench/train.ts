/**
 * Training-step benchmark: one SFT optimizer step (per record a forward keeping activations and a
 * backward to the LoRA gradients, then one AdamW step) of a Llama with seeded random weights in
 * the shape `--shape` names (bench/forward.ts `BENCH_SHAPES`: SmolLM2-135M, one record of 256
 * tokens; or the toy-math model, 4 records of 180 tokens), all T-1 next-token positions scored.
 * `--packed` runs a step's records as one packed pass (TrainPass.forwardPacked) instead of one pass each.
 * `--profile` then profiles `--reps` more steps per kernel and phase (bench/profile.ts). Reports tokens/s, ms per step, achieved
 * GFLOP/s against the adapter's measured FMA peak and peak GPU bytes against the analytic
 * minimum; then the same step with a generic framework (tfjs-webgpu autodiff, f32, full (T,V)
 * logits; bench/tfjs-baseline.ts) and the ratios ours/theirs.
 *
 * On a CPU-only machine (SwiftShader) the full 30-layer model is too slow for the tfjs side
 * (many minutes per step), so the default is a shallower model of the same width and
 * vocabulary (`--layers`, both sides equally; the output says how many layers ran). `--reps`
 * sets the timed steps per side (median; default 3, after one warm-up step).
 */
import { parseArgs } from 'node:util';
import { formatBytes } from '../src/engine/buffers.ts';
import { formatProfile } from '../src/engine/profile.ts';
import { describeAdapter } from '../src/engine/gpu.ts';
import { layerBackwardPlan } from '../src/engine/decoder-layer.ts';
import { GpuLlama } from '../src/engine/llama.ts';
import { describeMatmulTile } from '../src/engine/ops.ts';
import type { LoraSet } from '../src/model/lora.ts';
import { lossCoefficients, lossValue, TrainPass, type TermKind } from '../src/engine/train-pass.ts';
import { medianMs, tuneKernels, tuningShapeOf } from '../src/engine/tune.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { makeTinyLlama } from '../src/model/demo.ts';
import { initLora, loraParameterCount, type LoraConfig } from '../src/model/lora.ts';
import type { QuantFormat } from '../src/model/quant.ts';
import { baseModelBytes, projectionShapes } from '../src/model/size.ts';
import { PROJECTIONS, type Projection } from '../src/model/weights.ts';
import { createNodeEngine } from '../src/node/engine.ts';
import { AdamW } from '../src/train/optimizer.ts';
import { Rng } from '../src/util/rng.ts';
import { benchShape, forwardFlops, shapeLabel } from './forward.ts';
import { profileSteps } from './profile.ts';
import { measureFmaPeak } from './peak.ts';

/** Learning rate of the benchmark's optimizer steps (same on both sides). */
const LR = 1e-4;

function emit(obj: Record<string, unknown>): void {
  console.log(JSON.stringify(obj));
}

/**
 * The benchmark's adapters: PEFT init (A uniform, B zero) on gate/up/down, r, alpha 16, then B
 * set to small random values (N(0, 0.01^2)) so that the gradients of A are not trivially zero.
 */
export function benchLora(c: LlamaConfig, cfg: LoraConfig, seed = 11): LoraSet {
  const lora = initLora(c, cfg, seed);
  const rng = new Rng(seed + 1);
  for (const layer of lora) for (const f of Object.values(layer)) if (f) for (let i = 0; i < f.B.length; i++) f.B[i] = 0.01 * rng.normal();
  return lora;
}

/**
 * FLOPs of one training micro-batch over T tokens scoring R positions (multiply-add = 2), counting
 * what the engine's backward makes (decoder-layer.ts `layerBackwardPlan`: nothing below the lowest
 * adapter, as autodiff; the tfjs baseline prunes the same way):
 *   forward   forwardFlops(c, T, R) (base projections, causal QK^T and PV, fused lm-head over R
 *             rows) + LoRA forward 2·T·r·(in + out) per adapted projection (u = x A^T, u B^T);
 *   backward  base input-gradients dX = dY W: 2·T·out·in per projection whose input gradient is
 *             made (frozen weights get no weight-gradient); LoRA: dB += s dY^T u, g = dY B,
 *             dA += s g^T x: 2·T·r·(2·out + in), and dX += s g A, 2·T·r·in, with dX;
 *             attention, where its backward runs: recompute S = QK^T, then dP = dO V^T,
 *             dV = P^T dO, dQ = dS K, dK = dS^T Q: 5 causal matmuls against the forward's 2, so
 *             2.5× forward attention;
 *             lm-head: the rows' unit gradient g = dZ' W (made in the forward from the kept
 *             logits, src/engine/lm-head.ts lmHeadForwardGrad), 2·R·V·C, 1× its forward; scaling
 *             g per row is O(R·C). The tfjs side does the same two products on its full (T,V) logits.
 * Element-wise work (norms, rope, SwiGLU, softmax, AdamW: O(T·C + params)) is left out.
 */
export function trainFlops(c: LlamaConfig, T: number, R: number, lora: Pick<LoraConfig, 'r' | 'targets'>): number {
  const shapes = projectionShapes(c);
  const attention = 2 * 2 * c.numHeads * c.headDim * ((T * (T + 1)) / 2);
  const adapted = (_layer: number, p: Projection) => lora.targets.includes(p);
  const loraFwd = c.numLayers * lora.targets.reduce((s, p) => s + 2 * T * lora.r * (shapes[p][0] + shapes[p][1]), 0);
  let backward = 2 * c.vocabSize * c.hiddenSize * R;
  for (let i = 0; i < c.numLayers; i++) {
    const plan = layerBackwardPlan(adapted, i);
    if (plan.attention) backward += 2.5 * attention;
    for (const p of PROJECTIONS) {
      const [out, inF] = shapes[p];
      const r = adapted(i, p) ? lora.r : 0;
      if (plan.input[p]) backward += 2 * T * inF * (out + r);
      backward += 2 * T * r * (2 * out + inF);
    }
  }
  return forwardFlops(c, T, R) + loraFwd + backward;
}

/**
 * The least GPU memory a training micro-batch can hold at its peak, in bytes:
 *   the quantized base model (baseModelBytes: projections in `quant`, tables q8 or f32, norms f32)
 *   + the LoRA parameters × 4 f32 arrays (parameters, gradients, AdamW m and v)
 *   + the activations kept for the backward pass, per layer those LayerActs holds
 *     (src/engine/llama.ts): xIn, xn1, xMid, xn2 (T,C); q, att (T,H·D); k, v (T,KVH·D);
 *     gate, up, silu(gate)·up (T,F); rstd1, rstd2 (T); attention lse (H,T); and u = x A^T (T,r)
 *     per adapted projection; plus, once, the last residual and the final norm's output (T,C)
 *     and rstd (T) that the lm-head backward reads.
 * Backward scratch (one layer's activation gradients, a dlogits chunk) and the LoRA layout's
 * 256-byte alignment padding are not counted, so the engine's real peak is a little above this.
 */
export function trainAnalyticMinBytes(
  c: LlamaConfig,
  quant: QuantFormat,
  T: number,
  lora: LoraConfig,
): { total: number; base: number; lora: number; activations: number } {
  const [C, F, HD, KVD, H] = [c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim, c.numHeads];
  const perLayer = T * (4 * C + 2 * HD + 2 * KVD + 3 * F + 2 + H + lora.targets.length * lora.r);
  const final = T * (2 * C + 1);
  const parts = {
    base: baseModelBytes(c, quant),
    lora: loraParameterCount(c, lora) * 4 * 4,
    activations: (c.numLayers * perLayer + final) * 4,
  };
  return { total: parts.base + parts.lora + parts.activations, ...parts };
}

export async function trainBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      shape: { type: 'string', default: 'smollm2' },
      quant: { type: 'string', default: 'q8' },
      tokens: { type: 'string' },
      records: { type: 'string' },
      layers: { type: 'string' },
      rank: { type: 'string', default: '16' },
      reps: { type: 'string', default: '3' },
      'skip-tfjs': { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      packed: { type: 'boolean', default: false },
    },
  });
  const benchModel = benchShape(values.shape!);
  const quant = values.quant as QuantFormat;
  const T = Number(values.tokens ?? benchModel.tokens);
  const records = Number(values.records ?? benchModel.records);
  const numLayers = Number(values.layers ?? benchModel.layers);
  const r = Number(values.rank);
  const reps = Number(values.reps);
  if (!(Number.isInteger(reps) && reps >= 1)) throw new Error(`--reps must be a positive integer (got ${values.reps})`);
  if (!(Number.isInteger(T) && T >= 2)) throw new Error(`--tokens must be an integer >= 2 (got ${values.tokens})`);
  if (!(Number.isInteger(records) && records >= 1)) throw new Error(`--records must be a positive integer (got ${values.records})`);
  if (!(Number.isInteger(numLayers) && numLayers >= 1)) throw new Error(`--layers must be a positive integer (got ${values.layers})`);
  const shape = { ...benchModel.model, numLayers };
  const targets: Projection[] = ['gate_proj', 'up_proj', 'down_proj'];
  const loraCfg: LoraConfig = { r, alpha: 16, dropout: 0, targets };
  const modelName = shapeLabel(benchModel, numLayers);
  if (numLayers !== benchModel.model.numLayers) {
    console.error(
      `note: ${numLayers} decoder layers instead of the ${benchModel.label}'s ${benchModel.model.numLayers} (width, heads ` +
        `and vocabulary as the real model; --layers ${benchModel.model.numLayers} for the full depth), on both sides`,
    );
  }

  const probe = await createNodeEngine();
  const adapter = describeAdapter(probe.ctx.adapter);
  const peakSamples = [await measureFmaPeak(probe)];
  emit({ bench: 'fma_peak', adapter, gflops: +peakSamples[0].toFixed(2) });
  const tuned = await tuneKernels(probe, tuningShapeOf(shape, T), quant);
  const best = tuned.matmul.reduce((a, m) => (m.gflops > a.gflops ? m : a));
  const bestDx = tuned.matmulDx.reduce((a, m) => (m.gflops > a.gflops ? m : a));
  const keptHead = tuned.lmhead.find((m) => JSON.stringify(m.tile) === JSON.stringify(tuned.tuning.lmhead))!; // pickLmheadTile's
  emit({
    bench: 'train_tiles',
    quant,
    T,
    matmul_tile: best.tile,
    matmul_gflops: +best.gflops.toFixed(2),
    matmul_gflops_per_tile: Object.fromEntries(tuned.matmul.map((m) => [describeMatmulTile(m.tile), +m.gflops.toFixed(2)])),
    matmul_dx_tile: bestDx.tile,
    matmul_dx_gflops_per_tile: Object.fromEntries(tuned.matmulDx.map((m) => [JSON.stringify(m.tile), +m.gflops.toFixed(2)])),
    matmul_tn_tile: tuned.tuning.matmulTn,
    matmul_tn_gflops_per_tile: Object.fromEntries(tuned.matmulTn.map((m) => [JSON.stringify(m.tile), +m.gflops.toFixed(2)])),
    lmhead_tile: keptHead.tile,
    lmhead_gflops: +keptHead.gflops.toFixed(2),
    lmhead_gflops_per_tile: Object.fromEntries(tuned.lmhead.map((m) => [JSON.stringify(m.tile), +m.gflops.toFixed(2)])),
    attention: tuned.tuning.attention,
    attention_ms: Object.fromEntries(tuned.attention.map((a) => [JSON.stringify(a.tile), +a.ms.toFixed(1)])),
  });
  probe.destroy();

  // The model, its adapters, and the step's SFT sequences: all T-1 next-token positions scored, 1/N each.
  const weights = makeTinyLlama(shape);
  const c = weights.config;
  const lora = benchLora(c, loraCfg);
  const seqs = Array.from({ length: records }, (_, k) => {
    const ids = Array.from({ length: T }, (_, i) => (i * 7919 + 11 + k * 104729) % c.vocabSize);
    const rows = ids.slice(0, -1).map((_, i) => i);
    return { ids, rows, next: rows.map((i) => ids[i + 1]) };
  });
  const N = T - 1;
  const kinds: TermKind[] = seqs[0].rows.map(() => 'likelihood');
  const sftWeights = new Float32Array(N).fill(1 / N);
  const packedKinds = seqs.flatMap(() => kinds);
  const packedWeights = new Float32Array(records * N).fill(1 / N);

  const engine = await createNodeEngine({ tuning: tuned.tuning });
  const llama = GpuLlama.create(engine.ops, weights, quant, lora);
  const params = llama.lora!;
  const opt = new AdamW(engine, params.params, params.enableGradients(), params.n);
  let t = 0;
  const losses: number[] = [];
  const gradNorms: number[] = [];
  const step = async () => {
    let loss = 0;
    // The AdamW step and the norm's readback go into the last backward's submit, as in Trainer.run.
    let readNorm = async () => Number.NaN;
    const update = async (enc: GPUCommandEncoder) => {
      await opt.step(enc, { lr: LR, step: ++t, gradScale: 1 / records });
      readNorm = opt.recordNormReadback(enc);
    };
    if (values.packed) {
      const pass = await TrainPass.forwardPacked(
        llama,
        seqs.map((q) => ({ ids: q.ids, rows: q.rows, targets: q.next })),
        { rate: 0, seed: 0 },
      );
      loss = lossValue(packedKinds, packedWeights, pass.scores) / records;
      await pass.backward(lossCoefficients(packedKinds, packedWeights, pass.scores), update);
    } else {
      for (const [i, q] of seqs.entries()) {
        const pass = await TrainPass.forward(llama, q.ids, q.rows, q.next, { rate: 0, seed: 0 });
        loss += lossValue(kinds, sftWeights, pass.scores) / records;
        await pass.backward(lossCoefficients(kinds, sftWeights, pass.scores), i === seqs.length - 1 ? update : undefined);
      }
    }
    losses.push(loss);
    gradNorms.push(await readNorm());
  };
  const residentBytes = engine.buffers.current;
  engine.buffers.resetPeak();
  const ms = await medianMs(engine, step, reps);
  const peakBytes = engine.buffers.peak;
  const largestBuffer = engine.buffers.largest;
  // The FMA peak measured on this machine varies between runs (SwiftShader threads share the
  // CPU with everything else); measure it again after the steps and keep the higher value, so
  // the share of the peak is not flattered by one slow peak measurement.
  peakSamples.push(await measureFmaPeak(engine));
  const peak = Math.max(...peakSamples);
  const flops = records * trainFlops(c, T, N, loraCfg);
  const minBytes = trainAnalyticMinBytes(c, quant, T, loraCfg);
  const gflops = flops / (ms / 1000) / 1e9;
  const ours = {
    bench: 'train',
    impl: values.packed ? 'nlft packed' : 'nlft',
    adapter,
    model: modelName,
    layers: numLayers,
    quant,
    tokens: T,
    records,
    scored: N,
    lora: `r${r} alpha16 on ${targets.join(',')}`,
    lora_params: loraParameterCount(c, loraCfg),
    ms: +ms.toFixed(1),
    tokens_per_s: +((records * T * 1000) / ms).toFixed(2),
    gflop_per_step: +(flops / 1e9).toFixed(2),
    gflops: +gflops.toFixed(2),
    fma_peak_gflops: +peak.toFixed(2),
    fma_peak_samples: peakSamples.map((x) => +x.toFixed(2)),
    of_peak: +(gflops / peak).toFixed(3),
    reps,
    loss_first_step: +losses[0].toFixed(5),
    grad_norm_first_step: +gradNorms[0].toFixed(5),
    peak_bytes: peakBytes,
    resident_bytes: residentBytes,
    analytic_min_bytes: minBytes.total,
    analytic_min_parts: { base: minBytes.base, lora_param_grad_m_v: minBytes.lora, activations: minBytes.activations },
    largest_buffer: largestBuffer,
  };
  emit(ours);
  if (values.profile) {
    // After the timed steps, so the profiler's own cost is not in them.
    const profile = await profileSteps(engine, step, reps);
    emit({ bench: 'train_profile', model: modelName, quant, tokens: T, records, packed: values.packed, ...profile });
    console.log(`\n${formatProfile(profile)}\n`);
  }
  llama.destroy();
  opt.destroy();
  engine.destroy();

  let theirs: { ms: number; tokens_per_s: number; gflops: number; peak_bytes: number; peak_bytes_allocated: number } | null = null;
  if (!values['skip-tfjs']) {
    const { tfjsTrainStep } = await import('./tfjs-baseline.ts');
    const sequences = seqs.map(({ ids }) => ({ ids, targets: ids.map((_, i) => (i + 1 < T ? ids[i + 1] : -1)) }));
    const m = await tfjsTrainStep({ weights, lora, sequences, lr: LR, reps });
    const tgflops = flops / (m.ms / 1000) / 1e9;
    theirs = {
      ms: m.ms,
      tokens_per_s: (records * T * 1000) / m.ms,
      gflops: tgflops,
      peak_bytes: m.peakBytesInGpu,
      peak_bytes_allocated: m.peakBytesAllocatedInGpu,
    };
    emit({
      bench: 'train',
      impl: 'tfjs-webgpu',
      tfjs: m.version,
      adapter: m.adapter,
      model: modelName,
      layers: numLayers,
      dtype: 'f32',
      tokens: T,
      records,
      scored: N,
      ms: +m.ms.toFixed(1),
      tokens_per_s: +theirs.tokens_per_s.toFixed(2),
      gflop_per_step: +(flops / 1e9).toFixed(2),
      gflops: +tgflops.toFixed(2),
      of_peak: +(tgflops / peak).toFixed(3),
      reps,
      loss_first_step: +m.lossFirstStep.toFixed(5),
      grad_norm_first_step: +m.gradNormFirstStep.toFixed(5),
      peak_bytes: m.peakBytesInGpu,
      peak_bytes_allocated: m.peakBytesAllocatedInGpu,
      resident_bytes: m.residentBytes,
      tf_memory_after_step: m.memoryAfter,
      memory_note:
        'peak_bytes: high-water mark of the webgpu backend bufferManager.numBytesUsed (GPU buffers owned by live or in-flight tensors, uniforms, staging) ' +
        'over the timed steps; peak_bytes_allocated: of numBytesAllocated (also the buffers tfjs keeps pooled for reuse, what the device really holds)',
    });
    emit({
      bench: 'train_ratio',
      model: modelName,
      tokens: T,
      speed_ours_over_tfjs: +(ours.tokens_per_s / theirs.tokens_per_s).toFixed(2),
      peak_bytes_tfjs_over_ours: +(theirs.peak_bytes / ours.peak_bytes).toFixed(2),
      peak_bytes_allocated_tfjs_over_ours: +(theirs.peak_bytes_allocated / ours.peak_bytes).toFixed(2),
      targets: { of_peak: '>= 0.35', speed_ratio: '>= 5', peak_bytes_ratio: '>= 2' },
      met: {
        of_peak: ours.of_peak >= 0.35,
        speed_ratio: ours.tokens_per_s / theirs.tokens_per_s >= 5,
        peak_bytes_ratio: theirs.peak_bytes / ours.peak_bytes >= 2,
      },
    });
  }

  console.log(`\n| impl | model | weights | records × T | ms/step | tok/s | GFLOP/s | % of FMA peak | GPU peak bytes | analytic min |`);
  console.log(`|---|---|---|---|---|---|---|---|---|---|`);
  console.log(
    `| nlft | ${modelName} | ${quant} | ${records} × ${T} | ${ours.ms} | ${ours.tokens_per_s} | ${ours.gflops} | ` +
      `${(100 * ours.of_peak).toFixed(1)}% | ${formatBytes(ours.peak_bytes)} | ${formatBytes(ours.analytic_min_bytes)} |`,
  );
  if (theirs) {
    console.log(
      `| tfjs-webgpu | ${modelName} | f32 | ${records} × ${T} | ${theirs.ms.toFixed(1)} | ${theirs.tokens_per_s.toFixed(2)} | ${theirs.gflops.toFixed(2)} | ` +
        `${((100 * theirs.gflops) / peak).toFixed(1)}% | ${formatBytes(theirs.peak_bytes)} (pool ${formatBytes(theirs.peak_bytes_allocated)}) | - |`,
    );
    console.log(
      `\nours/tfjs speed: ${(ours.tokens_per_s / theirs.tokens_per_s).toFixed(2)}x (issue 11: >= 10x); tfjs/ours peak bytes: ${(theirs.peak_bytes / ours.peak_bytes).toFixed(2)}x` +
        ` (${(theirs.peak_bytes_allocated / ours.peak_bytes).toFixed(2)}x with tfjs's buffer pool; ` +
        `target >= 2x); ours at ${(100 * ours.of_peak).toFixed(1)}% of the FMA peak (issue 11: >= 50%)`,
    );
  }
}
