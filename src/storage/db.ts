/**
 * The app's IndexedDB database (through `idb`). Version 1 holds one key-value store of small
 * settings that survive a reload; version 2 adds the per-adapter kernel tuning choices (written by
 * the trainer worker); version 3 the last training run (settings, metrics, saliency, adapter);
 * version 4 the model files downloaded from the Hub.
 * Later versions add stores (datasets, checkpoints, models) in `upgrade`, keyed on the old
 * version. The page and the worker open it with the same version.
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import type { TuningCache } from '../engine/tune.ts';
import type { PeftAdapterFiles } from '../export/peft.ts';
import type { FileCache } from '../model/hub.ts';
import type { SaliencyEntry, SaliencySummary } from '../nlft/method.ts';
import type { StepMetrics } from '../train/trainer.ts';
import type { EvalOutcome, RunModel, TrainOutcome, TrainRequest } from '../session/requests.ts';
import { isQuantFormat, type QuantFormat } from '../model/quant.ts';

/** What the playground remembers across reloads. */
export interface PlaygroundDraft {
  prompt: string;
  response: string;
  chat: boolean;
}

/** The model to load at start: the demo, or a Hub repository (a picked folder cannot be reopened without the user). */
export type ModelChoice = { kind: 'demo' } | { kind: 'hub'; id: string; baseUrl: string };

/** Every setting the app stores, by key. */
export interface Settings {
  model: ModelChoice;
  quant: QuantFormat;
  playground: PlaygroundDraft;
  /** Index of the dataset record picked last. */
  pickedRecord: number;
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
  runs: { key: string; value: unknown };
  /** `<org>/<name>/<revision>/<file>` -> the file's bytes (see src/model/hub.ts). */
  files: { key: string; value: Uint8Array };
}

/** Shape checks for stored values (an older build, or another tab, may have written something else). */
const VALID: { [K in keyof Settings]: (v: unknown) => v is Settings[K] } = {
  model: (v): v is ModelChoice => {
    const m = v as Partial<{ kind: string; id: unknown; baseUrl: unknown }> | null;
    return (
      typeof m === 'object' &&
      m !== null &&
      (m.kind === 'demo' || (m.kind === 'hub' && typeof m.id === 'string' && typeof m.baseUrl === 'string'))
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
};

/** Name of the app's database. */
const DB_NAME = 'nlft-studio';
const DB_VERSION = 4;

/** Settings kept in IndexedDB. */
class IdbSettingsStore implements SettingsStore {
  constructor(private readonly db: IDBPDatabase<StudioSchema>) {}

  async get<K extends keyof Settings>(key: K): Promise<Settings[K] | undefined> {
    const value: unknown = await this.db.get('settings', key);
    return VALID[key](value) ? value : undefined;
  }

  async set<K extends keyof Settings>(key: K, value: Settings[K]): Promise<void> {
    await this.db.put('settings', value, key);
  }
}

function openStudioDb(): Promise<IDBPDatabase<StudioSchema>> {
  return openDB<StudioSchema>(DB_NAME, DB_VERSION, {
    upgrade(db, oldVersion) {
      if (oldVersion < 1) db.createObjectStore('settings');
      if (oldVersion < 2) db.createObjectStore('tuning');
      if (oldVersion < 3) db.createObjectStore('runs');
      if (oldVersion < 4) db.createObjectStore('files');
    },
  });
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
    set: async (key, tuning) => void (await db.put('tuning', tuning, key)),
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
    put: async (key, bytes) => void (await db.put('files', bytes, key)),
  };
}

/** A training run as the app keeps it: enough to show its chart, saliency map and adapter after a reload. */
export interface StoredRun {
  /** The request without the dataset's bytes (its name and size are kept). */
  request: Omit<TrainRequest, 'data'> & { data: { name: string; bytes: number } };
  startedAt: string;
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
  /** The step of the latest checkpoint the worker sent (its bytes are the 'checkpoint' blob), or null. */
  checkpointStep: number | null;
}

/**
 * The large parts of the last run, kept apart from the record (which is rewritten every step):
 * the dataset's bytes and the latest checkpoint (see `TrainRequest.resume`).
 */
export type RunBlob = 'dataset' | 'checkpoint';

/** Where the page keeps its last run. */
export interface RunStore {
  last(): Promise<StoredRun | undefined>;
  save(run: StoredRun): Promise<void>;
  saveBlob(name: RunBlob, bytes: Uint8Array): Promise<void>;
  blob(name: RunBlob): Promise<Uint8Array | undefined>;
}

const LAST_RUN = 'last';

function isStoredRun(v: unknown): v is StoredRun {
  const r = v as Partial<StoredRun> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.request === 'object' &&
    Array.isArray(r.metrics) &&
    Array.isArray(r.saliency) &&
    typeof r.status === 'string' &&
    typeof r.totalSteps === 'number'
  );
}

/** The run store in IndexedDB; a value stored by another build in another shape reads as none. */
export async function openRunStore(): Promise<RunStore> {
  const db = await openStudioDb();
  return {
    last: async () => {
      const v: unknown = await db.get('runs', LAST_RUN);
      return isStoredRun(v) ? v : undefined;
    },
    save: async (run) => void (await db.put('runs', run, LAST_RUN)),
    saveBlob: async (name, bytes) => void (await db.put('runs', bytes, `${LAST_RUN}:${name}`)),
    blob: async (name) => {
      const v: unknown = await db.get('runs', `${LAST_RUN}:${name}`);
      return v instanceof Uint8Array ? v : undefined;
    },
  };
}

/** The run store in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryRunStore(): RunStore {
  let last: StoredRun | undefined;
  const blobs = new Map<RunBlob, Uint8Array>();
  return {
    last: async () => last,
    save: async (run) => void (last = run),
    saveBlob: async (name, bytes) => void blobs.set(name, bytes),
    blob: async (name) => blobs.get(name),
  };
}

/** Evaluations the page ran (newest last), kept so before/after numbers survive a reload. */
export interface EvalHistory {
  list(): Promise<EvalOutcome[]>;
  add(o: EvalOutcome): Promise<void>;
}

const EVALS = 'evals';

export async function openEvalHistory(): Promise<EvalHistory> {
  const db = await openStudioDb();
  const list = async () => {
    const v: unknown = await db.get('runs', EVALS);
    return Array.isArray(v) ? (v as EvalOutcome[]) : [];
  };
  return { list, add: async (o) => void (await db.put('runs', [...(await list()), o], EVALS)) };
}

/** The history in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryEvalHistory(): EvalHistory {
  const all: EvalOutcome[] = [];
  return { list: async () => [...all], add: async (o) => void all.push(o) };
}
