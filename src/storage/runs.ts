/**
 * The library of training runs and imported adapters the app keeps across reloads, without any DOM.
 * Every run stays (settings, data name, metrics, saliency, adapter), each under its id, the time it
 * started (`startedAt`, also what an evaluation names as `adapter.runId`); an adapter imported from a
 * PEFT folder is an entry of its own under the time it was imported. A run's record is rewritten
 * after every step; its dataset's bytes (written once) and its latest checkpoint (written when the
 * worker sends one) are kept apart, because they are large and change rarely, so that a run
 * stopped or cut off by a reload continues.
 *
 * Records live in one store (`library` in the app's IndexedDB, see db.ts) and a run's bytes in
 * another (`runFiles`, under `<id>/dataset` and `<id>/checkpoint`). Every change is one
 * `LibraryBackend.commit`: one IndexedDB transaction, so a failed write (a full quota) or one a
 * reload cuts leaves nothing half-written. The changes go one at a time, in the order asked, each
 * composed when its turn comes, so a record never names a checkpoint whose bytes are not stored
 * (but one: a checkpoint deleted while the quota is full goes without its record's rewrite, which
 * the full quota refuses; continuing that run then says its checkpoint is gone).
 * Records written by earlier versions of the app are read and brought to the current shape
 * (`readStoredRun`); one that cannot be read is listed as unreadable, naming the field, never
 * dropped in silence.
 */
import { NlftError } from '../errors.ts';
import type { PeftAdapterFiles } from '../export/peft.ts';
import { DEFAULT_LORA, type LoraConfig } from '../model/lora.ts';
import type { SaliencyEntry, SaliencySummary } from '../nlft/method.ts';
import { DEFAULT_SALIENCY } from '../nlft/saliency.ts';
import { DEFAULT_TEMPLATES } from '../nlft/templates.ts';
import type { RunModel, TrainOutcome, TrainRequest } from '../session/requests.ts';
import { DEFAULT_TRAIN, type StepMetrics } from '../train/trainer.ts';
import { isRecord } from '../util/json.ts';

/** A training run as the app keeps it: enough to show its chart, saliency map and adapter after a reload, and to continue it. */
export interface StoredRun {
  /** The request without the dataset's bytes or a resume point (the dataset's name and size are kept). */
  request: Omit<TrainRequest, 'data' | 'resume'> & { data: { name: string; bytes: number } };
  /** When the worker started it (ISO time): the run's id in the library. */
  startedAt: string;
  /** The name the user gave it in the library, or null (then method, data and date name it). */
  name: string | null;
  /** 'running' read back after a reload means the page closed while it trained. */
  status: 'running' | TrainOutcome['status'] | 'error';
  message: string | null;
  totalSteps: number;
  metrics: StepMetrics[];
  /** The latest saliency entry of every record visited, in first-visit order. */
  saliency: SaliencyEntry[];
  summary: SaliencySummary | null;
  adapter: PeftAdapterFiles | null;
  /** The model trained (a run continues only on it), once the worker has said. */
  model: RunModel | null;
  /** The step of the latest checkpoint whose bytes are stored, or null. */
  checkpointStep: number | null;
}

/** A PEFT adapter trained elsewhere, imported from its folder after the worker checked it against the loaded model. */
export interface ImportedAdapter {
  kind: 'imported';
  /** When it was imported (ISO time): its id in the library. */
  importedAt: string;
  name: string | null;
  /** The picked folder's name. */
  folder: string;
  /** Its LoRA settings, read from `adapter_config.json`. */
  lora: LoraConfig;
  /** `base_model_name_or_path` of its config. */
  baseModel: string | null;
  /** The loaded model it was checked against (its id). */
  checkedOn: string;
  adapter: PeftAdapterFiles;
}

/** One entry of the library: a run trained here, an imported adapter, or a stored record that cannot be read. */
export type LibraryItem =
  | { kind: 'run'; id: string; run: StoredRun }
  | { kind: 'imported'; id: string; imported: ImportedAdapter }
  | { kind: 'unreadable'; id: string; message: string };

/** A run's bytes kept apart from its record. */
export type RunFile = 'dataset' | 'checkpoint';

/** The key of a run's bytes in the backend's file store. */
export const runFileKey = (id: string, file: RunFile): string => `${id}/${file}`;

