/**
 * The app's IndexedDB database (through `idb`). Version 1 holds one key-value store of small
 * settings that survive a reload; version 2 adds the per-adapter kernel tuning choices (written by
 * the trainer worker); version 3 the last training run (settings, metrics, saliency, adapter);
 * version 4 the model files downloaded from the Hub; version 5 the library of every run and
 * imported adapter (`library`) with the runs' datasets and checkpoints (`runFiles`), and moves the
 * one run version 3 kept into it (runs.ts, `legacyRunWrite`). The `runs` store now holds the
 * evaluation history and the saliency explorer's last scoring (explorer.ts). Version 6 adds the
 * datasets prepared in the app (`datasets`, datasets.ts).
 * Later versions add object stores in `upgrade`, keyed on the old version.
 * The page and the worker open it with the same version.
 *
 * Every write goes through `guardQuota` (usage.ts): when the browser's quota refuses it, the error
 * says what was being saved and names the biggest stored items. Each write is one transaction, so
 * a refused write stores nothing of itself.
 */
import { openDB, type DBSchema, type IDBPDatabase, type IDBPTransaction, type StoreNames } from 'idb';
import type { TuningCache } from '../engine/tune.ts';
import type { FileCache } from '../model/hub.ts';
import type { EvalOutcome } from '../session/requests.ts';
import { isQuantFormat, type QuantFormat } from '../model/quant.ts';
import { type DatasetStore, datasetStore, DRAFT_ID, isPreparedDataset, memoryDatasetBackend } from './datasets.ts';
import { EXPLORER_KEYS, explorerStore, type ExplorerStore } from './explorer.ts';
import {
  type KeyValueStore,
  type LibraryBackend,
  legacyRunWrite,
  memoryKeyValueStore,
  memoryLibraryBackend,
  type RunStore,
  runStore,
  valueBytes,
} from './runs.ts';
import { guardQuota, libraryItems, type StoredItem } from './usage.ts';

/** What the playground remembers across reloads. */
export interface PlaygroundDraft {
  prompt: string;
  response: string;
  chat: boolean;
  /** The system turn under the chat template ('' or absent: none). */
  system?: string;
}

/** What the Evaluate panel remembers: its system text, or null to follow the last run's base text. */
export interface EvalDraft {
  system: string | null;
}

/** What the Compare view remembers: the evaluations it compares (their `at` times) and its grid filter. */
export interface CompareSelection {
  evals: string[];
  /** Show only the items where the evaluations disagree. */
  disagreeOnly: boolean;
}

/**
 * The model to load at start: the toy-math demo, the stress model, or a Hub repository (a picked
 * folder cannot be reopened without the user).
 */
export type ModelChoice = { kind: 'demo' } | { kind: 'stress' } | { kind: 'hub'; id: string; baseUrl: string };

/**
 * The Prepare panel's judge: the template, or an OpenAI-compatible endpoint. `apiKey` is here only
 * when the user asked to remember it on this device; otherwise the key lives in the page's memory.
 */
export interface JudgeSettings {
  kind: 'template' | 'chat';
  url: string;
  model: string;
  apiKey?: string;
}

/** Every setting the app stores, by key. */
export interface Settings {
  model: ModelChoice;
  quant: QuantFormat;
  playground: PlaygroundDraft;
  /** Index of the dataset record picked last. */
  pickedRecord: number;
  evalDraft: EvalDraft;
  compareView: CompareSelection;
  judge: JudgeSettings;
}

/** Typed access to the settings; `get` resolves undefined for a key never set or stored in another shape. */
export interface SettingsStore {
  get<K extends keyof Settings>(key: K): Promise<Settings[K] | undefined>;
  set<K extends keyof Settings>(key: K, value: Settings[K]): Promise<void>;
}

interface StudioSchema extends DBSchema {
  settings: { key: keyof Settings; value: Settings[keyof Settings] };
  /** tuningKey(adapter, model widths, format) -> the tile shapes measured there. */
  tuning: { key: string; value: unknown };
  /** The evaluations (`evals`) and the explorer's scores (`explorer`, `explorer:options`); before version 5 also the last run. */
  runs: { key: string; value: unknown };
  /** `<org>/<name>/<revision>/<file>` -> the file's bytes (see src/model/hub.ts). */
  files: { key: string; value: Uint8Array };
  /** Library entry id -> a run's record or an imported adapter (see runs.ts). */
  library: { key: string; value: unknown };
  /** `<id>/dataset`, `<id>/checkpoint` -> a run's bytes. */
  runFiles: { key: string; value: Uint8Array };
  /** A prepared dataset's id -> the dataset (see datasets.ts). */
  datasets: { key: string; value: unknown };
}

