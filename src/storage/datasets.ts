/**
 * Datasets prepared in the app (docs/method.md §6): each preparation's records with their grades,
 * as the Prepare panel shows them for review (a judgment edited, a record dropped), kept under an
 * id in the `datasets` store — the one being reviewed under `DRAFT_ID`, each saved one under its
 * save time — and handed to training as the JSON file of its kept records. A judge's API key is
 * never part of a stored dataset (the judge is named by model and URL only).
 */
import type { PreparedItem } from '../session/prepare.ts';
import type { DatasetFile } from '../session/requests.ts';

/** A prepared record under review: its record and grade, and whether the user dropped it. */
export interface ReviewedItem extends PreparedItem {
  dropped: boolean;
}

/** A preparation as stored: what it was made from and with, and its records. */
export interface PreparedDataset {
  /** `DRAFT_ID` for the one under review; a saved one's save time (ISO). */
  id: string;
  /** The name the user gave it (a draft: the question file's name). */
  name: string;
  /** When the preparation started (ISO). */
  at: string;
  /** The question file's name. */
  source: string;
  /** The judge's name (model and URL, or the template). */
  judge: string;
  /** The loaded model that answered. */
  model: string;
  items: ReviewedItem[];
  /** The judge's failure that ended the preparation early, or null. */
  judgeError: string | null;
  /** The draft: the id of the saved dataset it was last saved as (or opened from), or null. */
  savedAs: string | null;
}

/** The id of the preparation under review (replaced by the next preparation). */
export const DRAFT_ID = 'draft';

/** The stored preparations; `list` leaves the draft out and puts the newest first. */
export interface DatasetStore {
  list(): Promise<PreparedDataset[]>;
  get(id: string): Promise<PreparedDataset | undefined>;
  /** Stores `d` under its id in one write (a quota refusal stores nothing and names what to delete). */
  put(d: PreparedDataset): Promise<void>;
  remove(id: string): Promise<void>;
}

/** Where a dataset store keeps its values (IndexedDB's `datasets` store, or memory). */
export interface DatasetBackend {
  values(): Promise<unknown[]>;
  get(id: string): Promise<unknown>;
  put(id: string, value: unknown): Promise<void>;
  delete(id: string): Promise<void>;
}

/** Whether a stored value has a prepared dataset's shape (an older build, or another tab, may have written something else). */
export function isPreparedDataset(v: unknown): v is PreparedDataset {
  const d = v as Partial<PreparedDataset> | null;
  return (
    typeof d === 'object' &&
    d !== null &&
    typeof d.id === 'string' &&
    typeof d.name === 'string' &&
    typeof d.at === 'string' &&
    Array.isArray(d.items) &&
    d.items.every((i) => typeof i === 'object' && i !== null && typeof i.record?.input === 'string' && typeof i.dropped === 'boolean')
  );
}

/** The store over `backend`. */
export function datasetStore(backend: DatasetBackend): DatasetStore {
  return {
    async list() {
      return (await backend.values())
        .filter(isPreparedDataset)
        .filter((d) => d.id !== DRAFT_ID)
        .sort((a, b) => (a.id < b.id ? 1 : -1));
    },
    async get(id) {
      const v = await backend.get(id);
      return isPreparedDataset(v) ? v : undefined;
    },
    put: (d) => backend.put(d.id, d),
    remove: (id) => backend.delete(id),
  };
}

/** A backend in memory, copying values in and out as IndexedDB does (the fallback when IndexedDB cannot be opened). */
export function memoryDatasetBackend(): DatasetBackend {
  const values = new Map<string, unknown>();
  return {
    values: async () => [...values.values()].map((v) => structuredClone(v)),
    get: async (id) => structuredClone(values.get(id)),
    put: async (id, value) => void values.set(id, structuredClone(value)),
    delete: async (id) => void values.delete(id),
  };
}

/** The records a dataset trains on: the ones not dropped and with a response (a blank answer cannot be trained on). */
export function keptItems(d: { items: readonly ReviewedItem[] }): ReviewedItem[] {
  return d.items.filter((i) => !i.dropped && i.record.output.trim() !== '');
}

/** The dataset as the JSON file training reads (docs/method.md §1): its kept records, named `<name>.json`. */
export function preparedFile(d: { name: string; items: readonly ReviewedItem[] }): DatasetFile {
  const records = keptItems(d).map((i) => i.record);
  const name = d.name.endsWith('.json') ? d.name : `${d.name}.json`;
  return { name, bytes: new TextEncoder().encode(`${JSON.stringify(records, null, 1)}\n`) };
}

/**
 * Why a dataset cannot be saved for training yet, naming the record, or null: every kept wrong
 * answer needs a judgment (a blank one would train it as a right answer), and at least one record
 * must be kept.
 */
export function reviewProblem(d: { items: readonly ReviewedItem[] }): string | null {
  const kept = keptItems(d);
  if (kept.length === 0) return 'Every record is left out: keep at least one to save the dataset.';
  const blank = kept.find((i) => !i.correct && !i.record.judgment?.trim());
  return blank ? `record ${blank.record.id}: the judgment is empty; write what is wrong in the answer, or drop the record.` : null;
}