/** One change of the library, applied all or nothing. */
export interface LibraryWrite {
  put?: Array<[id: string, record: unknown]>;
  remove?: string[];
  putFiles?: Array<[key: string, bytes: Uint8Array]>;
  removeFiles?: string[];
}

/** What the library needs from its backing stores (IndexedDB's `library` and `runFiles`, or memory). */
export interface LibraryBackend {
  /** Every record with its id. */
  all(): Promise<Array<[string, unknown]>>;
  get(id: string): Promise<unknown>;
  /** The bytes under `key`, or undefined. */
  file(key: string): Promise<Uint8Array | undefined>;
  /** Applies `w` in one transaction: on any failure (a full quota) nothing of it is stored, and the error is thrown. */
  commit(w: LibraryWrite): Promise<void>;
}

/** Where the page keeps its runs and imported adapters. */
export interface RunStore {
  /** Every entry, newest first. */
  list(): Promise<LibraryItem[]>;
  /** The entry under `id`, or undefined. */
  get(id: string): Promise<LibraryItem | undefined>;
  /** The newest readable run, or undefined when none is stored. */
  last(): Promise<StoredRun | undefined>;
  /** Stores `run`'s record (its dataset and checkpoint are stored apart). */
  save(run: StoredRun): Promise<void>;
  /** Stores a run the worker has started, with its dataset's bytes (which the caller must not transfer or change afterwards). */
  start(run: StoredRun, dataset: Uint8Array): Promise<void>;
  /** Stores a checkpoint's bytes and names its step in `run`'s record, in one write. */
  saveCheckpoint(run: StoredRun, step: number, bytes: Uint8Array): Promise<void>;
  /**
   * The request that continues `run` from its stored checkpoint, with its stored dataset.
   * @throws NlftError (`stored-run`) when the run has no checkpoint, or its data or checkpoint is no longer stored
   */
  resumeRequest(run: StoredRun): Promise<TrainRequest>;
  /** Stores an imported adapter as a new entry. */
  addImported(entry: ImportedAdapter): Promise<void>;
  /**
   * Gives an entry a name (empty: back to the default name).
   * @throws NlftError (`stored-run`) when no readable entry has that id
   */
  rename(id: string, name: string): Promise<void>;
  /** Deletes an entry with its dataset and checkpoint. */
  remove(id: string): Promise<void>;
  /**
   * Deletes a run's dataset or checkpoint (the run can no longer continue); the record says so in
   * the same write, or, when the quota is full (it refuses the record's rewrite, never a delete), the
   * bytes are deleted alone and only the run object in memory says so.
   */
  removeFile(id: string, file: RunFile): Promise<void>;
}

/** A new record for `request`, started now (its dataset's bytes are not part of it). */
export function newRun(request: TrainRequest): StoredRun {
  const { data, resume: _, ...settings } = request;
  return {
    request: { ...settings, data: { name: data.name, bytes: data.bytes.byteLength } },
    startedAt: new Date().toISOString(),
    name: null,
    status: 'running',
    message: null,
    totalSteps: 0,
    metrics: [],
    saliency: [],
    summary: null,
    adapter: null,
    model: null,
    checkpointStep: null,
  };
}

/** Adds one optimizer step to `run`: its metrics, and the saliency entries of its visits (a record's latest visit replaces the earlier). */
export function addStep(run: StoredRun, metrics: StepMetrics, entries: readonly SaliencyEntry[]): void {
  run.metrics.push(metrics);
  const byId = new Map(run.saliency.map((e) => [e.id, e]));
  for (const e of entries) byId.set(e.id, e);
  run.saliency = [...byId.values()];
}

/**
 * The step `run` can continue from (its checkpoint's), or null when it is finished or has nothing
 * to continue from. A checkpoint at the last step counts while the run's adapter is not stored (a
 * reload came between its last checkpoint and its end): continuing ends it and stores the adapter.
 */
export function continueStep(run: StoredRun): number | null {
  const step = run.checkpointStep;
  const left = step !== null && (step < run.totalSteps || run.adapter === null);
  return left && run.model !== null && run.status !== 'done' ? step : null;
}