/** Shape checks for stored values (an older build, or another tab, may have written something else). */
const VALID: { [K in keyof Settings]: (v: unknown) => v is Settings[K] } = {
  model: (v): v is ModelChoice => {
    const m = v as Partial<{ kind: string; id: unknown; baseUrl: unknown }> | null;
    return (
      typeof m === 'object' &&
      m !== null &&
      (m.kind === 'demo' || m.kind === 'stress' || (m.kind === 'hub' && typeof m.id === 'string' && typeof m.baseUrl === 'string'))
    );
  },
  quant: isQuantFormat,
  playground: (v): v is PlaygroundDraft => {
    const d = v as Partial<PlaygroundDraft> | null;
    return (
      typeof d === 'object' && d !== null && typeof d.prompt === 'string' && typeof d.response === 'string' && typeof d.chat === 'boolean'
    );
  },
  pickedRecord: (v): v is number => Number.isInteger(v) && (v as number) >= 0,
  evalDraft: (v): v is EvalDraft => {
    const d = v as Partial<EvalDraft> | null;
    return typeof d === 'object' && d !== null && (d.system === null || typeof d.system === 'string');
  },
  compareView: (v): v is CompareSelection => {
    const c = v as Partial<CompareSelection> | null;
    return (
      typeof c === 'object' &&
      c !== null &&
      Array.isArray(c.evals) &&
      c.evals.every((at) => typeof at === 'string') &&
      typeof c.disagreeOnly === 'boolean'
    );
  },
  judge: (v): v is JudgeSettings => {
    const j = v as Partial<JudgeSettings> | null;
    return (
      typeof j === 'object' &&
      j !== null &&
      (j.kind === 'template' || j.kind === 'chat') &&
      typeof j.url === 'string' &&
      typeof j.model === 'string' &&
      (j.apiKey === undefined || typeof j.apiKey === 'string')
    );
  },
};

/** Name of the app's database. */
const DB_NAME = 'nlft-studio';
const DB_VERSION = 6;

type StudioDb = IDBPDatabase<StudioSchema>;
type UpgradeTransaction = IDBPTransaction<StudioSchema, ArrayLike<StoreNames<StudioSchema>>, 'versionchange'>;

/** Settings kept in IndexedDB. */
class IdbSettingsStore implements SettingsStore {
  constructor(private readonly db: StudioDb) {}

  async get<K extends keyof Settings>(key: K): Promise<Settings[K] | undefined> {
    const value: unknown = await this.db.get('settings', key);
    return VALID[key](value) ? value : undefined;
  }

  async set<K extends keyof Settings>(key: K, value: Settings[K]): Promise<void> {
    await guarded(this.db, `the setting "${key}"`, () => this.db.put('settings', value, key));
  }
}

/** Version 5's step: the one run kept under `last` in `runs` (and its bytes) moves into the library, in the upgrade's transaction. */
async function moveLastRun(tx: UpgradeTransaction): Promise<void> {
  const runs = tx.objectStore('runs');
  const [last, dataset, checkpoint] = await Promise.all([runs.get('last'), runs.get('last:dataset'), runs.get('last:checkpoint')]);
  if (last === undefined) return;
  const w = legacyRunWrite(last, dataset, checkpoint);
  await Promise.all([
    ...(w.put ?? []).map(([id, record]) => tx.objectStore('library').put(record, id)),
    ...(w.putFiles ?? []).map(([key, bytes]) => tx.objectStore('runFiles').put(bytes, key)),
    ...['last', 'last:dataset', 'last:checkpoint'].map((key) => runs.delete(key)),
  ]);
}

function openStudioDb(): Promise<StudioDb> {
  return openDB<StudioSchema>(DB_NAME, DB_VERSION, {
    upgrade(db, oldVersion, _newVersion, tx) {
      if (oldVersion < 1) db.createObjectStore('settings');
      if (oldVersion < 2) db.createObjectStore('tuning');
      if (oldVersion < 3) db.createObjectStore('runs');
      if (oldVersion < 4) db.createObjectStore('files');
      if (oldVersion < 5) {
        db.createObjectStore('library');
        db.createObjectStore('runFiles');
        if (oldVersion >= 3) void moveLastRun(tx);
      }
      if (oldVersion < 6) db.createObjectStore('datasets');
    },
  });
}

