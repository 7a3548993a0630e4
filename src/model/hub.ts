/**
 * Model files from the Hugging Face Hub, or any server with its URL layout (a mirror, the tests'
 * mock hub): `<base>/<org>/<name>/resolve/<revision>/<file>`. Each file is downloaded once, whole,
 * with progress, and kept in a `FileCache` (a folder for the CLI, IndexedDB in the app); ranges are
 * then read from those bytes, so a sharded checkpoint costs one request per shard. A cached file
 * is used without asking the server again (offline use works; pin a commit as the revision to be
 * sure of what you get).
 */
import { ModelFormatError, NlftError } from '../errors.ts';
import type { HostChoice } from '../util/net.ts';
import type { FileSource } from './source.ts';

export const DEFAULT_HUB_URL = 'https://huggingface.co';

/** Where huggingface.co sends its large files (LFS and Xet: cdn-lfs.hf.co, cas-bridge.xethub.hf.co, …). */
const DEFAULT_HUB_FILE_SERVERS = 'https://hf.co';

/**
 * The hosts a Hub at `baseUrl` (empty: the default) may be reached on, for the host gate: its own
 * origin (and, over https, its subdomains), and for huggingface.co also the hf.co file servers its
 * downloads are redirected to.
 */
export function hubHosts(baseUrl: string): HostChoice[] {
  const url = baseUrl.trim() || DEFAULT_HUB_URL;
  const hub = { url, chosenAs: 'the Hub URL', subdomains: url.startsWith('https:') };
  return url.replace(/\/+$/, '') === DEFAULT_HUB_URL
    ? [hub, { url: DEFAULT_HUB_FILE_SERVERS, chosenAs: "the Hub's file servers", subdomains: true }]
    : [hub];
}

/** A model repository at a revision (branch, tag or commit). */
export interface HubRef {
  repo: string;
  revision: string;
}

const REPO = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;
const REVISION = /^[\w.-]+(\/[\w.-]+)*$/;

/** `org/name` or `org/name@revision` (default `main`), or null when `spec` is not of that form. */
export function parseHubId(spec: string): HubRef | null {
  const at = spec.indexOf('@');
  const repo = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? 'main' : spec.slice(at + 1);
  return REPO.test(repo) && REVISION.test(revision) && !`${repo}/${revision}`.split('/').some((p) => p === '.' || p === '..')
    ? { repo, revision }
    : null;
}

/** The download URL of a file of a repository. */
export function hubFileUrl(baseUrl: string, ref: HubRef, file: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/${ref.repo}/resolve/${encodeURIComponent(ref.revision)}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

/** Where downloaded files are kept, by key `<org>/<name>/<revision>/<file>`. */
export interface FileCache {
  get(key: string): Promise<Uint8Array | null>;
  put(key: string, bytes: Uint8Array): Promise<void>;
}

/** A cache that keeps nothing. */
export const NO_FILE_CACHE: FileCache = { get: async () => null, put: async () => undefined };

export interface HubSourceOptions {
  baseUrl?: string;
  cache?: FileCache;
  /** Sent as a bearer token (gated or private repositories). */
  token?: string;
  /** Progress of each download: bytes so far and the total when the server says it. */
  onDownload?: (file: string, loaded: number, total: number | null) => void;
  fetch?: typeof fetch;
}

export class HubSource implements FileSource {
  readonly label: string;
  private readonly baseUrl: string;
  private readonly cache: FileCache;
  private readonly files = new Map<string, Promise<Uint8Array | null>>();

  constructor(
    readonly ref: HubRef,
    private readonly opts: HubSourceOptions = {},
  ) {
    this.baseUrl = opts.baseUrl ?? DEFAULT_HUB_URL;
    this.cache = opts.cache ?? NO_FILE_CACHE;
    this.label = `hub:${ref.repo}@${ref.revision}`;
  }

  async size(name: string): Promise<number | null> {
    return (await this.load(name))?.length ?? null;
  }

  async read(name: string): Promise<Uint8Array> {
    const bytes = await this.load(name);
    if (!bytes) throw new ModelFormatError(name, undefined, `not found in ${this.label} (${this.url(name)} answered 404)`);
    return bytes;
  }

  async readRange(name: string, start: number, end: number): Promise<Uint8Array> {
    const bytes = await this.read(name);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start)
      throw new RangeError(`HubSource.readRange(${name}): bad range [${start}, ${end})`);
    if (end > bytes.length)
      throw new ModelFormatError(name, undefined, `file ends at byte ${bytes.length}, before the requested range [${start}, ${end})`);
    return bytes.subarray(start, end);
  }

  private url(name: string): string {
    return hubFileUrl(this.baseUrl, this.ref, name);
  }

  /** The file's bytes (cache, else download), or null when the repository has no such file. */
  private load(name: string): Promise<Uint8Array | null> {
    // Names come from the repository's own files too (a shard index): keep them inside it.
    if (name === '' || name.startsWith('/') || name.includes('\\') || name.split('/').some((p) => p === '' || p === '.' || p === '..')) {
      return Promise.reject(new ModelFormatError(name, undefined, `expected a file name inside ${this.label}`));
    }
    let p = this.files.get(name);
    if (!p) {
      p = this.fetchFile(name);
      this.files.set(name, p);
      p.catch(() => this.files.delete(name)); // a failed download may be retried
    }
    return p;
  }

  private async fetchFile(name: string): Promise<Uint8Array | null> {
    const key = `${this.ref.repo}/${this.ref.revision}/${name}`;
    const cached = await this.cache.get(key);
    if (cached) return cached;
    const url = this.url(name);
    let res: Response;
    try {
      res = await (this.opts.fetch ?? fetch)(url, { headers: this.opts.token ? { Authorization: `Bearer ${this.opts.token}` } : {} });
    } catch (e) {
      if (e instanceof NlftError) throw e; // the host gate's refusal says what it refused
      throw new NlftError(`${this.label}: cannot reach ${url} (${(e as Error).message}); check the network or the hub URL`, 'fetch');
    }
    if (res.status === 404) return null;
    if (res.status === 401 || res.status === 403) {
      throw new NlftError(
        `${this.label}: ${name}: HTTP ${res.status} — the repository is gated or private${this.opts.token ? ' and the token was refused' : '; a token is needed'}`,
        'fetch',
      );
    }
    if (!res.ok || !res.body) throw new NlftError(`${this.label}: ${name}: HTTP ${res.status} from ${url}`, 'fetch');
    const bytes = await this.download(name, res);
    await this.cache.put(key, bytes);
    return bytes;
  }

  /** The body, read chunk by chunk with progress, checked against Content-Length. */
  private async download(name: string, res: Response): Promise<Uint8Array> {
    const header = res.headers.get('content-length');
    const total = header !== null && /^\d+$/.test(header) ? Number(header) : null;
    const chunks: Uint8Array[] = [];
    let loaded = 0;
    const reader = res.body!.getReader();
    this.opts.onDownload?.(name, 0, total);
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw new NlftError(`${this.label}: the download of ${name} broke off after ${loaded} bytes (${(e as Error).message})`, 'fetch');
      }
      if (chunk.done) break;
      chunks.push(chunk.value);
      loaded += chunk.value.length;
      this.opts.onDownload?.(name, loaded, total);
    }
    if (total !== null && loaded !== total)
      throw new NlftError(`${this.label}: the download of ${name} ended at ${loaded} of ${total} bytes`, 'fetch');
    const out = new Uint8Array(loaded);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}
