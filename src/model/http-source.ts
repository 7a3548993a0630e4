/**
 * `FileSource` over a model folder served by a web server: file `name` is fetched from
 * `<folderUrl><name>` once (whole; later reads and ranges come from memory). The app loads its
 * embedded demo (`public/toy-math/model/`) this way, through the same loader as a picked folder or
 * a Hub repository. A 404 (or an HTML page served for a file that is not one: a single-page-app
 * fallback) is a missing file, so optional files (`templates.json`) are probed by `size`.
 */
import { ModelFormatError, NlftError } from '../errors.ts';
import type { FileSource } from './source.ts';

export class HttpFolderSource implements FileSource {
  private readonly files = new Map<string, Promise<Uint8Array | null>>();

  /**
   * @param folderUrl absolute URL of the folder, ending in `/`
   * @param label how messages name the folder, e.g. "toy-math"
   */
  constructor(
    private readonly folderUrl: string,
    readonly label: string,
    private readonly fetchFn: typeof fetch = (input, init) => fetch(input, init),
  ) {
    if (!folderUrl.endsWith('/')) throw new RangeError(`HttpFolderSource: the folder URL must end in "/" (got ${folderUrl})`);
  }

  async size(name: string): Promise<number | null> {
    return (await this.load(name))?.length ?? null;
  }

  async read(name: string): Promise<Uint8Array> {
    const bytes = await this.load(name);
    if (!bytes) throw new ModelFormatError(name, undefined, `not found in ${this.label} (${this.folderUrl}${name} answered 404)`);
    return bytes;
  }

  async readRange(name: string, start: number, end: number): Promise<Uint8Array> {
    const bytes = await this.read(name);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start)
      throw new RangeError(`HttpFolderSource.readRange(${name}): bad range [${start}, ${end})`);
    if (end > bytes.length) throw new ModelFormatError(name, undefined, `file ends at byte ${bytes.length}, before [${start}, ${end})`);
    return bytes.subarray(start, end);
  }

  /** The file's bytes (fetched once), or null when the server answers 404. */
  private load(name: string): Promise<Uint8Array | null> {
    // Names also come from the folder's own files (a shard index): keep them inside it.
    if (name === '' || name.startsWith('/') || name.includes('\\') || name.split('/').some((p) => p === '' || p === '.' || p === '..'))
      return Promise.reject(new ModelFormatError(name, undefined, `expected a file name inside ${this.label}`));
    let p = this.files.get(name);
    if (!p) {
      p = this.fetchFile(name);
      this.files.set(name, p);
      p.catch(() => this.files.delete(name)); // a failed request may be retried
    }
    return p;
  }

  private async fetchFile(name: string): Promise<Uint8Array | null> {
    const url = `${this.folderUrl}${name.split('/').map(encodeURIComponent).join('/')}`;
    let res: Response;
    try {
      // Not `*/*`: a single-page-app server (vite) would answer a missing file with its index.html.
      res = await this.fetchFn(url, { headers: { Accept: 'application/octet-stream, application/json' } });
    } catch (e) {
      if (e instanceof NlftError) throw e; // the host gate's refusal says what it refused
      throw new NlftError(`${this.label}: cannot fetch ${url} (${(e as Error).message})`, 'fetch');
    }
    const html = (res.headers.get('content-type') ?? '').startsWith('text/html') && !name.endsWith('.html');
    if (res.status === 404 || (res.ok && html)) return null;
    if (!res.ok) throw new NlftError(`${this.label}: ${name}: HTTP ${res.status} from ${url}`, 'fetch');
    return new Uint8Array(await res.arrayBuffer());
  }
}
