/**
 * The host gate: the one place the app's requests pass (docs/architecture.md §9). A page or worker
 * may send requests to its own origin and, while a call that names them runs, to the hosts the
 * person entered for that call (the Hub URL of a model or scorer, the judge endpoint of a
 * preparation); any other URL is refused with a `HostNotChosenError` naming it and the origins
 * allowed. The browser follows redirects itself, so a response that ends on a host not chosen is
 * refused after the fact and its body left unread.
 */
import { HostNotChosenError } from '../errors.ts';

/** A host the person entered, as the gate allows it. */
export interface HostChoice {
  /** An address on the host, e.g. the Hub URL `https://huggingface.co` (its origin is what counts). */
  url: string;
  /** What the person entered it as, for messages: "the Hub URL", "the judge endpoint". */
  chosenAs: string;
  /** Also allow https subdomains of its host (a Hub's file servers: huggingface.co's LFS files come from cdn-lfs.hf.co). */
  subdomains?: boolean;
}

/** An allowed origin, with how many running calls allow it. */
interface Allowed {
  origin: URL;
  chosenAs: string;
  subdomains: boolean;
  calls: number;
}

/** The origins a browsing context (the page or its worker) may send requests to. */
export class HostGate {
  readonly #base: URL;
  readonly #send: typeof fetch;
  readonly #allowed = new Map<string, Allowed>();

  /**
   * @param location the context's own address (`self.location.href`): its origin is always allowed, relative URLs resolve against it
   * @param send what sends an allowed request (the context's own `fetch`, taken before the gate replaces it)
   */
  constructor(location: string, send: typeof fetch) {
    this.#base = new URL(location);
    this.#send = send;
  }

  /**
   * Runs `job` with `choices` allowed besides the own origin, until it settles. Calls may overlap:
   * an origin stays allowed while any running call chose it. A choice that is not an http(s)
   * address allows nothing (the job's own request then names it).
   */
  async during<T>(choices: readonly HostChoice[], job: () => Promise<T>): Promise<T> {
    const keys: string[] = [];
    for (const c of choices) {
      const origin = httpOrigin(c.url);
      if (!origin) continue;
      const key = `${origin.origin} ${c.subdomains === true}`;
      const entry = this.#allowed.get(key) ?? { origin, chosenAs: c.chosenAs, subdomains: c.subdomains === true, calls: 0 };
      entry.calls++;
      this.#allowed.set(key, entry);
      keys.push(key);
    }
    try {
      return await job();
    } finally {
      for (const key of keys) {
        const entry = this.#allowed.get(key)!;
        if (--entry.calls === 0) this.#allowed.delete(key);
      }
    }
  }

  /** The origins allowed now, as messages name them: "http://localhost:5173 (this app), https://huggingface.co (the Hub URL)". */
  describe(): string {
    const own = `${this.#base.origin} (this app)`;
    const chosen = [...this.#allowed.values()].map(
      (a) => `${a.subdomains ? `${a.origin.origin} and its subdomains` : a.origin.origin} (${a.chosenAs})`,
    );
    return [own, ...chosen].join(', ');
  }

  /** Whether a request may go to `url` now. */
  allows(url: string): boolean {
    const target = httpOrigin(url, this.#base);
    if (!target) return false;
    if (target.origin === this.#base.origin) return true;
    for (const a of this.#allowed.values()) {
      if (target.origin === a.origin.origin) return true;
      if (a.subdomains && target.protocol === 'https:' && target.hostname.endsWith(`.${a.origin.hostname}`)) return true;
    }
    return false;
  }

  /**
   * `fetch` through the gate: refuses a URL that is not allowed before sending anything, and a
   * response redirected to a host that is not.
   *
   * @throws HostNotChosenError naming the URL and the origins allowed
   */
  readonly fetch: typeof fetch = async (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    if (!this.allows(url))
      throw new HostNotChosenError(url, `${url}: not a host you chose; this app sends requests only to ${this.describe()}`);
    const res = await this.#send(input, init);
    if (res.redirected && !this.allows(res.url)) {
      await res.body?.cancel();
      throw new HostNotChosenError(
        res.url,
        `${url} redirected to ${res.url}, not a host you chose (its answer was not used); this app sends requests only to ${this.describe()}`,
      );
    }
    return res;
  };
}

/** The origin of an http(s) address (relative to `base` when given), or null for anything else. */
function httpOrigin(url: string, base?: URL): URL | null {
  let u: URL;
  try {
    u = new URL(url, base);
  } catch {
    return null;
  }
  return u.protocol === 'http:' || u.protocol === 'https:' ? new URL(u.origin) : null;
}

let contextGate: HostGate | undefined;

/**
 * The gate of this browsing context (the page's or the worker's), made on first use for its own
 * origin around the context's `fetch`.
 */
export function hostGate(): HostGate {
  contextGate ??= new HostGate(globalThis.location.href, globalThis.fetch.bind(globalThis));
  return contextGate;
}
