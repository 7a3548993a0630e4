/**
 * Forward benchmark: a SmolLM2-135M-shaped Llama (seeded random weights), T tokens, every
 * position scored by the fused lm-head. Reports tokens/s, achieved GFLOP/s against the adapter's
 * measured FMA peak, the matmul-dominated shapes on their own, and peak GPU bytes against the
 * analytic minimum. Also picks the matmul register tile for this adapter by a short sweep.
 */
import { parseArgs } from 'node:util';
import { formatBytes } from '../src/engine/buffers.ts';
import type { Engine } from '../src/engine/engine.ts';
import { describeAdapter } from '../src/engine/gpu.ts';
import { GpuLlama } from '../src/engine/llama.ts';
import { medianMs, tuneKernels, tuningShapeOf } from '../src/engine/tune.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { makeTinyLlama, type TinyLlamaOptions } from '../src/model/demo.ts';
import type { QuantFormat } from '../src/model/quant.ts';
import { baseModelBytes, projectionShapes } from '../src/model/size.ts';
import { createNodeEngine } from '../src/node/engine.ts';
import { measureFmaPeak } from './peak.ts';

/** SmolLM2-135M: 30 layers, hidden 576, ffn 1536, 9 heads (3 kv) of 64, vocab 49152, tied. */
export const SMOLLM2_135M = {
  seed: 7,
  vocabSize: 49152,
  hiddenSize: 576,
  intermediateSize: 1536,
  numLayers: 30,
  numHeads: 9,
  numKvHeads: 3,
  headDim: 64,
  tie: true,
  ropeTheta: 100000,
  maxPositionEmbeddings: 8192,
};

/** The toy-math model (public/toy-math/model/config.json): 4 layers, hidden 128, ffn 384, 4 heads (2 kv) of 32, vocab 849, tied. */
export const TOY_MATH = {
  seed: 7,
  vocabSize: 849,
  hiddenSize: 128,
  intermediateSize: 384,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 32,
  tie: true,
  ropeTheta: 10000,
  maxPositionEmbeddings: 1024,
};

/**
 * Llama-3.2-1B: 16 layers, hidden 2048, ffn 8192, 32 heads (8 kv) of 64, vocab 128256, tied,
 * RoPE θ 500000 with its llama3 scaling (factor 32, low 1, high 4, original 8192), RMSNorm eps 1e-5.
 */
export const LLAMA_32_1B: TinyLlamaOptions = {
  seed: 7,
  vocabSize: 128256,
  hiddenSize: 2048,
  intermediateSize: 8192,
  numLayers: 16,
  numHeads: 32,
  numKvHeads: 8,
  headDim: 64,
  tie: true,
  ropeScaling: true,
  ropeTheta: 500000,
  maxPositionEmbeddings: 131072,
};

/** A training benchmark's model (`--shape`) and its default step: `records` sequences of `tokens` tokens, `layers` of them run. */
export interface BenchShape {
  name: string;
  label: string;
  model: TinyLlamaOptions;
  tokens: number;
  records: number;
  layers: number;
}

/**
 * The shapes of the training benchmarks: SmolLM2-135M (one sequence of 256 tokens per step), and
 * the toy-math model that the method comparisons train (a step of 4 records of 180 tokens, all 4
 * layers). SmolLM2 runs one layer by default: on SwiftShader (2 cores) the tfjs baseline takes
 * ~100 s per step at one layer and 256 tokens, most of it in its (T,V) lm-head, plus ~20 s per
 * further layer (`--layers 30` runs the real depth; ours alone: `--layers 30 --skip-tfjs`).
 * Llama-3.2-1B (`bench memory`: one record of 512 tokens) runs 2 of its 16 layers by default.
 */
export const BENCH_SHAPES: Record<string, BenchShape> = {
  smollm2: { name: 'smollm2', label: 'SmolLM2-135M shape', model: SMOLLM2_135M, tokens: 256, records: 1, layers: 1 },
  toy: { name: 'toy', label: 'toy-math shape', model: TOY_MATH, tokens: 180, records: 4, layers: TOY_MATH.numLayers },
  'llama-1b': { name: 'llama-1b', label: 'Llama-3.2-1B shape', model: LLAMA_32_1B, tokens: 512, records: 1, layers: 2 },
};

/** The shape `--shape` names. */
export function benchShape(name: string): BenchShape {
  const s = BENCH_SHAPES[name];
  if (!s) throw new Error(`--shape must be ${Object.keys(BENCH_SHAPES).join(', ')} (got "${name}")`);
  return s;
}

/** "SmolLM2-135M shape (1 of 30 layers)". */
export function shapeLabel(s: BenchShape, numLayers: number): string {
  return `${s.label} (${numLayers} of ${s.model.numLayers} layers)`;
}

