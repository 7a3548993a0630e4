/**
 * Generation benchmark: a SmolLM2-135M-shaped model (seeded random weights), a prompt of P tokens
 * run as one prefill pass into the KV cache, then N decode steps (one token each: every layer on a
 * single row, attention against the cache, the lm-head on that row, logits read back and sampled).
 * Reports prefill ms, ms per decode step and decode tokens/s, the weight bytes a step streams
 * (decode is bound by reading the weights once per token), and peak GPU bytes (KV cache included).
 */
import { parseArgs } from 'node:util';
import { formatBytes } from '../src/engine/buffers.ts';
import { generate } from '../src/engine/generate.ts';
import { GpuLlama } from '../src/engine/llama.ts';
import { tuneKernels, tuningShapeOf } from '../src/engine/tune.ts';
import { makeTinyLlama } from '../src/model/demo.ts';
import type { QuantFormat } from '../src/model/quant.ts';
import { baseModelBytes } from '../src/model/size.ts';
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
    },
  });
  const quant = values.quant as QuantFormat;
  const P = Number(values.prompt);
  const N = Number(values.new);
  const shape = { ...SMOLLM2_135M, numLayers: Number(values.layers) };
  const engine = await createNodeEngine();
  engine.useTuning((await tuneKernels(engine, tuningShapeOf(shape, P), quant)).tuning);
  const weights = makeTinyLlama(shape);
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
  const row = {
    ...rowHeader('generate', engine, shapeLabel(BENCH_SHAPES.smollm2, shape.numLayers), quant),
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
  model.destroy();
  engine.destroy();
}
