/**
 * `FileSource` over files the user picked (a folder chosen in the browser, or files dropped on the
 * page): names are paths inside the picked folder (the folder's own name is dropped from
 * `webkitRelativePath`), ranges are read with `Blob.slice`, so a tensor read never loads the
 * whole shard. Picked files without a `config.json` but with a `.gguf` file are that GGUF model
 * (`ggufFile`), with the `tokenizer.json` picked beside it if any.
 */
import { ModelFormatError } from '../errors.ts';
import type { FileSource } from './source.ts';

/** The name a picked file has inside its folder. */
function nameInFolder(f: File): string {
  const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath;
  return rel ? rel.split('/').slice(1).join('/') : f.name;
}

export class PickedFilesSource implements FileSource {
  private readonly byName = new Map<string, File>();
  readonly ggufFile?: string;

  /** @param label how messages name the folder, e.g. its name */
  constructor(
    files: readonly File[],
    readonly label: string,
  ) {
    for (const f of files) this.byName.set(nameInFolder(f), f);
    if (!this.byName.has('config.json')) this.ggufFile = [...this.byName.keys()].find((n) => n.toLowerCase().endsWith('.gguf'));
  }

  async size(name: string): Promise<number | null> {
    return this.byName.get(name)?.size ?? null;
  }

  async readRange(name: string, start: number, end: number): Promise<Uint8Array> {
    const f = this.file(name);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start)
      throw new RangeError(`PickedFilesSource.readRange(${name}): bad range [${start}, ${end})`);
    if (end > f.size)
      throw new ModelFormatError(name, undefined, `file ends at byte ${f.size}, before the requested range [${start}, ${end})`);
    return new Uint8Array(await f.slice(start, end).arrayBuffer());
  }

  async read(name: string): Promise<Uint8Array> {
    return new Uint8Array(await this.file(name).arrayBuffer());
  }

  private file(name: string): File {
    const f = this.byName.get(name);
    if (!f) throw new ModelFormatError(name, undefined, `not found in ${this.label}`);
    return f;
  }
}
