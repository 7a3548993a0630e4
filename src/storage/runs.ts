/**
 * The training runs the app keeps across reloads, without any DOM: the last run's record
 * (settings, metrics, saliency, adapter; rewritten after every step) and, apart from it because
 * they are large and change rarely, the dataset's bytes (written once) and the latest checkpoint
 * (written when the worker sends one), so that a run stopped or cut off by a reload continues.
 *
 * They live in one key-value object store (`runs` in the app's IndexedDB, see db.ts) under the keys
 * `last`, `last:dataset` and `last:checkpoint`. Records written by earlier versions of the app are
 * read and brought to the current shape (see `readStoredRun`); one that cannot be read is reported
 * with a `stored-run` error, never dropped in silence.
 */
import { NlftError } from '../errors.ts';
import type { PeftAdapterFiles } from '../export/peft.ts';
import { DEFAULT_LORA } from '../model/lora.ts';
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
  /** The step of the latest checkpoint whose bytes are stored, or null. */
  checkpointStep: number | null;
}

/** The two operations the run store needs from its backing store (an IndexedDB object store, or a Map). */
export interface KeyValueStore {
  /** The value under `key`, or undefined. */
  get(key: string): Promise<unknown>;
  put(key: string, value: unknown): Promise<void>;
}

/** Where the page keeps its last run. */
export interface RunStore {
  /**
   * The last run, or undefined when none was stored.
   * @throws NlftError (`stored-run`) when a record is stored but cannot be read; the message says which field
   */
  last(): Promise<StoredRun | undefined>;
  /** Stores `run` as the last run (its dataset and checkpoint are stored apart). */
  save(run: StoredRun): Promise<void>;
  /**
   * Stores a run the worker has started as the last run, with its dataset's bytes (which the
   * caller must not transfer or change afterwards); until then the previous run stays the last.
   */
  start(run: StoredRun, dataset: Uint8Array): Promise<void>;
  /** Stores a checkpoint's bytes and then, once they are stored, names its step in `run` and saves the record. */
  saveCheckpoint(run: StoredRun, step: number, bytes: Uint8Array): Promise<void>;
  /**
   * The request that continues `run` from its stored checkpoint, with its stored dataset.
   * @throws NlftError (`stored-run`) when the run has no checkpoint, or its data or checkpoint is no longer stored
   */
  resumeRequest(run: StoredRun): Promise<TrainRequest>;
}

const LAST = 'last';
const DATASET = `${LAST}:dataset`;
const CHECKPOINT = `${LAST}:checkpoint`;

/** A new record for `request`, started now (its dataset's bytes are not part of it). */
export function newRun(request: TrainRequest): StoredRun {
  const { data, resume: _, ...settings } = request;
  return {
    request: { ...settings, data: { name: data.name, bytes: data.bytes.byteLength } },
    startedAt: new Date().toISOString(),
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

/** The step `run` can continue from (its checkpoint's), or null when it is finished or has nothing to continue from. */
export function continueStep(run: StoredRun): number | null {
  const step = run.checkpointStep;
  return step !== null && run.model !== null && run.status !== 'done' && step < run.totalSteps ? step : null;
}

/**
 * Reads a stored record, in the current shape or an earlier one, and brings it to the current shape.
 * The earlier shapes:
 * - the first stored runs had no `model`, no checkpoint, no `message` default, and a request
 *   without `saliency` and `templates` (the NLFT options were not editable yet): they get none,
 *   none, and the defaults;
 * - then runs held `dataset: Uint8Array | null` and `checkpoint: {step, bytes} | null` inside the
 *   record: these come back in `inline`, for the store to write apart (`checkpointStep` is their step);
 * - a request without `memoryBudgetMiB` had no budget.
 *
 * @throws NlftError (`stored-run`) naming the first field that is missing or of another type
 */
function readStoredRun(value: unknown): { run: StoredRun; inline: { dataset?: Uint8Array; checkpoint?: Uint8Array } } {
  const unreadable = (field: string, expected: string) =>
    new NlftError(
      `The last training run stored in this browser cannot be read (field "${field}": expected ${expected}); it is left as it is, and the next run replaces it.`,
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

  const legacy = isRecord(value.checkpoint) && value.checkpoint.bytes instanceof Uint8Array ? value.checkpoint : null;
  const inline = {
    ...(value.dataset instanceof Uint8Array ? { dataset: value.dataset } : {}),
    ...(legacy ? { checkpoint: legacy.bytes as Uint8Array } : {}),
  };
  const checkpointStep = typeof value.checkpointStep === 'number' ? value.checkpointStep : legacy ? Number(legacy.step) : null;
  const { dataset: _d, checkpoint: _c, ...current } = value as unknown as StoredRun & { dataset?: unknown; checkpoint?: unknown };
  const request = req as unknown as StoredRun['request'];
  return {
    inline,
    run: {
      ...current,
      request: {
        ...request,
        train: { ...DEFAULT_TRAIN, ...request.train },
        lora: { ...DEFAULT_LORA, ...request.lora },
        saliency: { ...DEFAULT_SALIENCY, ...request.saliency },
        templates: request.templates ?? DEFAULT_TEMPLATES,
        memoryBudgetMiB: request.memoryBudgetMiB ?? null,
      },
      message: current.message ?? null,
      summary: current.summary ?? null,
      adapter: current.adapter ?? null,
      model: current.model ?? null,
      checkpointStep,
    },
  };
}

/** The run store over `kv`. */
export function runStore(kv: KeyValueStore): RunStore {
  const bytesAt = async (key: string): Promise<Uint8Array | undefined> => {
    const v = await kv.get(key);
    return v instanceof Uint8Array ? v : undefined;
  };
  return {
    async last() {
      const value = await kv.get(LAST);
      if (value === undefined) return undefined;
      const { run, inline } = readStoredRun(value);
      if (inline.dataset || inline.checkpoint) {
        // Written by a version that kept the bytes inside the record: store them apart, then the slim record.
        if (inline.dataset) await kv.put(DATASET, inline.dataset);
        if (inline.checkpoint) await kv.put(CHECKPOINT, inline.checkpoint);
        await kv.put(LAST, run);
      }
      return run;
    },
    save: (run) => kv.put(LAST, run),
    async start(run, dataset) {
      await kv.put(DATASET, dataset);
      await kv.put(LAST, run);
    },
    async saveCheckpoint(run, step, bytes) {
      await kv.put(CHECKPOINT, bytes);
      run.checkpointStep = step;
      await kv.put(LAST, run);
    },
    async resumeRequest(run) {
      const step = continueStep(run);
      if (step === null || run.model === null)
        throw new NlftError('This run has no checkpoint to continue from (or it is finished); start a new run.', 'stored-run');
      const [dataset, checkpoint] = await Promise.all([bytesAt(DATASET), bytesAt(CHECKPOINT)]);
      if (!dataset || !checkpoint)
        throw new NlftError(
          `The ${dataset ? 'checkpoint' : 'data'} of this run is no longer stored in this browser; start a new run.`,
          'stored-run',
        );
      const { data, ...settings } = run.request;
      return { ...settings, data: { name: data.name, bytes: dataset }, resume: { checkpoint, model: run.model } };
    },
  };
}

/** A key-value store in memory, copying values in and out as IndexedDB does (the fallback when IndexedDB cannot be opened). */
export function memoryKeyValueStore(): KeyValueStore {
  const values = new Map<string, unknown>();
  return {
    get: async (key) => structuredClone(values.get(key)),
    put: async (key, value) => void values.set(key, structuredClone(value)),
  };
}
