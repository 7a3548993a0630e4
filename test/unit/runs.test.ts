/**
 * The app's library of runs (src/storage/runs.ts) over in-memory stores that clone values in and out
 * as IndexedDB does: every run is kept, a run is stored once started, its checkpoint named only once
 * stored, the continue request rebuilt from the stored parts, entries renamed and deleted, imported
 * adapters kept beside runs, the records of earlier app versions moved in and read, and a write the
 * quota refuses stores nothing of itself (usage.ts).
 */
import { describe, expect, it } from 'vitest';
import { NlftError, StorageQuotaError } from '../../src/errors.ts';
import { DEFAULT_LORA } from '../../src/model/lora.ts';
import type { SaliencyEntry } from '../../src/nlft/method.ts';
import { DEFAULT_SALIENCY } from '../../src/nlft/saliency.ts';
import { DEFAULT_TEMPLATES } from '../../src/nlft/templates.ts';
import type { TrainRequest } from '../../src/session/requests.ts';
import {
  addStep,
  continueStep,
  entryName,
  type ImportedAdapter,
  type LibraryBackend,
  legacyRunWrite,
  memoryLibraryBackend,
  newRun,
  quotaExceeded,
  runFileKey,
  runStore,
  type RunStore,
  type StoredRun,
  valueBytes,
} from '../../src/storage/runs.ts';
import { guardQuota, libraryItems, quotaMessage, type StoredItem } from '../../src/storage/usage.ts';
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
async function startedRun(store: RunStore, startedAt = '2026-02-01T10:00:00.000Z'): Promise<StoredRun> {
  await store.start(runAt(startedAt), DATA.slice());
  return (await store.last())!;
}

/** A run the worker started at `startedAt` (4 steps on MODEL), not stored yet. */
function runAt(startedAt: string): StoredRun {
  return { ...newRun(request()), startedAt, totalSteps: 4, model: MODEL };
}

/**
 * `inner` with each commit ending a while after it was asked for, in the order asked, as
 * IndexedDB's transactions do (the values are copied when asked, as a `put` copies them).
 */
function laterBackend(inner: LibraryBackend): LibraryBackend {
  let last: Promise<unknown> = Promise.resolve();
  return {
    ...inner,
    commit(w) {
      const copy = structuredClone(w);
      const done = last.then(() => new Promise((ok) => setTimeout(ok, 5))).then(() => inner.commit(copy));
      last = done.catch(() => undefined);
      return done;
    },
  };
}

/**
 * `inner` behind a quota as full as Chromium's IndexedDB sees it: a commit that puts anything is
 * refused (a `StorageQuotaError`, as db.ts turns the browser's error), one that only deletes goes through.
 */