/** The first fields of a benchmark's JSON row: which bench, on which adapter, model depth and weights. */
export function rowHeader(bench: string, engine: Engine, model: string, quant: QuantFormat): Record<string, string> {
  return { bench, adapter: describeAdapter(engine.ctx.adapter), model, quant };
}

function emit(obj: Record<string, unknown>): void {
  console.log(JSON.stringify(obj));
}

/** FLOPs of one forward pass over T tokens scoring R positions (multiply-add = 2). */
export function forwardFlops(c: LlamaConfig, T: number, R: number): number {
  const linear = Object.values(projectionShapes(c)).reduce((s, [n, k]) => s + n * k, 0);
  const attention = 2 * 2 * c.numHeads * c.headDim * ((T * (T + 1)) / 2); // QK^T and PV, causal
  return c.numLayers * (2 * linear * T + attention) + 2 * c.vocabSize * c.hiddenSize * R;
}

export async function forwardBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { quant: { type: 'string', default: 'q8' }, tokens: { type: 'string', default: '256' }, layers: { type: 'string' } },
  });
  const quant = values.quant as QuantFormat;
  const T = Number(values.tokens);
  const shape = { ...SMOLLM2_135M, numLayers: values.layers ? Number(values.layers) : SMOLLM2_135M.numLayers };
  const probe = await createNodeEngine();
  const adapter = describeAdapter(probe.ctx.adapter);
  const peak = await measureFmaPeak(probe);
  emit({ bench: 'fma_peak', adapter, gflops: +peak.toFixed(2) });

  // Per-adapter tile choice on the model's own shapes; the winners run the whole forward pass.
  const tuned = await tuneKernels(probe, tuningShapeOf(shape, T), quant);
  for (const m of tuned.matmul)
    emit({
      bench: 'matmul_tile',
      quant,
      T,
      N: shape.intermediateSize,
      K: shape.hiddenSize,
      tile: m.tile,
      gflops: +m.gflops.toFixed(2),
      of_peak: +(m.gflops / peak).toFixed(3),
    });
  for (const m of tuned.lmhead)
    emit({
      bench: 'lmhead_tile',
      quant,
      R: T,
      C: shape.hiddenSize,
      tile: m.tile,
      gflops: +m.gflops.toFixed(2),
      of_peak: +(m.gflops / peak).toFixed(3),
    });
  const best = tuned.matmul.reduce((a, c) => (c.gflops > a.gflops ? c : a));
  probe.destroy();

  const engine = await createNodeEngine({ tuning: tuned.tuning });
  const weights = makeTinyLlama(shape);
  const c = weights.config;
  const llama = GpuLlama.create(engine.ops, weights, quant);
  const ids = Array.from({ length: T }, (_, i) => (i * 7919 + 11) % c.vocabSize);
  const rows = ids.map((_, i) => i);
  const targets = ids.map((_, i) => ids[(i + 1) % T]);
  const modelBytes = engine.buffers.current;
  engine.buffers.resetPeak();
  const ms = await medianMs(engine, async () => void (await llama.score(ids, rows, targets)));
  const flops = forwardFlops(c, T, T);
  const gflops = flops / (ms / 1000) / 1e9;
  const activations = T * (2 * c.hiddenSize + 2 * c.numHeads * c.headDim + 2 * c.numKvHeads * c.headDim + 3 * c.intermediateSize + 4) * 4;
  const row = {
    bench: 'forward',
    adapter,
    model: `SmolLM2-135M shape (${c.numLayers} layers)`,
    quant,
    tokens: T,
    ms: +ms.toFixed(1),
    tokens_per_s: +((T * 1000) / ms).toFixed(1),
    gflops: +gflops.toFixed(2),
    fma_peak_gflops: +peak.toFixed(2),
    of_peak: +(gflops / peak).toFixed(3),
    matmul_tile: best.tile,
    lmhead_tile: tuned.tuning.lmhead,
    matmul_gflops: +best.gflops.toFixed(2),
    matmul_of_peak: +(best.gflops / peak).toFixed(3),
    peak_bytes: engine.buffers.peak,
    model_bytes: modelBytes,
    analytic_min_bytes: baseModelBytes(c, quant) + activations,
    tokens_x_vocab_x4: T * c.vocabSize * 4,
    largest_buffer: engine.buffers.largest,
  };
  emit(row);
  console.log(`\n| model | quant | T | ms | tok/s | GFLOP/s | peak | % of peak | matmul % | GPU peak bytes | analytic min |`);
  console.log(`|---|---|---|---|---|---|---|---|---|---|---|`);
  console.log(
    `| ${row.model} | ${quant} | ${T} | ${row.ms} | ${row.tokens_per_s} | ${row.gflops} | ${row.fma_peak_gflops} | ${(100 * row.of_peak).toFixed(1)}% ` +
      `| ${(100 * row.matmul_of_peak).toFixed(1)}% | ${formatBytes(row.peak_bytes)} | ${formatBytes(row.analytic_min_bytes)} |`,
  );
  engine.destroy();
}