/** Runs a write of `what`; a refused quota becomes a `StorageQuotaError` naming the biggest items (see usage.ts). */
function guarded<T>(db: StudioDb, what: string, write: () => Promise<T>): Promise<T> {
  return guardQuota(what, write, () => storedItems(db));
}

/** The `runs` object store (the evaluations, the explorer's scores) as a key-value store; `what` names a write in a quota error. */
function objectStore(db: StudioDb, what: string): KeyValueStore {
  return { get: (key) => db.get('runs', key), put: (key, value) => guarded(db, what, async () => void (await db.put('runs', value, key))) };
}

/** The library's stores in IndexedDB: each commit is one transaction over both. */
function libraryBackend(db: StudioDb): LibraryBackend {
  return {
    async all() {
      const tx = db.transaction('library');
      const [keys, values] = await Promise.all([tx.store.getAllKeys(), tx.store.getAll()]);
      return keys.map((k, i) => [k, values[i]] as [string, unknown]);
    },
    get: (id) => db.get('library', id),
    file: (key) => db.get('runFiles', key),
    commit: (w) =>
      guarded(db, w.putFiles?.length ? 'the run with its data or checkpoint' : 'the run', async () => {
        const tx = db.transaction(['library', 'runFiles'], 'readwrite');
        const [library, files] = [tx.objectStore('library'), tx.objectStore('runFiles')];
        await Promise.all([
          ...(w.put ?? []).map(([id, record]) => library.put(record, id)),
          ...(w.remove ?? []).map((id) => library.delete(id)),
          ...(w.putFiles ?? []).map(([key, bytes]) => files.put(bytes, key)),
          ...(w.removeFiles ?? []).map((key) => files.delete(key)),
          tx.done,
        ]);
      }),
  };
}

/** Every stored item with its size (see usage.ts), biggest first. */
async function storedItems(db: StudioDb): Promise<StoredItem[]> {
  const models = new Map<string, number>();
  for (let c = await db.transaction('files').store.openCursor(); c; c = await c.continue()) {
    const model = c.key.split('/').slice(0, 3).join('/');
    models.set(model, (models.get(model) ?? 0) + c.value.byteLength);
  }
  const files = new Map<string, number>();
  for (let c = await db.transaction('runFiles').store.openCursor(); c; c = await c.continue()) files.set(c.key, c.value.byteLength);
  const records = await libraryBackend(db).all();
  const entries = await runStore(libraryBackend(db)).list();
  const [evals, explorer, options, tuning, datasets] = await Promise.all([
    db.get('runs', EVALS),
    db.get('runs', EXPLORER_KEYS[0]),
    db.get('runs', EXPLORER_KEYS[1]),
    db.getAll('tuning'),
    db.getAll('datasets'),
  ]);
  const items: StoredItem[] = [
    ...[...models].map(([id, bytes]) => ({ kind: 'model' as const, id, label: `Model files of ${id}`, bytes })),
    ...libraryItems(entries, new Map(records.map(([id, v]) => [id, valueBytes(v)])), files),
  ];
  if (Array.isArray(evals)) items.push({ kind: 'evaluations', id: '', label: `${evals.length} evaluations`, bytes: valueBytes(evals) });
  if (explorer !== undefined)
    items.push({ kind: 'scores', id: '', label: 'Saliency explorer scores', bytes: valueBytes(explorer) + valueBytes(options) });
  for (const d of datasets.filter(isPreparedDataset))
    items.push({
      kind: 'prepared',
      id: d.id,
      label: `${d.id === DRAFT_ID ? 'Prepared data under review' : 'Prepared data'} "${d.name}" (${d.items.length} records)`,
      bytes: valueBytes(d),
    });
  if (tuning.length) items.push({ kind: 'tuning', id: '', label: 'Kernel tile choices', bytes: valueBytes(tuning) });
  return items.sort((a, b) => b.bytes - a.bytes);
}

/** What the Storage view reads and deletes. */
export interface StorageUsage {
  /** Every stored item with its size, biggest first. */
  items(): Promise<StoredItem[]>;
  /** Deletes one item (a library entry, or a run's file, through `runs`, so open views see it). */
  remove(item: StoredItem, runs: RunStore): Promise<void>;
}

