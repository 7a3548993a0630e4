/**
 * End to end: the built app in Debian's Chromium (WebGPU on SwiftShader), driven by Playwright.
 * Builds with Vite's JS API into test/.tmp/dist, serves it with `vite preview` on 127.0.0.1 (a free
 * port), and opens it as http://localhost (a secure context, which WebGPU requires).
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextTokenizer } from '../../src/data/tokenizer.ts';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = resolve(import.meta.dirname, '../..');
const TMP = resolve(ROOT, 'test/.tmp');
const OUT_DIR = resolve(TMP, 'dist');

const BASE_ARGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
const WEBGPU_ARGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];

const hasChromium = existsSync(CHROMIUM);

/** A TCP port free on 127.0.0.1 right now. */
function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => ok(port));
    });
  });
}

const readPublic = (file: string) => readFileSync(resolve(ROOT, 'public', file), 'utf8');
const records = readPublic('samples/gsm8k-sample.jsonl')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as { question: string; answer: string });
const tokenizer = TextTokenizer.fromJson(JSON.parse(readPublic('tokenizers/smollm2/tokenizer.json')), JSON.parse(readPublic('tokenizers/smollm2/tokenizer_config.json')));

describe.skipIf(!hasChromium)(hasChromium ? 'app in Chromium' : `app in Chromium (skipped: ${CHROMIUM} is missing)`, () => {
  let server: PreviewServer;
  let browser: Browser;
  let page: Page;
  let url: string;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    await mkdir(TMP, { recursive: true });
    const config = { root: ROOT, configFile: resolve(ROOT, 'vite.config.ts'), logLevel: 'warn' as const };
    await build({ ...config, build: { outDir: OUT_DIR, emptyOutDir: true } });
    const port = await freePort();
    server = await preview({ ...config, build: { outDir: OUT_DIR }, preview: { host: '127.0.0.1', port, strictPort: true } });
    url = `http://localhost:${port}/`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: [...BASE_ARGS, ...WEBGPU_ARGS] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('loads the demo model, lists the data, scores a record and keeps the draft across a reload', async () => {
    await page.goto(url);
    const adapter = page.getByTestId('adapter');
    await page.locator('[data-testid=adapter]:not([data-state=pending])').waitFor({ timeout: 30_000 });
    expect(await adapter.getAttribute('data-state'), (await adapter.textContent()) ?? '').toBe('ready');
    expect((await adapter.textContent())?.toLowerCase()).toContain('swiftshader');

    const list = page.getByTestId('dataset-list').locator('li');
    await expect.poll(() => list.count()).toBe(records.length);
    expect(records.length).toBe(20);

    const status = page.getByTestId('model-status');
    await page.locator('[data-testid=model-status]:is([data-state=ready], [data-state=error])').waitFor({ timeout: 60_000 });
    expect(await page.getByTestId('model-error').textContent()).toBe('');
    expect(await status.getAttribute('data-state')).toBe('ready');
    // First use on this GPU: the kernel tiles are measured, then cached in IndexedDB (checked after the reload).
    expect(await page.getByTestId('kernels').textContent()).toMatch(/^matmul \d+×\d+, lm-head \d+×\d+ \(measured now\)$/);
    expect(await page.getByTestId('gpu-bytes').textContent()).toMatch(/\d/);

    const pick = 2;
    await list.nth(pick).locator('button').click();
    expect(await page.getByTestId('prompt').inputValue()).toBe(records[pick].question);
    expect(await page.getByTestId('response').inputValue()).toBe(records[pick].answer);

    await page.getByTestId('score').click();
    const tokens = page.getByTestId('token-strip').locator('[data-logp]');
    const expected = tokenizer.encode(records[pick].answer).length;
    await expect.poll(() => tokens.count(), { timeout: 30_000 }).toBe(expected);
    expect(await page.getByTestId('score-error').textContent()).toBe('');
    const values = await tokens.evaluateAll((spans) => spans.map((s) => Number(s.getAttribute('data-logp'))));
    expect(values.every((v) => Number.isFinite(v) && v <= 0)).toBe(true);
    const sum = Number(await page.getByTestId('logprob-sum').getAttribute('data-value'));
    expect(Number.isFinite(sum)).toBe(true);
    expect(sum).toBeLessThan(0);
    expect(sum).toBeCloseTo(values.reduce((a, b) => a + b, 0), 3);
    await page.screenshot({ path: resolve(TMP, 'app.png'), fullPage: true });

    await page.getByTestId('quant').selectOption('q4');
    const ready = page.locator('[data-testid=model-status][data-state=ready]');
    await expect.poll(() => ready.textContent(), { timeout: 60_000 }).toContain('q4');

    const typed = 'A prompt typed by hand, kept across reloads.';
    await page.getByTestId('prompt').fill(typed);
    await page.locator('[data-testid=draft-status][data-state=saved]').waitFor();
    await page.reload();
    await expect.poll(() => page.getByTestId('prompt').inputValue()).toBe(typed);
    expect(await page.getByTestId('response').inputValue()).toBe(records[pick].answer);
    expect(await page.getByTestId('quant').inputValue()).toBe('q4');
    await expect.poll(() => ready.textContent(), { timeout: 60_000 }).toContain('q4');
    expect(await page.getByTestId('kernels').textContent()).toMatch(/\(measured earlier on this GPU\)$/);
    expect(pageErrors).toEqual([]);
  });

  it('says so when the browser has no WebGPU adapter', async () => {
    const plain = await chromium.launch({ executablePath: CHROMIUM, args: [...BASE_ARGS, '--disable-gpu'] });
    try {
      const p = await plain.newPage();
      await p.goto(url);
      await p.locator('[data-testid=adapter]:not([data-state=pending])').waitFor({ timeout: 30_000 });
      expect(await p.getByTestId('adapter').getAttribute('data-state')).toBe('error');
      expect(await p.getByTestId('adapter').textContent()).toMatch(/^WebGPU is not available in this browser/);
      expect(await p.getByTestId('model-status').getAttribute('data-state')).toBe('error');
      expect(await p.getByTestId('score').isDisabled()).toBe(true);
    } finally {
      await plain.close();
    }
  });
});
