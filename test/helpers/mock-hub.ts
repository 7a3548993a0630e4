/**
 * A local stand-in for the Hugging Face Hub: serves folders under `/<org>/<name>/resolve/<revision>/<file>`
 * like huggingface.co (weights files answer with a 302 to a `/cdn/...` URL, as LFS files do there),
 * answers 404 for unknown repositories or files and 401 for repositories marked gated, sends CORS
 * headers as huggingface.co does (the app fetches from its worker), and counts requests per path so
 * tests can see what a cache saved. With `hold`, every download of one file stops after its first
 * bytes until the test releases it, so a test can cut a download (reload the page) mid-file.
 */
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface MockHub {
  url: string;
  /** GET requests per file path (`<org>/<name>/<revision>/<file>`), CDN redirects counted once. */
  gets: Map<string, number>;
  /** Downloads of the held file whose first bytes went out and that now wait for `release` (0 without `hold`). */
  held(): number;
  /** Lets the held downloads, and every later one, send the rest of the file. */
  release(): void;
  close(): Promise<void>;
}

/** A file whose downloads stop after their first bytes. */
export interface MockHubHold {
  /** Its path, `<org>/<name>/<revision>/<file>` (as `gets` counts it). */
  file: string;
  /** How many bytes go out before the download waits (fewer than the file has). */
  afterBytes: number;
}

/**
 * @param repos `org/name@revision` → folder served for it
 * @param gated repositories (`org/name`) that answer 401
 * @param hold a file whose downloads stop after `afterBytes` until `release()`
 */
export async function startMockHub(repos: Record<string, string>, gated: string[] = [], hold?: MockHubHold): Promise<MockHub> {
  const gets = new Map<string, number>();
  let held = 0;
  let release = () => {};
  const released = new Promise<void>((ok) => (release = ok));
  const server: Server = createServer((req, res) => {
    res.setHeader('access-control-allow-origin', '*');
    const u = new URL(req.url ?? '/', 'http://hub');
    const parts = u.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const cdn = parts[0] === 'cdn';
    const [org, name, resolve, revision, ...rest] = cdn ? parts.slice(1) : parts;
    const repo = `${org}/${name}`;
    const dir = repos[`${repo}@${revision}`];
    if ((!cdn && resolve !== 'resolve') || !dir || rest.length === 0) return void res.writeHead(404).end('Repository not found');
    if (gated.includes(repo)) return void res.writeHead(401).end('gated');
    const file = path.join(dir, ...rest);
    let size: number;
    try {
      const st = statSync(file);
      if (!st.isFile()) throw new Error('not a file');
      size = st.size;
    } catch {
      return void res.writeHead(404).end('Entry not found');
    }
    if (!cdn && rest.at(-1)!.endsWith('.safetensors')) {
      return void res
        .writeHead(302, { location: `/cdn/${[org, name, 'resolve', revision, ...rest].map(encodeURIComponent).join('/')}` })
        .end();
    }
    const key = `${repo}/${revision}/${rest.join('/')}`;
    if (req.method === 'GET') gets.set(key, (gets.get(key) ?? 0) + 1);
    res.writeHead(200, { 'content-length': size, 'content-type': 'application/octet-stream' });
    if (req.method === 'HEAD') return void res.end();
    if (key !== hold?.file) return void createReadStream(file).pipe(res);
    const bytes = readFileSync(file);
    let waiting = false;
    res.once('close', () => void (waiting && held--));
    res.write(bytes.subarray(0, hold.afterBytes), () => {
      if (res.destroyed) return;
      waiting = true;
      held++;
      void released.then(() => res.destroyed || res.end(bytes.subarray(hold.afterBytes)));
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    gets,
    held: () => held,
    release,
    close: () => {
      release();
      return new Promise((ok) => server.close(() => ok()));
    },
  };
}
