/**
 * The trainer end to end on tiny models: SFT loss falls over a few dozen steps, deterministically
 * for a seed; a checkpoint (through its file bytes) resumes to bit-identical adapters; a
 * non-finite loss stops the run keeping the last good parameters, and so does a command the GPU
 * refused (a GpuCommandError, not a silently wrong step); a training step's peak GPU
 * memory on a 49152-token vocabulary stays below tokens x vocab x 4 plus the model.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GpuLlama } from '../../src/engine/llama.ts';
import { GpuCommandError } from '../../src/errors.ts';
import { initLora } from '../../src/model/lora.ts';
import { makeTinyLlama, type TinyLlamaOptions } from '../../src/model/demo.ts';
import { checkpointBytes, readCheckpoint, CHECKPOINT_FILE } from '../../src/train/checkpoint.ts';
import type { TrainSample } from '../../src/data/prompt.ts';
import { DEFAULT_TRAIN, sftTerms, Trainer, type StepMetrics, type TermsFn, type TrainConfig } from '../../src/train/trainer.ts';
import type { FileSource } from '../../src/model/source.ts';
import { Rng } from '../../src/util/rng.ts';
import { testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

const MODEL: TinyLlamaOptions = {
  seed: 11,
  vocabSize: 256,
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  tie: true,
};
const LORA = { r: 8, alpha: 16, dropout: 0.05, targets: ['q_proj', 'v_proj', 'gate_proj', 'up_proj', 'down_proj'] as const };

function samples(n: number, V: number, seed: number): TrainSample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => ({
    id: `s${i}`,
    index: i + 1,
    promptIds: Array.from({ length: 6 + rng.int(5) }, () => rng.int(V)),
    responseIds: Array.from({ length: 8 + rng.int(8) }, () => rng.int(V)),
    truncatedBy: 0,
  }));
}

const CONFIG: TrainConfig = { ...DEFAULT_TRAIN, epochs: 8, lr: 2e-2, batch: 2, seed: 5 };

async function train(
  config: TrainConfig,
  data: TrainSample[],
  opts: { stopAfter?: number; resumeFrom?: Uint8Array; terms?: TermsFn; engine?: TestGpu; onStep?: (m: StepMetrics) => void } = {},
) {
  const e = opts.engine ?? g;
  const weights = makeTinyLlama(MODEL);
  const model = GpuLlama.create(e.ops, weights, 'q8', initLora(weights.config, { ...LORA, targets: [...LORA.targets] }, config.seed));
  const trainer = new Trainer(e, model, data, config, { terms: opts.terms ?? sftTerms }, LORA.dropout);
  if (opts.resumeFrom) {
    const bytes = opts.resumeFrom;
    const source: FileSource = {
      label: 'memory',
      size: async (name) => (name === CHECKPOINT_FILE ? bytes.length : null),
      readRange: async (_n, s, e) => bytes.slice(s, e),
      read: async () => bytes,
    };
    await trainer.restore((await readCheckpoint(source)).checkpoint);
  }
  const metrics: StepMetrics[] = [];
  const ctl = new AbortController();
  const end = await trainer
    .run({
      signal: ctl.signal,
      onStep: (m) => {
        metrics.push(m);
        opts.onStep?.(m);
        if (opts.stopAfter === m.step) ctl.abort();
      },
    })
    .catch((error: unknown) => ({ status: 'threw' as const, error, steps: metrics.length }));
  const params = await e.buffers.readF32(model.lora!.params, model.lora!.n);
  const ck = checkpointBytes(await trainer.checkpoint(), { ...LORA, targets: [...LORA.targets] });
  trainer.destroy();
  model.destroy();
  return { end, metrics, params, ck, totalSteps: trainer.totalSteps };
}

it('SFT loss falls clearly, and two runs with one seed give identical adapters', async () => {
  const data = samples(6, MODEL.vocabSize, 1);
  const a = await train(CONFIG, data);
  expect(a.end).toEqual({ status: 'done', steps: 24 });
  expect(a.metrics.map((m) => m.step)).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
  const first = a.metrics[0].loss;
  const last = a.metrics.slice(-3).reduce((s, m) => s + m.loss, 0) / 3;
  expect(first).toBeGreaterThan(4); // ~log(256) for a random model
  expect(last).toBeLessThan(0.6 * first);
  for (const m of a.metrics) {
    expect(m.gradNorm).toBeGreaterThan(0);
    expect(m.samples).toHaveLength(2);
    expect(Number.isFinite(m.lr) && m.lr >= 0).toBe(true);
  }
  expect(a.metrics[1].lr).toBeGreaterThan(a.metrics[0].lr); // warm-up
  expect(a.metrics.at(-1)!.lr).toBeLessThan(a.metrics[5].lr); // cosine decay
  const b = await train(CONFIG, data);
  expect(b.params).toEqual(a.params);
  const other = await train({ ...CONFIG, seed: 6 }, data);
  expect(other.params).not.toEqual(a.params);
});

it('a checkpoint resumes to exactly the uninterrupted result', async () => {
  const data = samples(5, MODEL.vocabSize, 2);
  const config = { ...CONFIG, epochs: 4, batch: 2 }; // 10 steps, the last with one sample
  const full = await train(config, data);
  expect(full.end.steps).toBe(10);
  const part = await train(config, data, { stopAfter: 4 });
  expect(part.end).toEqual({ status: 'cancelled', steps: 4 });
  const resumed = await train(config, data, { resumeFrom: part.ck });
  expect(resumed.metrics.map((m) => m.step)).toEqual([5, 6, 7, 8, 9, 10]);
  expect(resumed.params).toEqual(full.params);
  expect(resumed.metrics.map((m) => m.loss)).toEqual(full.metrics.slice(4).map((m) => m.loss));
});

it('a non-finite loss stops the run and keeps the last good parameters', async () => {
  const data = samples(4, MODEL.vocabSize, 3);
  let calls = 0;
  const poisoned: TermsFn = (s, pass) => {
    const t = sftTerms(s, pass) as { kinds: ('likelihood' | 'unlikelihood')[]; weights: Float32Array };
    if (++calls === 7) t.weights[0] = Number.NaN; // 4th step's first sample
    return t;
  };
  const run = await train({ ...CONFIG, epochs: 3 }, data, { terms: poisoned });
  expect(run.end.status).toBe('non-finite');
  expect(run.end.steps).toBe(3);
  expect((run.end as { message: string }).message).toMatch(
    /^the loss of record \d \(id s\d\) is not finite at step 4; training stopped, the adapter keeps the parameters of step 3$/,
  );
  const clean = await train({ ...CONFIG, epochs: 3 }, data, { stopAfter: 3 });
  expect(run.params).toEqual(clean.params);
});

it('a command the GPU refused stops the run with a GpuCommandError and keeps the parameters of the step before', async () => {
  const data = samples(4, MODEL.vocabSize, 3);
  const own = await testGpu(); // the refusal stays recorded on its device
  try {
    const run = await train({ ...CONFIG, epochs: 3 }, data, {
      engine: own,
      onStep: (m) => {
        if (m.step === 2) own.ctx.device.createBuffer({ label: 'refused on purpose', size: 4, usage: 0 });
      },
    });
    expect(run.end.status).toBe('threw');
    expect((run.end as { error: unknown }).error).toBeInstanceOf(GpuCommandError);
    expect(run.metrics.map((m) => m.step)).toEqual([1, 2]);
    const clean = await train({ ...CONFIG, epochs: 3 }, data, { stopAfter: 2 });
    expect(run.params).toEqual(clean.params);
  } finally {
    own.destroy();
  }
});

it('peak GPU bytes of a training step on a 49152 vocabulary stay below tokens x vocab x 4 plus the model', async () => {
  const weights = makeTinyLlama({ ...MODEL, vocabSize: 49152, hiddenSize: 64, intermediateSize: 128 });
  const model = GpuLlama.create(g.ops, weights, 'q8', initLora(weights.config, { ...LORA, targets: [...LORA.targets] }, 1));
  const modelBytes = g.buffers.current;
  const data = samples(2, 49152, 4).map((s) => ({
    ...s,
    promptIds: s.promptIds.concat(s.promptIds, s.promptIds),
    responseIds: s.responseIds.concat(s.responseIds),
  }));
  const trainer = new Trainer(g, model, data, { ...CONFIG, epochs: 1, batch: 2 }, undefined, LORA.dropout);
  const metrics: StepMetrics[] = [];
  await trainer.run({ onStep: (m) => void metrics.push(m) });
  const T = Math.max(...data.map((s) => s.promptIds.length + s.responseIds.length - 1));
  expect(metrics).toHaveLength(1);
  expect(metrics[0].peakBytes).toBeLessThan(modelBytes + T * 49152 * 4);
  expect(g.buffers.largest).toBeLessThan(T * 49152 * 4);
  trainer.destroy();
  model.destroy();
});
