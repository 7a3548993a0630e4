/**
 * The built app in Debian's Chromium (WebGPU on SwiftShader), for the e2e suites: builds with Vite's
 * JS API into test/.tmp/<dist>, serves it with `vite preview` on 127.0.0.1 (a free port), and opens
 * pages on http://localhost (a secure context, which WebGPU requires). Each e2e file starts its own
 * (vitest runs files in separate processes), building into its own folder.
 *
 * Only the hosts the user chose (docs/architecture.md §9): the built index.html must carry the
 * Content-Security-Policy and no inline script or style; every request of a page's context (the
 * page and its worker) is recorded, and one to a host other than the app's origin and those the
 * test entered (`RequestLog.enter`), or any CSP violation, is a page error, and fails `close`.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';
import { expect } from 'vitest';

export const CHROMIUM = '/usr/bin/chromium';
export const ROOT = resolve(import.meta.dirname, '../..');
export const TMP = resolve(ROOT, 'test/.tmp');
/** Where the e2e runs write the screenshots the README shows (written again by every run, so they stay current). */
export const SHOTS = resolve(ROOT, 'docs/screenshots');

export const BASE_ARGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
export const WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];

export const hasChromium = existsSync(CHROMIUM);

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => ok(port));
    });
  });
}

/** One request of a page's context, as sent. */
export interface RecordedRequest {
  method: string;
  url: string;
  /** Who it went to: "the app", or what the test entered the host as. */
  to: string;
  /** The test running when it was sent ("" in hooks). */
  test: string;
}

/** The requests of one browser context (its pages and their workers: Chromium reports a worker's fetches to the context). */
export interface RequestLog {
  readonly requests: RecordedRequest[];
  /** Requests to hosts neither the app's nor entered, and CSP violations; each is also a page error. */
  readonly problems: string[];
  /** Allows requests to `url`'s origin from now on: a host the test entered in the app (a mock Hub, a mock judge), shown as `as`. */
  enter(url: string, as: string): void;
  /** The requests per test and per host, for the README's figures. */
  summary(): string;
}

export interface AppBrowser {
  /** http://localhost:<port>/ */
  url: string;
  browser: Browser;
  /**
   * A page in a fresh browser context (its own IndexedDB), 1280×900; its uncaught errors, requests
   * to hosts not entered and CSP violations are pushed to `errors`.
   */
  newPage(opts?: { errors?: string[] }): Promise<{ page: Page; context: BrowserContext; requests: RequestLog }>;
  /** Closes the browser and the server; throws if a page's request log holds a problem. */
  close(): Promise<void>;
}

/** The parts of the page that must come from the app's own files (script, style, handlers), found in a built index.html. */
function inlineCode(html: string): string[] {
  const found: string[] = [];
  for (const m of html.matchAll(/<script\b[^>]*>/gi)) if (!/\ssrc=/i.test(m[0])) found.push(m[0]);
  for (const m of html.matchAll(/<style\b[^>]*>|\sstyle=["'][^"']*["']|\son[a-z]+=["'][^"']*["']/gi)) found.push(m[0].trim());
  return found;
}

/** The built page: its Content-Security-Policy meta, and nothing inline. */
async function checkBuiltPage(outDir: string): Promise<void> {
  const html = await readFile(resolve(outDir, 'index.html'), 'utf8');
  if (!/<meta\s+http-equiv="Content-Security-Policy"\s+content="[^"]*connect-src 'self';/.test(html))
    throw new Error(`${outDir}/index.html: expected the Content-Security-Policy meta with connect-src 'self'`);
  const inline = inlineCode(html);
  if (inline.length) throw new Error(`${outDir}/index.html: expected no inline script, style or handler, found ${inline.join(', ')}`);
}