/** The Storage view's access to the app's IndexedDB. */
export async function openStorageUsage(): Promise<StorageUsage> {
  const db = await openStudioDb();
  return {
    items: () => storedItems(db),
    async remove(item, runs) {
      switch (item.kind) {
        case 'model':
          return db.delete('files', IDBKeyRange.bound(`${item.id}/`, `${item.id}/\uffff`));
        case 'run':
        case 'imported':
        case 'unreadable':
          return runs.remove(item.id);
        case 'dataset':
        case 'checkpoint':
          return runs.removeFile(item.id, item.kind);
        case 'evaluations':
          return db.delete('runs', EVALS);
        case 'scores':
          await Promise.all(EXPLORER_KEYS.map((k) => db.delete('runs', k)));
          return;
        case 'tuning':
          return db.clear('tuning');
        case 'prepared':
          return db.delete('datasets', item.id);
      }
    },
  };
}

/** Opens (creating or upgrading) the app's database and returns its settings store. */
export async function openSettingsStore(): Promise<SettingsStore> {
  return new IdbSettingsStore(await openStudioDb());
}

/** The kernel tuning cache in IndexedDB (see src/engine/tune.ts); values are checked by the reader. */
export async function openTuningCache(): Promise<TuningCache> {
  const db = await openStudioDb();
  return {
    get: (key) => db.get('tuning', key),
    set: (key, tuning) => guarded(db, 'the measured kernel tiles', async () => void (await db.put('tuning', tuning, key))),
  };
}

/** Settings held in memory only: the fallback when IndexedDB cannot be opened. */
export function memorySettingsStore(): SettingsStore {
  const values = new Map<keyof Settings, unknown>();
  return {
    async get<K extends keyof Settings>(key: K) {
      return values.get(key) as Settings[K] | undefined;
    },
    async set<K extends keyof Settings>(key: K, value: Settings[K]) {
      values.set(key, value);
    },
  };
}

/** The Hub download cache in IndexedDB (a model is downloaded once per revision). */
export async function openFileCache(): Promise<FileCache> {
  const db = await openStudioDb();
  return {
    get: async (key) => {
      const v: unknown = await db.get('files', key);
      return v instanceof Uint8Array ? v : null;
    },
    put: (key, bytes) => guarded(db, `the downloaded file ${key}`, async () => void (await db.put('files', bytes, key))),
  };
}

/** The library of runs and imported adapters in the app's IndexedDB (see runs.ts). */
export async function openRunStore(): Promise<RunStore> {
  return runStore(libraryBackend(await openStudioDb()));
}

/** The library in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryRunStore(): RunStore {
  return runStore(memoryLibraryBackend());
}

/** The datasets prepared in the app, in its IndexedDB (see datasets.ts). */
export async function openDatasetStore(): Promise<DatasetStore> {
  const db = await openStudioDb();
  return datasetStore({
    values: () => db.getAll('datasets'),
    get: (id) => db.get('datasets', id),
    put: (id, value) =>
      guarded(db, `the prepared data "${(value as { name: string }).name}"`, async () => void (await db.put('datasets', value, id))),
    delete: (id) => db.delete('datasets', id),
  });
}

/** The prepared datasets in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryDatasetStore(): DatasetStore {
  return datasetStore(memoryDatasetBackend());
}

/** Evaluations the page ran (newest last), kept so before/after numbers survive a reload. */
export interface EvalHistory {
  list(): Promise<EvalOutcome[]>;
  add(o: EvalOutcome): Promise<void>;
}

const EVALS = 'evals';

/** The history over `kv` (the evaluations are one list under one key). */
function evalHistory(kv: KeyValueStore): EvalHistory {
  const list = async () => {
    const v = await kv.get(EVALS);
    return Array.isArray(v) ? (v as EvalOutcome[]) : [];
  };
  return { list, add: async (o) => kv.put(EVALS, [...(await list()), o]) };
}

/** The evaluation history in the app's IndexedDB. */
export async function openEvalHistory(): Promise<EvalHistory> {
  return evalHistory(objectStore(await openStudioDb(), 'the evaluation'));
}

/** The history in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryEvalHistory(): EvalHistory {
  return evalHistory(memoryKeyValueStore());
}

/** The saliency explorer's last scoring in the app's IndexedDB (see explorer.ts). */
export async function openExplorerStore(): Promise<ExplorerStore> {
  return explorerStore(objectStore(await openStudioDb(), "the saliency explorer's scores"));
}

/** The explorer's store in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryExplorerStore(): ExplorerStore {
  return explorerStore(memoryKeyValueStore());
}