/** The name an entry is shown under: the user's, else what it is and when. */
export function entryName(item: LibraryItem): string {
  if (item.kind === 'unreadable') return `Unreadable record of ${item.id}`;
  const when = new Date(item.id).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
  if (item.kind === 'imported') return item.imported.name ?? `${item.imported.folder} (imported ${when})`;
  const r = item.run;
  return r.name ?? `${r.request.method.toUpperCase()} on ${r.request.data.name}, ${when}`;
}

/**
 * Reads a stored run record, in the current shape or an earlier one, and brings it to the current
 * shape. The earlier shapes: the first stored runs had no `model`, no checkpoint, no `message`
 * default, and a request without `saliency` and `templates` (the NLFT options were not editable
 * yet): they get none, none, and the defaults; a request without `memoryBudgetMiB` had no budget;
 * runs before the library had no `name`.
 *
 * @throws NlftError (`stored-run`) naming the first field that is missing or of another type
 */
export function readStoredRun(value: unknown, id: string): StoredRun {
  const unreadable = (field: string, expected: string) =>
    new NlftError(
      `The training run stored in this browser as ${id} cannot be read (field "${field}": expected ${expected}); it is left as it is: delete it in the Library.`,
      'stored-run',
    );
  if (!isRecord(value)) throw unreadable('(record)', 'an object');
  const req = value.request;
  if (!isRecord(req)) throw unreadable('request', 'an object');
  if (req.method !== 'nlft' && req.method !== 'sft') throw unreadable('request.method', '"nlft" or "sft"');
  if (!isRecord(req.train)) throw unreadable('request.train', 'an object');
  if (!isRecord(req.lora)) throw unreadable('request.lora', 'an object');
  if (!isRecord(req.data) || typeof req.data.name !== 'string') throw unreadable('request.data.name', 'a string');
  for (const field of ['metrics', 'saliency'] as const) if (!Array.isArray(value[field])) throw unreadable(field, 'an array');
  if (typeof value.status !== 'string') throw unreadable('status', 'a string');
  if (typeof value.totalSteps !== 'number') throw unreadable('totalSteps', 'a number');
  if (typeof value.startedAt !== 'string') throw unreadable('startedAt', 'a string');
  const current = value as unknown as StoredRun;
  const request = current.request;
  return {
    ...current,
    request: {
      ...request,
      train: { ...DEFAULT_TRAIN, ...request.train },
      lora: { ...DEFAULT_LORA, ...request.lora },
      saliency: { ...DEFAULT_SALIENCY, ...request.saliency },
      templates: request.templates ?? DEFAULT_TEMPLATES,
      memoryBudgetMiB: request.memoryBudgetMiB ?? null,
    },
    name: typeof current.name === 'string' ? current.name : null,
    message: current.message ?? null,
    summary: current.summary ?? null,
    adapter: current.adapter ?? null,
    model: current.model ?? null,
    checkpointStep: typeof current.checkpointStep === 'number' ? current.checkpointStep : null,
  };
}

/** Reads a stored record of any kind; never throws (an unreadable record becomes an `unreadable` item). */
function readItem(id: string, value: unknown): LibraryItem {
  if (isRecord(value) && value.kind === 'imported') {
    const a = value as unknown as ImportedAdapter;
    if (!isRecord(a.adapter) || !isRecord(a.lora) || typeof a.folder !== 'string')
      return { kind: 'unreadable', id, message: `The imported adapter stored as ${id} cannot be read (its adapter files are missing).` };
    return { kind: 'imported', id, imported: { ...a, name: typeof a.name === 'string' ? a.name : null } };
  }
  try {
    return { kind: 'run', id, run: readStoredRun(value, id) };
  } catch (e) {
    return { kind: 'unreadable', id, message: e instanceof Error ? e.message : String(e) };
  }
}

/**
 * The write that moves the one run an app before the library kept (the `runs` store's `last`,
 * `last:dataset` and `last:checkpoint`) into the library, under its start time. The oldest
 * shapes kept the dataset (`dataset`) and the checkpoint (`checkpoint: {step, bytes}`) inside the
 * record: they are moved apart too. A record that cannot be read moves as it is (the library lists
 * it as unreadable, under `earlier-run` when it has no start time).
 */
