/**
 * The app's run store (src/storage/runs.ts) over an in-memory key-value store that clones values in
 * and out as IndexedDB does: a run is stored once started, its checkpoint named only once stored,
 * the continue request rebuilt from the stored parts, and the records of earlier app versions read.
 */
import { describe, expect, it } from 'vitest';
import { NlftError } from '../../src/errors.ts';
import { DEFAULT_LORA } from '../../src/model/lora.ts';
import type { SaliencyEntry } from '../../src/nlft/method.ts';
import { DEFAULT_SALIENCY } from '../../src/nlft/saliency.ts';
import { DEFAULT_TEMPLATES } from '../../src/nlft/templates.ts';
import type { TrainRequest } from '../../src/session/requests.ts';
import {
  addStep,
  continueStep,
  memoryKeyValueStore,
  newRun,
  runStore,
  type KeyValueStore,
  type StoredRun,
} from '../../src/storage/runs.ts';
import { DEFAULT_TRAIN, type StepMetrics } from '../../src/train/trainer.ts';

const MODEL = { id: 'demo', quant: 'q8' as const };
const DATA = new Uint8Array([1, 2, 3, 4]);

function request(): TrainRequest {
  return {
    method: 'nlft',
    train: { ...DEFAULT_TRAIN, epochs: 1 },
    lora: { ...DEFAULT_LORA, r: 4, alpha: 4 },
    maxLen: 512,
    saliency: { ...DEFAULT_SALIENCY, rho: 1.2 },
    templates: DEFAULT_TEMPLATES,
    memoryBudgetMiB: null,
    data: { name: 'data.json', bytes: DATA.slice() },
  };
}

function metrics(step: number): StepMetrics {
  return { step, totalSteps: 4, epoch: 0, loss: 1 / step, tokens: 10, ms: 5, lr: 1e-3, gradNorm: 0.5, peakBytes: 100, samples: [] };
}

function entry(id: string, step: number): SaliencyEntry {
  return { id, index: 1, polarity: 'negative', step, loss: 1, unlikelyFraction: 0, sixPercentRule: false, skipped: false, tokens: [] };
}

/** A run the worker started (4 steps on MODEL) and stored with its data. */
async function startedRun(kv: KeyValueStore): Promise<StoredRun> {
  const run = newRun(request());
  run.totalSteps = 4;
  run.model = MODEL;
  await runStore(kv).start(run, DATA.slice());
  return run;
}

/** The error `promise` rejects with. */
async function rejection(promise: Promise<unknown>): Promise<NlftError> {
  const e = await promise.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(NlftError);
  return e as NlftError;
}

describe('run store', () => {
  it('keeps the request without its bytes, and continues a run only from a stored checkpoint', async () => {
    const kv = memoryKeyValueStore();
    const store = runStore(kv);
    expect(await store.last()).toBeUndefined();
    const run = await startedRun(kv);
    expect(run.request.data).toEqual({ name: 'data.json', bytes: 4 });
    expect(run.request).not.toHaveProperty('resume');
    addStep(run, metrics(1), [entry('a', 1)]);
    await store.save(run);
    expect(continueStep(run)).toBeNull();
    expect((await rejection(store.resumeRequest(run))).code).toBe('stored-run');

    const checkpoint = new Uint8Array([9, 8, 7]);
    await store.saveCheckpoint(run, 1, checkpoint);
    const back = (await store.last())!;
    expect(back).toEqual(run);
    expect(back.checkpointStep).toBe(1);
    expect(continueStep(back)).toBe(1);
    const req = await store.resumeRequest(back);
    expect(req.data).toEqual({ name: 'data.json', bytes: DATA });
    expect(req.resume).toEqual({ checkpoint, model: MODEL });
    expect(req.saliency.rho).toBe(1.2);

    back.status = 'done';
    expect(continueStep(back)).toBeNull();
  });

  it('names the missing part when a run cannot continue', async () => {
    const kv = memoryKeyValueStore();
    const run = await startedRun(kv);
    await runStore(kv).saveCheckpoint(run, 2, new Uint8Array([1]));
    await kv.put('last:dataset', undefined);
    const e = await rejection(runStore(kv).resumeRequest(run));
    expect(e.message).toBe('The data of this run is no longer stored in this browser; start a new run.');
  });

  it("keeps a record's latest saliency entry per record, in first-visit order", () => {
    const run = newRun(request());
    addStep(run, metrics(1), [entry('a', 1), entry('b', 1)]);
    addStep(run, metrics(2), [entry('c', 2), entry('a', 2)]);
    expect(run.saliency.map((e) => [e.id, e.step])).toEqual([
      ['a', 2],
      ['b', 1],
      ['c', 2],
    ]);
    expect(run.metrics.map((m) => m.step)).toEqual([1, 2]);
  });

  it('reads a run of the first stored shape (no model, checkpoint or NLFT options) with the defaults', async () => {
    const kv = memoryKeyValueStore();
    const { saliency: _s, templates: _t, memoryBudgetMiB: _m, ...oldRequest } = newRun(request()).request;
    const old = {
      request: oldRequest,
      startedAt: '2026-01-01T00:00:00.000Z',
      status: 'done',
      message: null,
      totalSteps: 2,
      metrics: [metrics(1), metrics(2)],
      saliency: [entry('a', 1)],
      summary: null,
      adapter: null,
    };
    await kv.put('last', old);
    const run = (await runStore(kv).last())!;
    expect(run.request.saliency).toEqual(DEFAULT_SALIENCY);
    expect(run.request.templates).toEqual(DEFAULT_TEMPLATES);
    expect(run.request.memoryBudgetMiB).toBeNull();
    expect(run.model).toBeNull();
    expect(run.checkpointStep).toBeNull();
    expect(run.metrics).toHaveLength(2);
  });

  it('moves the dataset and checkpoint of a record that held them inline into their own entries', async () => {
    const kv = memoryKeyValueStore();
    const current = newRun(request());
    const { checkpointStep: _, ...rest } = current;
    const checkpoint = new Uint8Array([5, 6]);
    await kv.put('last', {
      ...rest,
      status: 'cancelled',
      totalSteps: 4,
      model: MODEL,
      dataset: DATA.slice(),
      checkpoint: { step: 3, bytes: checkpoint },
    });
    const run = (await runStore(kv).last())!;
    expect(run.checkpointStep).toBe(3);
    expect(run).not.toHaveProperty('dataset');
    expect(run).not.toHaveProperty('checkpoint');
    expect(await kv.get('last')).not.toHaveProperty('dataset');
    const req = await runStore(kv).resumeRequest(run);
    expect(req.data.bytes).toEqual(DATA);
    expect(req.resume?.checkpoint).toEqual(checkpoint);
  });

  it('reports a record it cannot read, naming the field, and leaves it stored', async () => {
    const kv = memoryKeyValueStore();
    const bad = { ...newRun(request()), metrics: 'none' };
    await kv.put('last', bad);
    const e = await rejection(runStore(kv).last());
    expect(e.code).toBe('stored-run');
    expect(e.message).toContain('(field "metrics": expected an array)');
    expect(await kv.get('last')).toEqual(bad);
  });
});