function fullBackend(inner: LibraryBackend): LibraryBackend {
  return {
    ...inner,
    commit: (w) =>
      guardQuota(
        'the run',
        async () => {
          if (w.put?.length || w.putFiles?.length) throw quotaExceeded('library');
          await inner.commit(w);
        },
        async () => [],
      ),
  };
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

/** An imported adapter entry (its files are stand-ins: the store keeps them as given). */
function imported(importedAt: string): ImportedAdapter {
  return {
    kind: 'imported',
    importedAt,
    name: null,
    folder: 'my-adapter',
    lora: { ...DEFAULT_LORA, r: 8, alpha: 16 },
    baseModel: 'org/base',
    checkedOn: 'demo',
    adapter: { 'adapter_config.json': '{}', 'adapter_model.safetensors': new Uint8Array(64) },
  };
}

/** Applies a write the way db.ts's upgrade step does, on a memory backend. */
async function migrated(last: unknown, dataset?: Uint8Array, checkpoint?: Uint8Array): Promise<LibraryBackend> {
  const backend = memoryLibraryBackend();
  await backend.commit(legacyRunWrite(last, dataset, checkpoint));
  return backend;
}

describe('run library', () => {
  it('keeps the request without its bytes, and continues a run only from a stored checkpoint', async () => {
    const backend = memoryLibraryBackend();
    const store = runStore(backend);
    expect(await store.last()).toBeUndefined();
    const run = await startedRun(store);
    expect(run.request.data).toEqual({ name: 'data.json', bytes: 4 });
    expect(run.request).not.toHaveProperty('resume');
    addStep(run, metrics(1), [entry('a', 1)]);
    await store.save(run);
    expect(continueStep(run)).toBeNull();
    expect((await rejection(store.resumeRequest(run))).code).toBe('stored-run');

    const checkpoint = new Uint8Array([9, 8, 7]);
    await store.saveCheckpoint(run, 1, checkpoint);
    const back = (await runStore(backend).last())!;
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

  it('keeps every run and imported adapter, newest first; renames and deletes one with its files', async () => {
    const backend = memoryLibraryBackend();
    const store = runStore(backend);
    const first = await startedRun(store, '2026-02-01T10:00:00.000Z');
    const second = await startedRun(store, '2026-02-02T10:00:00.000Z');
    await store.saveCheckpoint(first, 2, new Uint8Array([1, 2]));
    await store.addImported(imported('2026-02-03T10:00:00.000Z'));
    const list = await runStore(backend).list();
    expect(list.map((i) => [i.kind, i.id])).toEqual([
      ['imported', '2026-02-03T10:00:00.000Z'],
      ['run', second.startedAt],
      ['run', first.startedAt],
    ]);
    expect((await store.last())?.startedAt).toBe(second.startedAt);
    expect(entryName(list[0])).toMatch(/^my-adapter \(imported .+\)$/);
    expect(entryName(list[1])).toMatch(/^NLFT on data\.json, /);

    // A rename reaches the object a panel holds (it saves that object after every step).
    await store.rename(first.startedAt, '  baseline  ');
    expect(first.name).toBe('baseline');
    await store.save(first);
    const named = (await runStore(backend).get(first.startedAt))!;
    expect(entryName(named)).toBe('baseline');
    await store.rename('2026-02-03T10:00:00.000Z', 'from the lab');
    expect(entryName((await runStore(backend).get('2026-02-03T10:00:00.000Z'))!)).toBe('from the lab');
    expect((await rejection(store.rename('nope', 'x'))).message).toBe('No readable library entry nope to rename; reload the page.');

    await store.remove(first.startedAt);
    expect((await runStore(backend).list()).map((i) => i.id)).not.toContain(first.startedAt);
    expect(await backend.file(runFileKey(first.startedAt, 'dataset'))).toBeUndefined();
    expect(await backend.file(runFileKey(first.startedAt, 'checkpoint'))).toBeUndefined();
    expect(await backend.file(runFileKey(second.startedAt, 'dataset'))).toEqual(DATA);
  });

  it("deletes a run's checkpoint and says so in its record in the same write", async () => {
    const backend = memoryLibraryBackend();
    const store = runStore(backend);
    const run = await startedRun(store);
    await store.saveCheckpoint(run, 2, new Uint8Array([1]));
    expect(continueStep(run)).toBe(2);
    await store.removeFile(run.startedAt, 'checkpoint');
    expect(run.checkpointStep).toBeNull();
    const back = (await runStore(backend).get(run.startedAt))!;
    expect(back.kind === 'run' && back.run.checkpointStep).toBeNull();
  });

  it("deletes a run's checkpoint while the quota is full (the record's rewrite is refused, the delete is not); continuing then names it gone", async () => {
    const backend = memoryLibraryBackend();
    const run = await startedRun(runStore(backend));
    await runStore(backend).saveCheckpoint(run, 2, new Uint8Array([1]));
    const record = await backend.get(run.startedAt);
    const store = runStore(fullBackend(backend));
    const held = (await store.get(run.startedAt))!;
    expect(held.kind === 'run' && continueStep(held.run)).toBe(2);
    expect((await rejection(store.save(run))).code).toBe('storage-quota'); // the quota is full indeed
    await store.removeFile(run.startedAt, 'checkpoint');
    expect(await backend.file(runFileKey(run.startedAt, 'checkpoint'))).toBeUndefined();
    expect(await backend.file(runFileKey(run.startedAt, 'dataset'))).toEqual(DATA);
    expect(held.kind === 'run' && continueStep(held.run)).toBeNull();
    expect(await backend.get(run.startedAt)).toEqual(record); // not rewritten: it still names step 2
    const reread = (await runStore(backend).get(run.startedAt))!;
    expect(reread.kind === 'run' && continueStep(reread.run)).toBe(2);
    const e = await rejection(runStore(backend).resumeRequest(reread.kind === 'run' ? reread.run : run));
    expect(e.message).toBe('The checkpoint of this run is no longer stored in this browser; start a new run.');
    // Another failure than the quota's is not taken for it: the delete fails whole.
    const broken = runStore({ ...backend, commit: async () => Promise.reject(new Error('disk gone')) });
    await runStore(backend).saveCheckpoint(run, 3, new Uint8Array([1]));
    await expect(broken.removeFile(run.startedAt, 'checkpoint')).rejects.toThrow('disk gone');
    expect(await backend.file(runFileKey(run.startedAt, 'checkpoint'))).toEqual(new Uint8Array([1]));
  });

  it('names the missing part when a run cannot continue', async () => {
    const backend = memoryLibraryBackend();
    const run = await startedRun(runStore(backend));
    await runStore(backend).saveCheckpoint(run, 2, new Uint8Array([1]));
    await backend.commit({ removeFiles: [runFileKey(run.startedAt, 'dataset')] });
    const e = await rejection(runStore(backend).resumeRequest(run));
    expect(e.message).toBe('The data of this run is no longer stored in this browser; start a new run.');
  });

  it("never names a checkpoint in a record unless its bytes are stored, when writes end later as IndexedDB's do", async () => {
    // Room for the run, its data, a small checkpoint and its steps' metrics, not for a big checkpoint.
    const memory = memoryLibraryBackend(valueBytes(runAt('2026-02-01T10:00:00.000Z')) + DATA.byteLength + 2000);
    const store = runStore(laterBackend(memory));
    const run = await startedRun(store);
    addStep(run, metrics(1), []);
    await store.saveCheckpoint(run, 1, new Uint8Array(100));
    addStep(run, metrics(2), []);
    const refused = store.saveCheckpoint(run, 2, new Uint8Array(5000)); // the quota refuses it…
    addStep(run, metrics(3), []);
    const next = store.save(run); // …while the next step's record, asked for before that is known, fits
    expect(
      await refused.then(
        () => 'stored',
        () => 'refused',
      ),
    ).toBe('refused');
    await next;
    const back = (await runStore(memory).last())!;
    expect(back.metrics.map((m) => m.step)).toEqual([1, 2, 3]);
    expect(back.checkpointStep).toBe(1);
    expect(await memory.file(runFileKey(run.startedAt, 'checkpoint'))).toHaveLength(100);
    expect(run.checkpointStep).toBe(1);
  });

  it('continues a run from a checkpoint at its last step when its end (the adapter) was not stored: a reload came between', async () => {
    const store = runStore(memoryLibraryBackend());
    const run = await startedRun(store);
    await store.saveCheckpoint(run, 4, new Uint8Array([1]));
    expect(continueStep(run)).toBe(4);
    run.adapter = { 'adapter_config.json': '{}', 'adapter_model.safetensors': new Uint8Array(8) };
    run.status = 'cancelled';
    expect(continueStep(run)).toBeNull();
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

  it('moves the one run of the store before the library into it (version 5), with its data and checkpoint', async () => {
    const run = { ...newRun(request()), startedAt: '2026-01-05T00:00:00.000Z', status: 'cancelled', totalSteps: 4, model: MODEL };
    const { name: _n, ...before } = run; // runs before the library had no name
    const checkpoint = new Uint8Array([4, 4]);
    const backend = await migrated({ ...before, checkpointStep: 2 }, DATA.slice(), checkpoint);
    const back = (await runStore(backend).last())!;
    expect(back.startedAt).toBe(run.startedAt);
    expect(back.name).toBeNull();
    expect(continueStep(back)).toBe(2);
    const req = await runStore(backend).resumeRequest(back);
    expect(req.data.bytes).toEqual(DATA);
    expect(req.resume?.checkpoint).toEqual(checkpoint);
  });

  it('moves a run of the first stored shape (no model, checkpoint or NLFT options) and reads it with the defaults', async () => {
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
    const run = (await runStore(await migrated(old)).last())!;
    expect(run.request.saliency).toEqual(DEFAULT_SALIENCY);
    expect(run.request.templates).toEqual(DEFAULT_TEMPLATES);
    expect(run.request.memoryBudgetMiB).toBeNull();
    expect(run.model).toBeNull();
    expect(run.checkpointStep).toBeNull();
    expect(run.metrics).toHaveLength(2);
  });

  it('moves the dataset and checkpoint of a record that held them inline into their own entries', async () => {
    const { checkpointStep: _, ...rest } = newRun(request());
    const checkpoint = new Uint8Array([5, 6]);
    const backend = await migrated({
      ...rest,
      status: 'cancelled',
      totalSteps: 4,
      model: MODEL,
      dataset: DATA.slice(),
      checkpoint: { step: 3, bytes: checkpoint },
    });
    const run = (await runStore(backend).last())!;
    expect(run.checkpointStep).toBe(3);
    expect(run).not.toHaveProperty('dataset');
    expect(run).not.toHaveProperty('checkpoint');
    const req = await runStore(backend).resumeRequest(run);
    expect(req.data.bytes).toEqual(DATA);
    expect(req.resume?.checkpoint).toEqual(checkpoint);
  });

  it('lists a record it cannot read as unreadable, naming the field, and leaves it stored until deleted', async () => {
    const bad = { ...newRun(request()), startedAt: '2026-01-09T00:00:00.000Z', metrics: 'none' };
    const backend = await migrated(bad);
    const store = runStore(backend);
    const [item] = await store.list();
    expect(item.kind).toBe('unreadable');
    expect(item.kind === 'unreadable' && item.message).toBe(
      'The training run stored in this browser as 2026-01-09T00:00:00.000Z cannot be read (field "metrics": expected an array); it is left as it is: delete it in the Library.',
    );
    expect(await store.last()).toBeUndefined();
    expect(await backend.get(bad.startedAt)).toEqual(bad);
    await store.remove(bad.startedAt);
    expect(await store.list()).toEqual([]);
  });

  it('stores nothing of a write the quota refuses, names the biggest items, and takes the write once room is made', async () => {
    // Room for one run with its data and 500 bytes more.
    const backend = memoryLibraryBackend(valueBytes(runAt('2026-02-01T10:00:00.000Z')) + DATA.byteLength + 500);
    const store = runStore(backend);
    const run = await startedRun(store);
    const items = async (): Promise<StoredItem[]> => {
      const all = await backend.all();
      const sizes = new Map(all.map(([id]) => [id, 100]));
      return libraryItems(await store.list(), sizes, new Map([[runFileKey(run.startedAt, 'checkpoint'), 5000]]));
    };
    const before = await backend.all();
    const big = new Uint8Array(1000);
    const e = await guardQuota('the checkpoint', () => store.saveCheckpoint(run, 1, big), items).then(
      () => null,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(StorageQuotaError);
    expect((e as StorageQuotaError).code).toBe('storage-quota');
    expect((e as Error).message).toMatch(
      /^This browser's storage for the app is full: the checkpoint could not be saved \(nothing of it was written\)\. Delete something in the Storage view, then try again; the biggest items: Checkpoint of NLFT on data\.json, .+ \(4\.9 KiB\), NLFT on data\.json, .+ \(100 B\)\.$/,
    );
    // Neither the record nor the bytes were written: the record does not name a checkpoint that is not there.
    expect(await backend.all()).toEqual(before);
    expect(run.checkpointStep).toBeNull();
    expect(await backend.file(runFileKey(run.startedAt, 'checkpoint'))).toBeUndefined();

    await store.remove(run.startedAt);
    const again = await startedRun(store, '2026-03-01T00:00:00.000Z');
    await store.saveCheckpoint(again, 1, new Uint8Array(100));
    expect(again.checkpointStep).toBe(1);
    expect(quotaMessage('x', [])).toBe(
      "This browser's storage for the app is full: x could not be saved (nothing of it was written). Delete something in the Storage view, then try again.",
    );
  });
});