export function legacyRunWrite(last: unknown, dataset: unknown, checkpoint: unknown): LibraryWrite {
  if (!isRecord(last)) return { put: [['earlier-run', last]] };
  const id = typeof last.startedAt === 'string' ? last.startedAt : 'earlier-run';
  const { dataset: inlineData, checkpoint: inlineCheckpoint, ...record } = last;
  const legacy = isRecord(inlineCheckpoint) && inlineCheckpoint.bytes instanceof Uint8Array ? inlineCheckpoint : null;
  const data = dataset instanceof Uint8Array ? dataset : inlineData instanceof Uint8Array ? inlineData : null;
  const ck = checkpoint instanceof Uint8Array ? checkpoint : legacy ? (legacy.bytes as Uint8Array) : null;
  if (legacy && typeof record.checkpointStep !== 'number') record.checkpointStep = Number(legacy.step);
  const putFiles: Array<[string, Uint8Array]> = [];
  if (data) putFiles.push([runFileKey(id, 'dataset'), data]);
  if (ck) putFiles.push([runFileKey(id, 'checkpoint'), ck]);
  return { put: [[id, record]], putFiles };
}

/** The run store over `backend`. A run's record object is shared by everyone who asked for it, so a rename reaches a run being trained. */
export function runStore(backend: LibraryBackend): RunStore {
  /** The run objects handed out, by id (one object per run). */
  const live = new Map<string, StoredRun>();
  const shared = (item: LibraryItem): LibraryItem => {
    if (item.kind !== 'run') return item;
    const known = live.get(item.id);
    if (known) return { ...item, run: known };
    live.set(item.id, item.run);
    return item;
  };
  const bytesAt = async (key: string) => backend.file(key);
  /** The last change asked for: each waits for the one before, then is composed, committed, and `after` runs. */
  let queue: Promise<unknown> = Promise.resolve();
  const write = (compose: () => LibraryWrite, after?: () => void): Promise<void> => {
    const done = queue.then(async () => {
      await backend.commit(compose());
      after?.();
    });
    queue = done.catch(() => undefined);
    return done;
  };
  const store: RunStore = {
    async list() {
      const all = await backend.all();
      return all.map(([id, value]) => shared(readItem(id, value))).sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    },
    async get(id) {
      const value = await backend.get(id);
      return value === undefined ? undefined : shared(readItem(id, value));
    },
    async last() {
      const item = (await store.list()).find((i) => i.kind === 'run');
      return item?.kind === 'run' ? item.run : undefined;
    },
    save: (run) => write(() => ({ put: [[run.startedAt, run]] })),
    start(run, dataset) {
      live.set(run.startedAt, run);
      return write(() => ({ put: [[run.startedAt, run]], putFiles: [[runFileKey(run.startedAt, 'dataset'), dataset]] }));
    },
    saveCheckpoint: (run, step, bytes) =>
      // Named in the object once stored, so the records written after it (the next steps') name it too.
      write(
        () => ({ put: [[run.startedAt, { ...run, checkpointStep: step }]], putFiles: [[runFileKey(run.startedAt, 'checkpoint'), bytes]] }),
        () => void (run.checkpointStep = step),
      ),
    async resumeRequest(run) {
      const step = continueStep(run);
      if (step === null || run.model === null)
        throw new NlftError('This run has no checkpoint to continue from (or it is finished); start a new run.', 'stored-run');
      const [dataset, checkpoint] = await Promise.all([
        bytesAt(runFileKey(run.startedAt, 'dataset')),
        bytesAt(runFileKey(run.startedAt, 'checkpoint')),
      ]);
      if (!dataset || !checkpoint)
        throw new NlftError(
          `The ${dataset ? 'checkpoint' : 'data'} of this run is no longer stored in this browser; start a new run.`,
          'stored-run',
        );
      const { data, ...settings } = run.request;
      return { ...settings, data: { name: data.name, bytes: dataset }, resume: { checkpoint, model: run.model } };
    },
    addImported: (entry) => write(() => ({ put: [[entry.importedAt, entry]] })),
    async rename(id, name) {
      const item = await store.get(id);
      if (!item || item.kind === 'unreadable')
        throw new NlftError(`No readable library entry ${id} to rename; reload the page.`, 'stored-run');
      const named = name.trim() === '' ? null : name.trim();
      if (item.kind === 'run') {
        const run = item.run;
        await write(
          () => ({ put: [[id, { ...run, name: named }]] }),
          () => void (run.name = named),
        );
      } else await write(() => ({ put: [[id, { ...item.imported, name: named }]] }));
    },
    remove: (id) =>
      write(
        () => ({ remove: [id], removeFiles: [runFileKey(id, 'dataset'), runFileKey(id, 'checkpoint')] }),
        () => void live.delete(id),
      ),
    async removeFile(id, file) {
      const item = await store.get(id);
      const key = runFileKey(id, file);
      if (item?.kind !== 'run' || file === 'dataset') return write(() => ({ removeFiles: [key] }));
      const run = item.run;
      const forget = () => void (run.checkpointStep = null);
      await write(() => ({ put: [[id, { ...run, checkpointStep: null }]], removeFiles: [key] }), forget).catch(async (e: unknown) => {
        // A full quota refuses any write that puts a value, the record's rewrite too, but never a delete: the bytes go alone.
        if (!isQuotaError(e) && !(e instanceof NlftError && e.code === 'storage-quota')) throw e;
        await write(() => ({ removeFiles: [key] }), forget);
      });
    },
  };
  return store;
}

