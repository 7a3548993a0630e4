/**
 * The app's IndexedDB database (through `idb`). Version 1 holds one key-value store of small
 * settings that survive a reload; version 2 adds the per-adapter kernel tuning choices (written by
 * the trainer worker); version 3 the last training run (settings, metrics, saliency, adapter);
 * version 4 the model files downloaded from the Hub. The `runs` store holds the last run, its
 * dataset and checkpoint (runs.ts), the evaluation history and the saliency explorer's last scoring (explorer.ts).
 * Later versions add object stores in `upgrade`, keyed on the old version.
 * The page and the worker open it with the same version.
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import type { TuningCache } from '../engine/tune.ts';
import type { FileCache } from '../model/hub.ts';
import type { EvalOutcome } from '../session/requests.ts';
import { isQuantFormat, type QuantFormat } from '../model/quant.ts';
import { explorerStore, type ExplorerStore } from './explorer.ts';
import { memoryKeyValueStore, runStore, type KeyValueStore, type RunStore } from './runs.ts';

/** What the playground remembers across reloads. */
export interface PlaygroundDraft {
  prompt: string;
  response: string;
  chat: boolean;
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

/** Every setting the app stores, by key. */
export interface Settings {
  model: ModelChoice;
  quant: QuantFormat;
  playground: PlaygroundDraft;
  /** Index of the dataset record picked last. */
  pickedRecord: number;
  evalDraft: EvalDraft;
  compareView: CompareSelection;
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
  /** The last run, its dataset and checkpoint (see runs.ts), and the evaluations (`evals`). */
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

/** The `runs` object store (the last run, its dataset and checkpoint, the evaluations, the explorer's scores) as a key-value store. */
function objectStore(db: IDBPDatabase<StudioSchema>): KeyValueStore {
  return { get: (key) => db.get('runs', key), put: async (key, value) => void (await db.put('runs', value, key)) };
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

/** The run store in the app's IndexedDB (see runs.ts). */
export async function openRunStore(): Promise<RunStore> {
  return runStore(objectStore(await openStudioDb()));
}

/** The run store in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryRunStore(): RunStore {
  return runStore(memoryKeyValueStore());
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
  return evalHistory(objectStore(await openStudioDb()));
}

/** The history in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryEvalHistory(): EvalHistory {
  return evalHistory(memoryKeyValueStore());
}

/** The saliency explorer's last scoring in the app's IndexedDB (see explorer.ts). */
export async function openExplorerStore(): Promise<ExplorerStore> {
  return explorerStore(objectStore(await openStudioDb()));
}

/** The explorer's store in memory only: the fallback when IndexedDB cannot be opened. */
export function memoryExplorerStore(): ExplorerStore {
  return explorerStore(memoryKeyValueStore());
}
