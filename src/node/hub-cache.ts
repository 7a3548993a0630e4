/**
 * The CLI's cache of files downloaded from the Hub (src/model/hub.ts): `<cache>/hub/<org>/<name>/
 * <revision>/<file>` under cacheDir() (see tuning-cache.ts). Files are written to a temporary name
 * and renamed, so an interrupted download never leaves a partial file behind.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { FileCache } from '../model/hub.ts';
import { cacheDir } from './tuning-cache.ts';

export class FolderFileCache implements FileCache {
  readonly dir: string;
  constructor(dir = path.join(cacheDir(), 'hub')) {
    this.dir = dir;
  }

  private file(key: string): string {
    return path.join(this.dir, ...key.split('/'));
  }

  async get(key: string): Promise<Uint8Array | null> {
    try {
      const buf = await readFile(this.file(key));
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    } catch {
      return null;
    }
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const file = this.file(key);
    await mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.part`;
    await writeFile(tmp, bytes);
    await rename(tmp, file);
  }
}
