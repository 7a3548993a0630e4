/**
 * The CLI's cache of per-adapter kernel tile choices (src/engine/tune.ts): one JSON file, keyed by
 * adapter, weight format and model widths, in $NLFT_CACHE_DIR or $XDG_CACHE_HOME/nlft-studio
 * (default ~/.cache/nlft-studio).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Tuning } from '../engine/ops.ts';
import type { TuningCache } from '../engine/tune.ts';

export function cacheDir(): string {
  return process.env.NLFT_CACHE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'nlft-studio');
}

/** A JSON file of key → tuning; an unreadable or corrupt file reads as empty. */
export class FileTuningCache implements TuningCache {
  readonly file: string;
  constructor(dir = cacheDir()) {
    this.file = path.join(dir, 'tuning.json');
  }

  private async all(): Promise<Record<string, unknown>> {
    try {
      const v: unknown = JSON.parse(await readFile(this.file, 'utf8'));
      return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
    } catch {
      return {};
    }
  }

  async get(key: string): Promise<unknown> {
    return (await this.all())[key];
  }

  /** Written to a temporary file and renamed, so a reader never sees half a file. */
  async set(key: string, tuning: Tuning): Promise<void> {
    const all = { ...(await this.all()), [key]: tuning };
    await mkdir(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(all, null, 1)}\n`);
    await rename(tmp, this.file);
  }
}
