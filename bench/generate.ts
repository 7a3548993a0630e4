/**
 * Generation benchmark: a SmolLM2-135M-shaped model (seeded random weights), a prompt of P tokens
 * run as one prefill pass into the KV cache, then N decode steps (one token each: every layer on a
 * single row, attention against the cache, the lm-head on that row, logits read back and sampled).
 * Reports prefill ms, ms per decode step and decode tokens/s, the weight bytes a step streams
 * (decode is bound by reading the weights once per token), and peak GPU bytes (KV cache included).
 * `--profile` then profiles one more generation, each decode step one profile step: GPU time per
 * kernel, dispatches, submits, uploads and readbacks per token (src/engine/profile.ts).
 * The one-row (decode) kernel shape and the decode attention's threads per head are the tuner's choices
 * (`tuneKernels`, printed with their timings);
 * `--matvec` also times every shape the adapter can run (MATVEC_VARIANTS), beside the tiled matmul
 * at T = 1, on the model's own projections of 4 layers and its whole lm-head, in two interleaved rounds.
 */
import { parseArgs } from 'node:util';
import { formatBytes } from '../src/engine/buffers.ts';
import { generate } from '../src/engine/generate.ts';
import type { TrackedBuffer } from '../src/engine/buffers.ts';
import type { Engine } from '../src/engine/engine.ts';
import { GpuLlama } from '../src/engine/llama.ts';
import { DEFAULT_MATVEC, type GpuWeight, type MatvecTile, matvecVariantsOn, Ops } from '../src/engine/ops.ts';
import { formatProfile, GpuProfiler } from '../src/engine/profile.ts';
import { medianMs, tuneKernels, tuningShapeOf } from '../src/engine/tune.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { makeTinyLlama } from '../src/model/demo.ts';
import { quantize, type QuantFormat } from '../src/model/quant.ts';
import { baseModelBytes, projectionShapes, tableFormat } from '../src/model/size.ts';
import { createNodeEngine } from '../src/node/engine.ts';
import { Rng } from '../src/util/rng.ts';
import { BENCH_SHAPES, rowHeader, shapeLabel, SMOLLM2_135M } from './forward.ts';

export async function generateBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quant: { type: 'string', default: 'q8' },
      prompt: { type: 'string', default: '64' },
      new: { type: 'string', default: '16' },
      layers: { type: 'string', default: String(SMOLLM2_135M.numLayers) },
      profile: { type: 'boolean', default: false },
      matvec: { type: 'boolean', default: false },
    },
  });
  const quant = values.quant as QuantFormat;
  const P = Number(values.prompt);
  const N = Number(values.new);
  const shape = { ...SMOLLM2_135M, numLayers: Number(values.layers) };
  const engine = await createNodeEngine();
  const tuned = await tuneKernels(engine, tuningShapeOf(shape, P), quant);
  engine.useTuning(tuned.tuning);
  console.log(JSON.stringify({ bench: 'generate_tuner_matvec', quant, timed: tuned.matvec, chosen: tuned.tuning.matvec }));
  console.log(
    JSON.stringify({ bench: 'generate_tuner_attention', quant, timed: tuned.decodeAttention, chosen: tuned.tuning.decodeAttention }),
  );
  const weights = makeTinyLlama(shape);
  if (values.matvec) await timeMatvecShapes(engine, weights.config, quant);
  const model = GpuLlama.create(engine.ops, weights, quant);
  const rng = new Rng(9);
  const prompt = Array.from({ length: P }, () => rng.int(shape.vocabSize));
  await generate(model, prompt.slice(0, 8), { maxNewTokens: 2, temperature: 0, seed: 0, stopIds: [] }); // warm-up (compiles)
  engine.buffers.resetPeak();
  const stamps: number[] = [];
  const t0 = performance.now();
  const r = await generate(model, prompt, {
    maxNewTokens: N,
    temperature: 0,
    seed: 0,
    stopIds: [],
    onToken: () => void stamps.push(performance.now()),
  });
  const prefillMs = stamps[0] - t0;
  const decodeMs = (stamps.at(-1)! - stamps[0]) / Math.max(1, r.ids.length - 1);
  const modelName = shapeLabel(BENCH_SHAPES.smollm2, shape.numLayers);
  const row = {
    ...rowHeader('generate', engine, modelName, quant),
    matvec: engine.ops.tuning.matvec ?? DEFAULT_MATVEC,
    prompt: P,
    new_tokens: r.ids.length,
    prefill_ms: +prefillMs.toFixed(1),
    decode_ms_per_token: +decodeMs.toFixed(1),
    decode_tokens_per_s: +(1000 / decodeMs).toFixed(2),
    weight_bytes_per_token: baseModelBytes(weights.config, quant),
    peak_bytes: engine.buffers.peak,
  };
  console.log(JSON.stringify(row));
  console.log(
    `\nprefill ${P} tokens ${row.prefill_ms} ms; decode ${row.decode_ms_per_token} ms/token = ${row.decode_tokens_per_s} ` +
      `tokens/s (streams ${formatBytes(row.weight_bytes_per_token)} of weights a token); peak ${formatBytes(row.peak_bytes)}`,
  );
  if (values.profile) {
    // After the timed run, so the profiler's own cost is not in it. Step 0 is the prefill (skipped).
    const profiler = GpuProfiler.attach(engine.ctx.device);
    try {
      await generate(model, prompt, { maxNewTokens: N, temperature: 0, seed: 0, stopIds: [], onToken: () => profiler.step() });
      const profile = await profiler.report(1);
      console.log(JSON.stringify({ ...rowHeader('generate_profile', engine, modelName, quant), ...profile }));
      console.log(`\n${formatProfile(profile)}\n`);
    } finally {
      profiler.detach();
    }
  }
  model.destroy();
  engine.destroy();
}

