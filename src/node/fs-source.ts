/**
 * `FileSource` over a local directory (Node). Ranges are read through file handles, so
 * reading a safetensors header or one tensor never loads the whole file.
 */
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ModelFormatError } from '../errors.ts';
import type { FileSource } from '../model/source.ts';

/** The files of one local folder; names are relative paths inside it. */
export class FolderSource implements FileSource {
  readonly label: string;
  private readonly root: string;

  /**
   * @param dir the folder; relative paths resolve against the current directory
   * @param ggufFile when the model is this GGUF file in the folder (`FileSource.ggufFile`)
   */
  constructor(
    dir: string,
    readonly ggufFile?: string,
  ) {
    this.root = path.resolve(dir);
    this.label = dir;
  }

  /** Byte size of a regular file in the folder, or null when there is none. */
  async size(name: string): Promise<number | null> {
    try {
      const info = await stat(this.resolve(name));
      return info.isFile() ? info.size : null;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  /** Bytes [start, end) of a file; a range past the end of the file is an error. */
  async readRange(name: string, start: number, end: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new RangeError(`FolderSource.readRange(${name}): bad range [${start}, ${end})`);
    }
    const handle = await this.openFile(name);
    try {
      const out = new Uint8Array(end - start);
      let filled = 0;
      while (filled < out.length) {
        const { bytesRead } = await handle.read(out, filled, out.length - filled, start + filled);
        if (bytesRead === 0) {
          throw new ModelFormatError(name, undefined, `file ends at byte ${start + filled}, before the requested range [${start}, ${end})`);
        }
        filled += bytesRead;
      }
      return out;
    } finally {
      await handle.close();
    }
  }

  /** The whole file. */
  async read(name: string): Promise<Uint8Array> {
    try {
      const buf = await readFile(this.resolve(name));
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    } catch (e) {
      throw this.translate(e, name);
    }
  }

  /** Opens a regular file for reading (a directory of that name counts as missing). */
  private async openFile(name: string): Promise<FileHandle> {
    let handle: FileHandle;
    try {
      handle = await open(this.resolve(name), 'r');
    } catch (e) {
      throw this.translate(e, name);
    }
    if (!(await handle.stat()).isFile()) {
      await handle.close();
      throw new ModelFormatError(name, undefined, `not found in ${this.label}`);
    }
    return handle;
  }

  /** Absolute path of `name`, which must stay inside the folder. */
  private resolve(name: string): string {
    const full = path.resolve(this.root, name);
    const rel = path.relative(this.root, full);
    if (rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
      throw new ModelFormatError(name, undefined, `expected a file name inside ${this.label}`);
    }
    return full;
  }

  /** A missing file (or a directory in its place) becomes a ModelFormatError naming it. */
  private translate(e: unknown, name: string): unknown {
    return isNotFound(e) || (e as NodeJS.ErrnoException).code === 'EISDIR'
      ? new ModelFormatError(name, undefined, `not found in ${this.label}`)
      : e;
  }
}

/** ENOENT, or ENOTDIR when a path component is a file. */
function isNotFound(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
