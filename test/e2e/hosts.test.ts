/**
 * End to end, only the hosts the user chose (docs/architecture.md §9), in the built app in Chromium:
 * a first load sends requests to the app's own origin only (the harness records the page's and the
 * worker's: the demo's weights are fetched by the worker alone); the page's Content-Security-Policy
 * refuses a page-context request to another host, an inline script and an inline style; and the
 * worker's host gate refuses a Hub URL that sends the download to a host the user did not enter,
 * with a message naming it and the hosts allowed.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AppBrowser, CHROMIUM, hasChromium, type RequestLog, startApp, TMP } from '../helpers/app-browser.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';

/** A server on 127.0.0.1 answering every request with `answer` (CORS open), counting what it got. */
async function serve(answer: (path: string, res: import('node:http').ServerResponse) => void) {
  const got: string[] = [];
  const server: Server = createServer((req, res) => {
    got.push(req.url ?? '');
    res.setHeader('access-control-allow-origin', '*');
    answer(req.url ?? '/', res);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, got, close: () => new Promise<void>((ok) => server.close(() => ok())) };
}

describe.skipIf(skipOutsideCi(!hasChromium))(hasChromium ? 'hosts' : `hosts (skipped: ${CHROMIUM} is missing)`, () => {
  requirePrerequisite(hasChromium, CHROMIUM);
  let app: AppBrowser;
  let page: Page;
  let requests: RequestLog;
  const pageErrors: string[] = [];
  /** A host nobody entered: answers 200 to anything. */
  let elsewhere: Awaited<ReturnType<typeof serve>>;
  /** A "Hub" the test enters, which redirects every file to `elsewhere`. */
  let mirror: Awaited<ReturnType<typeof serve>>;

  /** Takes the problems the harness recorded (each also a page error), leaving both lists empty. */
  const takeProblems = () => {
    const taken = requests.problems.splice(0);
    pageErrors.splice(0);
    return taken;
  };

  beforeAll(async () => {
    app = await startApp('dist-hosts');
    ({ page, requests } = await app.newPage({ errors: pageErrors }));
    elsewhere = await serve((_path, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    mirror = await serve((path, res) => void res.writeHead(302, { location: `${elsewhere.url}${path}` }).end());
  });

  afterAll(async () => {
    await mirror?.close();
    await elsewhere?.close();
    await app?.close();
  });

  it("loads the demo with requests to the app's own origin only, the worker's included", async () => {
    await page.goto(app.url);
    await page.locator('[data-testid=model-status]:is([data-state=ready], [data-state=error])').waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('model-error').textContent()).toBe('');
    const own = new URL(app.url).origin;
    expect(requests.requests.length).toBeGreaterThan(5);
    expect(requests.requests.filter((r) => new URL(r.url).origin !== own)).toEqual([]);
    // The demo's weights are read by the worker's HttpFolderSource only: the log sees the worker.
    expect(requests.requests.map((r) => new URL(r.url).pathname)).toContain('/toy-math/model/model.safetensors');
    expect(pageErrors).toEqual([]);
  }, 240_000);

  it('refuses, by its Content-Security-Policy, a page request to another host, an inline script and an inline style', async () => {
    const sent = await page.evaluate(
      (url) =>
        fetch(url).then(
          () => 'sent',
          (e: Error) => `refused: ${e.message}`,
        ),
      `${elsewhere.url}/from-the-page`,
    );
    expect(sent).toBe('refused: Failed to fetch');
    const ran = await page.evaluate(() => {
      const script = document.createElement('script');
      script.textContent = 'document.body.dataset.inline = "ran"';
      document.head.append(script);
      const styled = document.createElement('p');
      styled.setAttribute('style', 'color: red');
      document.body.append(styled);
      const red = getComputedStyle(styled).color === 'rgb(255, 0, 0)';
      styled.remove();
      return { script: document.body.dataset.inline === 'ran', style: red };
    });
    expect(ran).toEqual({ script: false, style: false });
    expect(elsewhere.got).toEqual([]);
    await expect.poll(() => requests.problems.length).toBe(3);
    const problems = takeProblems();
    expect(problems.find((p) => p.includes('connect-src'))).toBe(
      `Content-Security-Policy violation: connect-src refused ${elsewhere.url}/from-the-page`,
    );
    expect(problems.some((p) => /^Content-Security-Policy violation: script-src-elem refused inline/.test(p))).toBe(true);
    expect(problems.some((p) => /^Content-Security-Policy violation: style-src-attr refused inline/.test(p))).toBe(true);
  });

  it('refuses, by the host gate, a Hub URL whose files come from a host the user did not enter', async () => {
    requests.enter(mirror.url, 'the mock Hub');
    await page.getByTestId('model-kind').selectOption('hub');
    await page.getByTestId('hub-id').fill('test-org/tiny');
    await page.getByTestId('hub-url').fill(mirror.url);
    await page.getByTestId('hub-load').click();
    await page.locator('[data-testid=model-status][data-state=error]').waitFor({ timeout: 100_000 });
    const own = new URL(app.url).origin;
    const first = mirror.got[0];
    expect(first).toMatch(/^\/test-org\/tiny\/resolve\/main\//);
    expect(await page.getByTestId('model-error').textContent()).toBe(
      `${mirror.url}${first} redirected to ${elsewhere.url}${first}, not a host you chose (its answer was not used); ` +
        `this app sends requests only to ${own} (this app), ${mirror.url} (the Hub URL)`,
    );
    await page.getByTestId('model-panel').screenshot({ path: resolve(TMP, 'hosts-refused.png') });
    // The browser follows a redirect before the gate sees its answer: the one hop is recorded, and nothing after it.
    expect(elsewhere.got).toEqual([first]);
    expect(takeProblems()).toEqual([`request to a host neither the app's nor entered by the test: GET ${elsewhere.url}${first}`]);
  });
});