/** A stored value's size in bytes, near enough to rank items (typed arrays exactly, text as UTF-16). */
export function valueBytes(v: unknown): number {
  if (ArrayBuffer.isView(v)) return v.byteLength;
  if (v instanceof ArrayBuffer) return v.byteLength;
  if (typeof v === 'string') return 2 * v.length;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return 8;
  if (Array.isArray(v)) return v.reduce((n: number, x) => n + valueBytes(x), 8);
  if (isRecord(v)) return Object.entries(v).reduce((n, [k, x]) => n + 2 * k.length + valueBytes(x), 8);
  return 0;
}

/** The error a browser throws when a write would go over its storage quota. */
export function quotaExceeded(what: string): DOMException {
  return new DOMException(`${what}: the storage quota is full`, 'QuotaExceededError');
}

/** Whether `e` is the browser refusing a write for lack of quota (as IndexedDB or idb reports it). */
export function isQuotaError(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'QuotaExceededError';
}

/**
 * The library's stores in memory, copying values in and out as IndexedDB does: the fallback when
 * IndexedDB cannot be opened. With `quotaBytes`, a commit that would hold more than that (by
 * `valueBytes`) fails with a QuotaExceededError and stores nothing, as a full browser quota does.
 */
export function memoryLibraryBackend(quotaBytes = Number.POSITIVE_INFINITY): LibraryBackend {
  let records = new Map<string, unknown>();
  let files = new Map<string, Uint8Array>();
  const size = () => [...records.values(), ...files.values()].reduce((n: number, v) => n + valueBytes(v), 0);
  return {
    all: async () => [...records].map(([id, v]) => [id, structuredClone(v)] as [string, unknown]),
    get: async (id) => structuredClone(records.get(id)),
    file: async (key) => structuredClone(files.get(key)),
    async commit(w) {
      const [r0, f0] = [records, files];
      records = new Map(records);
      files = new Map(files);
      for (const [id, v] of w.put ?? []) records.set(id, structuredClone(v));
      for (const id of w.remove ?? []) records.delete(id);
      for (const [k, b] of w.putFiles ?? []) files.set(k, b.slice());
      for (const k of w.removeFiles ?? []) files.delete(k);
      if (size() > quotaBytes) {
        [records, files] = [r0, f0];
        throw quotaExceeded('library');
      }
    },
  };
}

/** The two operations a small key-value store offers (the `runs` object store of evaluations and scores, or a Map). */
export interface KeyValueStore {
  /** The value under `key`, or undefined. */
  get(key: string): Promise<unknown>;
  put(key: string, value: unknown): Promise<void>;
}

/** A key-value store in memory, copying values in and out as IndexedDB does (the fallback when IndexedDB cannot be opened). */
export function memoryKeyValueStore(): KeyValueStore {
  const values = new Map<string, unknown>();
  return {
    get: async (key) => structuredClone(values.get(key)),
    put: async (key, value) => void values.set(key, structuredClone(value)),
  };
}
