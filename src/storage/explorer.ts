/**
 * The saliency explorer's last scored dataset, kept across reloads (docs/method.md §3.1): the
 * scores as the worker sent them (every array a Float32Array, stored natively by IndexedDB, so
 * bit-exact) with the constants the explorer showed them under, under the key `explorer` of the
 * `runs` key-value store (db.ts). A reload shows the explorer again without a GPU pass. A stored
 * value that cannot be read is reported with a `stored-run` error naming the field, never dropped
 * in silence.
 */
import { NlftError } from '../errors.ts';
import type { RecordScores } from '../nlft/method.ts';
import { DEFAULT_SALIENCY, type SaliencyOptions } from '../nlft/saliency.ts';
import type { ScoredDataset } from '../session/scoring.ts';
import { isRecord } from '../util/json.ts';
import type { KeyValueStore } from './runs.ts';

/** What the explorer keeps: the scored dataset and the constants it was last shown under. */
export interface StoredExplorer {
  scored: ScoredDataset;
  saliency: SaliencyOptions;
}

/** Where the explorer keeps its last scoring. */
export interface ExplorerStore {
  /**
   * The last scoring, or undefined when none was stored.
   * @throws NlftError (`stored-run`) when one is stored but cannot be read; the message names the field
   */
  last(): Promise<StoredExplorer | undefined>;
  /** Stores `value` as the last scoring (replacing the one before). */
  save(value: StoredExplorer): Promise<void>;
  /** Stores the constants the scoring is shown under (small: written at every change; the scores are not rewritten). */
  saveOptions(saliency: SaliencyOptions): Promise<void>;
}

const KEY = 'explorer';
const OPTIONS = `${KEY}:options`;
/** Every key the explorer writes in its store. */
export const EXPLORER_KEYS = [KEY, OPTIONS] as const;

/**
 * Checks a stored value's shape: every record's arrays are Float32Arrays of the lengths its
 * response, hidden size and anchor call for.
 *
 * @throws NlftError (`stored-run`) naming the first field that is missing or of another shape
 */
export function readStoredExplorer(value: unknown): StoredExplorer {
  const unreadable = (field: string, expected: string) =>
    new NlftError(
      `The saliency explorer's scores stored in this browser cannot be read (field "${field}": expected ${expected}); score the dataset again.`,
      'stored-run',
    );
  if (!isRecord(value) || !isRecord(value.scored)) throw unreadable('scored', 'an object');
  const s = value.scored as unknown as ScoredDataset;
  if (typeof s.dataset !== 'string') throw unreadable('scored.dataset', 'a string');
  if (typeof s.model !== 'string') throw unreadable('scored.model', 'a string');
  if (!Array.isArray(s.records)) throw unreadable('scored.records', 'an array');
  if (!isRecord(s.tokenTexts) || !Object.values(s.tokenTexts).every((t) => typeof t === 'string'))
    throw unreadable('scored.tokenTexts', 'an object of token texts');
  if (!isRecord(s.scores) || !Number.isInteger(s.scores.hiddenSize) || !Array.isArray(s.scores.records))
    throw unreadable('scored.scores', 'the hidden size and one entry per record');
  if (s.scores.records.length !== s.records.length)
    throw unreadable('scored.scores.records', `${s.records.length} entries, one per record`);
  const C = s.scores.hiddenSize;
  s.records.forEach((r, i) => {
    const at = `scored.scores.records[${i}]`;
    if (!isRecord(r) || typeof r.id !== 'string' || !Number.isInteger(r.index) || (r.polarity !== 'positive' && r.polarity !== 'negative'))
      throw unreadable(`scored.records[${i}]`, 'a record with an id, an index and a polarity');
    if (!Array.isArray(r.responseIds) || !r.responseIds.every(Number.isInteger))
      throw unreadable(`scored.records[${i}].responseIds`, 'an array of token ids');
    const sc: Partial<RecordScores> = s.scores.records[i];
    if (!isRecord(sc)) throw unreadable(at, 'an object of scores');
    const N = r.responseIds.length;
    const f32 = (name: string, v: unknown, length: number) => {
      if (!(v instanceof Float32Array) || v.length !== length) throw unreadable(`${at}.${name}`, `a Float32Array of ${length} values`);
    };
    f32('logpb', sc.logpb, N);
    f32('log1mpb', sc.log1mpb, N);
    f32('logpc', sc.logpc, N);
    if (r.polarity === 'negative') f32('logpj', sc.logpj, N);
    else if (sc.logpj != null) throw unreadable(`${at}.logpj`, 'null (a positive record)');
    f32('hb', sc.hb, N * C);
    if (r.anchor != null && (!isRecord(r.anchor) || !Array.isArray(r.anchor.responseIds) || !r.anchor.responseIds.every(Number.isInteger)))
      throw unreadable(`scored.records[${i}].anchor.responseIds`, 'an array of token ids');
    if (sc.anchor && r.anchor) {
      f32('anchor.logp', sc.anchor.logp, r.anchor.responseIds.length);
      f32('anchor.log1mq', sc.anchor.log1mq, r.anchor.responseIds.length);
    }
  });
  return { scored: s, saliency: savedOptions(value.saliency) };
}

/** Stored constants over the defaults (an older build may have stored fewer), or the defaults. */
function savedOptions(value: unknown): SaliencyOptions {
  return isRecord(value) ? { ...DEFAULT_SALIENCY, ...(value as Partial<SaliencyOptions>) } : DEFAULT_SALIENCY;
}

/** The explorer's store over `kv` (the app's `runs` store, or memory). */
export function explorerStore(kv: KeyValueStore): ExplorerStore {
  return {
    async last() {
      const [value, options] = await Promise.all([kv.get(KEY), kv.get(OPTIONS)]);
      if (value === undefined) return undefined;
      const read = readStoredExplorer(value);
      return options === undefined ? read : { ...read, saliency: savedOptions(options) };
    },
    async save(value) {
      await kv.put(KEY, { scored: value.scored });
      await kv.put(OPTIONS, value.saliency);
    },
    saveOptions: (saliency) => kv.put(OPTIONS, saliency),
  };
}