/** Records the requests and CSP violations of `context`, whose pages are on `appUrl`. */
async function recordRequests(context: BrowserContext, appUrl: string, errors: string[]): Promise<RequestLog> {
  const entered = new Map<string, string>([[new URL(appUrl).origin, 'the app']]);
  const requests: RecordedRequest[] = [];
  const problems: string[] = [];
  const problem = (text: string) => {
    problems.push(text);
    errors.push(text);
  };
  context.on('request', (r) => {
    const url = r.url();
    const origin = /^https?:/.test(url) ? new URL(url).origin : null;
    if (origin === null) return; // data: and blob: URLs leave nothing
    const to = entered.get(origin);
    requests.push({ method: r.method(), url, to: to ?? origin, test: expect.getState().currentTestName ?? '' });
    if (!to) problem(`request to a host neither the app's nor entered by the test: ${r.method()} ${url}`);
  });
  await context.exposeBinding('__reportCspViolation', (_source, text: string) => problem(`Content-Security-Policy violation: ${text}`));
  await context.addInitScript(() =>
    document.addEventListener('securitypolicyviolation', (e) => {
      const report = (globalThis as unknown as { __reportCspViolation(text: string): void }).__reportCspViolation;
      report(`${e.effectiveDirective} refused ${e.blockedURI || 'inline code'}${e.sample ? ` (${e.sample})` : ''}`);
    }),
  );
  return {
    requests,
    problems,
    enter(url, as) {
      entered.set(new URL(url).origin, as);
    },
    summary() {
      const byTest = new Map<string, Map<string, number>>();
      for (const r of requests) {
        const hosts = byTest.get(r.test) ?? new Map<string, number>();
        hosts.set(r.to, (hosts.get(r.to) ?? 0) + 1);
        byTest.set(r.test, hosts);
      }
      const lines = [...byTest].map(
        ([test, hosts]) => `  ${test || '(hooks)'}: ${[...hosts].map(([to, n]) => `${n} to ${to}`).join(', ')}`,
      );
      return `${requests.length} requests (page and worker), ${problems.length} problems (hosts not entered, CSP violations)\n${lines.join('\n')}`;
    },
  };
}

/**
 * Builds the app into test/.tmp/`dist`, serves it and launches Chromium.
 * @param dist the build folder's name under test/.tmp (one per e2e file, so that files running at once never share it)
 * @param args Chromium flags beside the sandbox/network ones (default: WebGPU on SwiftShader)
 */
export async function startApp(dist: string, args: string[] = WEBGPU_ARGS): Promise<AppBrowser> {
  await mkdir(TMP, { recursive: true });
  const outDir = resolve(TMP, dist);
  const config = { root: ROOT, configFile: resolve(ROOT, 'vite.config.ts'), logLevel: 'warn' as const };
  await build({ ...config, build: { outDir, emptyOutDir: true } });
  await checkBuiltPage(outDir);
  const port = await freePort();
  const server: PreviewServer = await preview({ ...config, build: { outDir }, preview: { host: '127.0.0.1', port, strictPort: true } });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BASE_ARGS, ...args] });
  const url = `http://localhost:${port}/`;
  const logs: RequestLog[] = [];
  return {
    url,
    browser,
    async newPage(opts = {}) {
      const errors = opts.errors ?? [];
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const requests = await recordRequests(context, url, errors);
      logs.push(requests);
      const page = await context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      return { page, context, requests };
    },
    async close() {
      await browser.close();
      await server.close();
      for (const log of logs) console.log(`requests of ${dist}: ${log.summary()}`);
      const problems = logs.flatMap((log) => log.problems);
      if (problems.length) throw new Error(`${dist}: requests to hosts not entered or CSP violations:\n${problems.join('\n')}`);
    },
  };
}

/**
 * Trains one short run from the Train panel as it stands (its data), with this method, 1 epoch,
 * batch 4 and LoRA rank 4, and waits until it ends in `end` (the error shown, if any, is the
 * failure's message).
 */
export async function trainInApp(page: Page, method: 'sft' | 'nlft', end: 'done' | 'error' = 'done'): Promise<void> {
  await page.getByTestId('train-method').selectOption(method);
  await page.getByTestId('train-epochs').fill('1');
  await page.getByTestId('train-batch').fill('4');
  await page.getByTestId('train-rank').fill('4');
  await page.getByTestId('train-start').click();
  await page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 180_000 });
  expect(
    await page.getByTestId('train-status').getAttribute('data-state'),
    (await page.getByTestId('train-error').textContent()) ?? '',
  ).toBe(end);
}

/**
 * Waits until the status line `testid` (e.g. `eval-status`) says done or error. On a timeout the
 * failure names the line's last text (where the job stood: "Answering…", "Answered 1 of 2…"),
 * which a bare locator timeout does not.
 */
export async function waitSettled(page: Page, testid: string, timeout: number): Promise<void> {
  try {
    await page.locator(`[data-testid=${testid}]:is([data-state=done], [data-state=error])`).waitFor({ timeout });
  } catch (e) {
    const text = await page
      .getByTestId(testid)
      .textContent({ timeout: 5_000 })
      .catch(() => '(unreadable)');
    throw new Error(`${testid} did not settle within ${timeout / 1000} s; it says "${text}"`, { cause: e });
  }
}
