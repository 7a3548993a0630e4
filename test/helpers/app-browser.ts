/**
 * The built app in Debian's Chromium (WebGPU on SwiftShader), for the e2e suites: builds with Vite's
 * JS API into test/.tmp/<dist>, serves it with `vite preview` on 127.0.0.1 (a free port), and opens
 * pages on http://localhost (a secure context, which WebGPU requires). Each e2e file starts its own
 * (vitest runs files in separate processes), building into its own folder.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
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

export interface AppBrowser {
  /** http://localhost:<port>/ */
  url: string;
  browser: Browser;
  /** A page in a fresh browser context (its own IndexedDB), 1280×900; its uncaught errors are pushed to `errors`. */
  newPage(opts?: { errors?: string[] }): Promise<{ page: Page; context: BrowserContext }>;
  close(): Promise<void>;
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
  const port = await freePort();
  const server: PreviewServer = await preview({ ...config, build: { outDir }, preview: { host: '127.0.0.1', port, strictPort: true } });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BASE_ARGS, ...args] });
  return {
    url: `http://localhost:${port}/`,
    browser,
    async newPage(opts = {}) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      page.on('pageerror', (e) => opts.errors?.push(e.message));
      return { page, context };
    },
    async close() {
      await browser.close();
      await server.close();
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
