/**
 * What the app keeps in this browser and how much room it takes: every stored item (a Hub model's
 * files, each run or imported adapter, a run's checkpoint and dataset, the evaluations, the
 * explorer's scores, the kernel tuning, each prepared dataset) with its size, the browser's own usage and quota
 * (`navigator.storage.estimate()`), persistent storage (`navigator.storage.persist()`), deleting
 * one item, and the message of a write the quota refused, which names the biggest items to delete.
 */
import { formatBytes } from '../engine/buffers.ts';
import { StorageQuotaError } from '../errors.ts';
import { entryName, isQuotaError, type LibraryItem, type RunFile } from './runs.ts';

/** What a stored item is. */
export type StoredItemKind = 'model' | 'run' | 'imported' | 'unreadable' | RunFile | 'evaluations' | 'scores' | 'tuning' | 'prepared';

/** One item the Storage view lists and can delete. */
export interface StoredItem {
  kind: StoredItemKind;
  /** Which one: a model's `<org>/<name>/<revision>`, a library entry's id ('' for the kinds there is one of). */
  id: string;
  label: string;
  bytes: number;
}

/** The browser's view of this site's storage; null where the browser does not say. */
export interface StorageEstimate {
  usage: number | null;
  quota: number | null;
  /** Whether the browser keeps the data under storage pressure (granted by `persist()`). */
  persisted: boolean | null;
}

/** The library entries and run files as stored items (a run's files are labelled with its name). */
export function libraryItems(
  entries: readonly LibraryItem[],
  sizes: ReadonlyMap<string, number>,
  files: ReadonlyMap<string, number>,
): StoredItem[] {
  const items: StoredItem[] = entries.map((e) => ({ kind: e.kind, id: e.id, label: entryName(e), bytes: sizes.get(e.id) ?? 0 }));
  for (const [key, bytes] of files) {
    const cut = key.lastIndexOf('/');
    const id = key.slice(0, cut);
    const file = key.slice(cut + 1) as RunFile;
    const entry = entries.find((e) => e.id === id);
    const of = entry ? entryName(entry) : `a deleted run (${id})`;
    const step =
      entry?.kind === 'run' && file === 'checkpoint' && entry.run.checkpointStep !== null ? ` at step ${entry.run.checkpointStep}` : '';
    items.push({ kind: file, id, label: `${file === 'checkpoint' ? 'Checkpoint' : 'Training data'} of ${of}${step}`, bytes });
  }
  return items;
}

/** The message of a write of `what` that the quota refused, naming the biggest stored items. */
export function quotaMessage(what: string, items: readonly StoredItem[]): string {
  const biggest = [...items]
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, 3)
    .map((i) => `${i.label} (${formatBytes(i.bytes)})`);
  return (
    `This browser's storage for the app is full: ${what} could not be saved (nothing of it was written). ` +
    `Delete something in the Storage view, then try again${biggest.length ? `; the biggest items: ${biggest.join(', ')}` : ''}.`
  );
}

/**
 * Runs a write; when the quota refuses it, throws a `StorageQuotaError` naming what was being saved
 * and the biggest stored items (listed by `items`). Other errors pass through.
 */
export async function guardQuota<T>(what: string, write: () => Promise<T>, items: () => Promise<StoredItem[]>): Promise<T> {
  try {
    return await write();
  } catch (e) {
    if (!isQuotaError(e)) throw e;
    throw new StorageQuotaError(quotaMessage(what, await items().catch(() => [])));
  }
}

/** The browser's usage, quota and persistence for this site (all null where there is no `navigator.storage`). */
export async function storageEstimate(): Promise<StorageEstimate> {
  const storage = globalThis.navigator?.storage;
  if (!storage) return { usage: null, quota: null, persisted: null };
  const [estimate, persisted] = await Promise.all([
    storage.estimate().catch(() => ({}) as StorageEstimate),
    storage.persisted().catch(() => null),
  ]);
  return { usage: estimate.usage ?? null, quota: estimate.quota ?? null, persisted };
}

/** Asks the browser to keep this site's data under storage pressure; resolves whether it does (null: the browser cannot say). */
export async function requestPersistence(): Promise<boolean | null> {
  const storage = globalThis.navigator?.storage;
  if (!storage?.persist) return null;
  return (await storage.persisted()) || storage.persist();
}