/** Layers of distinct weights in the one-row timings, so the weights stream from memory as in a decode step (4 × 3.5 MB in q8). */
const TIMED_LAYERS = 4;

/**
 * Times each one-row kernel shape the adapter runs (MATVEC_VARIANTS) on the seven projections of
 * TIMED_LAYERS layers and on the lm-head (its vocabulary table), beside the tiled matmul at T = 1
 * that decode ran before (its one-row tile), in two interleaved rounds, and prints the times.
 */
async function timeMatvecShapes(engine: Engine, c: LlamaConfig, quant: QuantFormat): Promise<void> {
  const b = engine.buffers;
  const live: TrackedBuffer[] = [];
  const weight = (rows: number, cols: number, format: QuantFormat): GpuWeight => {
    const q = quantize(
      new Float32Array(rows * cols).map((_, i) => Math.sin(i) * 0.05),
      rows,
      cols,
      format,
    );
    return { format, rows, cols, data: b.uploadIn(live, 'w', q.data), scales: q.scales ? b.uploadIn(live, 'w.scales', q.scales) : null };
  };
  const layers = Array.from({ length: TIMED_LAYERS }, () => Object.values(projectionShapes(c)).map(([n, k]) => weight(n, k, quant))).flat();
  const head = weight(c.vocabSize, c.hiddenSize, tableFormat(quant));
  const widest = Math.max(c.vocabSize, c.intermediateSize);
  const x = b.f32In(live, 'x', widest);
  const out = b.f32In(live, 'out', widest);
  const kernels: Array<{ kernel: string; tile?: MatvecTile }> = [
    ...matvecVariantsOn(engine.ctx.device).map((tile) => ({ kernel: `matvec ${tile.variant} TN4=${tile.TN4} WG=${tile.WG}`, tile })),
    { kernel: 'matmul T=1 (one-row tile, before)' },
  ];
  try {
    for (let round = 0; round < 2; round++) {
      for (const { kernel, tile } of kernels) {
        const ops = new Ops(engine.ctx.device, engine.pipelines, b, { ...engine.ops.tuning, matvec: tile });
        const timed = (ws: GpuWeight[]) =>
          medianMs(engine, async () => {
            const enc = engine.ctx.device.createCommandEncoder();
            for (const w of ws) await (tile ? ops.matvec(enc, { x, w, out }) : ops.matmul(enc, { x, w, out, T: 1 }));
            engine.ctx.device.queue.submit([enc.finish()]);
          });
        const row = { kernel, round, layer_ms: (await timed(layers)) / TIMED_LAYERS, lmhead_ms: await timed([head]) };
        // A decode step runs the layer's products numLayers times and the lm-head once.
        const step = c.numLayers * row.layer_ms + row.lmhead_ms;
        console.log(JSON.stringify({ bench: 'generate_matvec', quant, ...row, step_products_ms: +step.toFixed(1) }));
      }
    }
  } finally {
    for (const t of live) b.destroy(t);
  }
}
