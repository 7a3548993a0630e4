/**
 * End to end, the Prepare panel (built app in Chromium, WebGPU on SwiftShader, the model the app
 * loads by default): questions whose standard answers no model will hit (so every answer is wrong,
 * whatever the model) are answered, graded and judged by the template; a judgment is edited and a
 * record left out; the review survives a reload; the saved dataset trains, and the run's data holds
 * exactly the kept records with the edited judgment. Then a judge endpoint served here: it gets the
 * key as a bearer token, and the key is in no IndexedDB store nor localStorage afterwards (only
 * while "remember" is ticked); and a judge that fails (HTTP 500) is named with its URL and status
 * while the records prepared before it are kept.
 */
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AppBrowser, CHROMIUM, hasChromium, type RequestLog, SHOTS, startApp, TMP, trainInApp } from '../helpers/app-browser.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';
import { type MockChat, startMockChat } from '../helpers/mock-chat.ts';

const SECRET = 'sk-e2e-secret-7f3a';
const JUDGMENT = 'The second step adds where it should multiply.';
const EDITED = 'EDITED: the total is counted twice.';

/** Five questions whose answers are numbers no answer will give. */
const QUESTIONS = [3, 4, 5, 6, 7].map((n) => ({ question: `What is ${n} times 2?`, answer: `${n} * 2 = ${n * 2}\n#### 9876543${n}1` }));

/** Every string (and text of bytes) in this origin's IndexedDB stores, localStorage and sessionStorage that contains `secret`, as "store: where". */
function findSecret(page: Page, secret: string): Promise<string[]> {
  return page.evaluate(async (secret) => {
    const hits: string[] = [];
    const walk = (v: unknown, where: string): void => {
      if (typeof v === 'string') {
        if (v.includes(secret)) hits.push(where);
      } else if (v instanceof Uint8Array) {
        if (new TextDecoder().decode(v).includes(secret)) hits.push(where);
      } else if (Array.isArray(v)) {
        v.forEach((x, i) => walk(x, `${where}[${i}]`));
      } else if (typeof v === 'object' && v !== null) {
        for (const [k, x] of Object.entries(v)) walk(x, `${where}.${k}`);
      }
    };
    const done = <T>(r: IDBRequest<T>) =>
      new Promise<T>((ok, fail) => {
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
    for (const info of await indexedDB.databases()) {
      const db = await done(indexedDB.open(info.name!));
      for (const store of Array.from(db.objectStoreNames)) {
        const s = db.transaction(store).objectStore(store);
        const [keys, values] = await Promise.all([done(s.getAllKeys()), done(s.getAll())]);
        keys.forEach((k, i) => walk([String(k), values[i]], `${info.name}/${store}/${String(k)}`));
      }
      db.close();
    }
    for (const [name, storage] of [
      ['localStorage', localStorage],
      ['sessionStorage', sessionStorage],
    ] as const) {
      for (let i = 0; i < storage.length; i++) {
        const k = storage.key(i)!;
        walk([k, storage.getItem(k)], `${name}/${k}`);
      }
    }
    return hits;
  }, secret);
}

/** Runs a preparation with the panel as set and waits for it to end in `state`. */
async function prepare(page: Page, limit: number, state: 'done' | 'error' = 'done') {
  await page.getByTestId('prepare-limit').fill(String(limit));
  await page.getByTestId('prepare-max-new').fill('8');
  await page.getByTestId('prepare-start').click();
  await page.locator('[data-testid=prepare-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 120_000 });
  expect(
    await page.getByTestId('prepare-status').getAttribute('data-state'),
    (await page.getByTestId('prepare-error').textContent()) ?? '',
  ).toBe(state);
}

describe.skipIf(skipOutsideCi(!hasChromium))(
  hasChromium ? 'prepare in Chromium' : `prepare in Chromium (skipped: ${CHROMIUM} is missing)`,
  () => {
    requirePrerequisite(hasChromium, CHROMIUM);
    let app: AppBrowser;
    let page: Page;
    let requests: RequestLog;
    let chat: MockChat;
    const pageErrors: string[] = [];
    const questions = resolve(TMP, 'prepare-questions.jsonl');
    /** Requests to the flaky judge so far (it fails from the third on). */
    let flaky = 0;

    beforeAll(async () => {
      app = await startApp('dist-prepare');
      ({ page, requests } = await app.newPage({ errors: pageErrors }));
      await writeFile(questions, QUESTIONS.map((q) => JSON.stringify(q)).join('\n'));
      chat = await startMockChat((body) => {
        if (body.model !== 'judge-flaky') return JUDGMENT;
        flaky++;
        return flaky > 2 ? 500 : JUDGMENT;
      });
      requests.enter(chat.url, 'the mock judge');
      await page.goto(app.url);
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 90_000 });
      await page.getByTestId('prepare-file').setInputFiles(questions);
    });

    afterAll(async () => {
      await chat?.close();
      await app?.close();
    });

    it('prepares with the template judgment, edits and leaves out records, keeps the review across a reload and trains on the saved dataset', async () => {
      await prepare(page, 5);
      const rows = page.getByTestId('prepare-row');
      expect(await rows.count()).toBe(5);
      expect(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-correct')))).toEqual(Array(5).fill('false'));
      expect(await page.getByTestId('prepare-grade').first().textContent()).toMatch(/^wrong: expected 987654331, got /);
      expect(await page.getByTestId('prepare-judgment').first().inputValue()).toMatch(/but the correct answer is 987654331\./);
      await page.getByTestId('prepare-panel').screenshot({ path: resolve(SHOTS, 'prepare.png') });

      // Edit the first judgment, leave out the second record (a record without any answer is left out already).
      await page.getByTestId('prepare-judgment').first().fill(EDITED);
      await page.getByTestId('prepare-judgment').first().blur();
      await rows.nth(1).getByTestId('prepare-drop').check();
      const dropped = await rows.evaluateAll((trs) => trs.filter((tr) => tr.getAttribute('data-dropped') === 'true').length);
      expect(dropped).toBeGreaterThanOrEqual(1);
      const kept = 5 - dropped;
      // An empty judgment is refused, naming the record.
      await rows.nth(2).getByTestId('prepare-judgment').fill(' ');
      await page.getByTestId('prepare-save').click();
      expect(await page.getByTestId('prepare-error').textContent()).toBe(
        'record #3: the judgment is empty; write what is wrong in the answer, or drop the record.',
      );
      await rows.nth(2).getByTestId('prepare-judgment').fill(JUDGMENT);
      await rows.nth(2).getByTestId('prepare-judgment').blur();
      await page.getByTestId('prepare-name').fill('e2e-prepared');
      await page.getByTestId('prepare-save').click();
      const saved = page.getByTestId('prepare-saved-row');
      await expect.poll(() => saved.count()).toBe(1);
      expect(await saved.locator('td').nth(2).textContent()).toBe(`${kept} of 5`);

      // Nothing lost on reload: the review (edits included) and the saved dataset.
      await page.reload();
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 90_000 });
      await expect.poll(() => rows.count()).toBe(5);
      expect(await page.getByTestId('prepare-judgment').first().inputValue()).toBe(EDITED);
      expect(await rows.nth(1).getAttribute('data-dropped')).toBe('true');
      expect(await saved.count()).toBe(1);

      await saved.getByTestId('prepare-saved-train').click();
      expect(await page.getByTestId('train-data').textContent()).toMatch(/^e2e-prepared\.json \(/);
      await trainInApp(page, 'nlft');
      // The run's stored data is the kept records, with the edited judgment.
      const data = await page.evaluate(async () => {
        const db = await new Promise<IDBDatabase>((ok, fail) => {
          const r = indexedDB.open('nlft-studio');
          r.onsuccess = () => ok(r.result);
          r.onerror = () => fail(r.error);
        });
        const s = db.transaction('runFiles').objectStore('runFiles');
        const keys = await new Promise<IDBValidKey[]>((ok) => {
          const r = s.getAllKeys();
          r.onsuccess = () => ok(r.result);
        });
        const key = keys.map(String).find((k) => k.endsWith('/dataset'))!;
        const bytes = await new Promise<Uint8Array>((ok) => {
          const r = s.get(key);
          r.onsuccess = () => ok(r.result);
        });
        db.close();
        return new TextDecoder().decode(bytes);
      });
      const records = JSON.parse(data) as Array<{ id: string; input: string; judgment: string | null }>;
      expect(records).toHaveLength(kept);
      expect(records[0]).toMatchObject({ id: '#1', input: QUESTIONS[0].question, judgment: EDITED });
      expect(records.map((r) => r.id)).not.toContain('#2');
      expect(pageErrors).toEqual([]);
    });

    it('asks a judge endpoint with the key, which stays out of storage unless remembered', async () => {
      await page.getByTestId('prepare-file').setInputFiles(questions); // the reload forgot the picked file
      await page.getByTestId('prepare-judge').selectOption('chat');
      await page.getByTestId('prepare-judge-url').fill(chat.url);
      await page.getByTestId('prepare-judge-model').fill('judge-ok');
      await page.getByTestId('prepare-judge-key').fill(SECRET);
      const before = chat.requests.length;
      await prepare(page, 3);
      const judgments = await page.getByTestId('prepare-judgment').evaluateAll((els) => els.map((e) => (e as HTMLTextAreaElement).value));
      expect(judgments).toEqual(Array(3).fill(JUDGMENT));
      const got = chat.requests.slice(before);
      expect(got).toHaveLength(3);
      // The worker sends them (the page's policy allows its own origin only), and the harness records them.
      expect(requests.requests.filter((r) => r.method === 'POST' && r.url === `${chat.url}/chat/completions`)).toHaveLength(3);
      for (const r of got) {
        expect(r.headers.authorization).toBe(`Bearer ${SECRET}`);
        expect(r.body.model).toBe('judge-ok');
      }
      expect(await page.getByTestId('prepare-summary').textContent()).toContain(`judged by judge-ok at ${chat.url}/chat/completions`);
      expect(await findSecret(page, SECRET)).toEqual([]);
      // Remembered on request (and said where), forgotten when unticked.
      await page.getByTestId('prepare-judge-remember').check();
      expect(await page.getByTestId('prepare-judge-key-hint').textContent()).toContain('IndexedDB (database nlft-studio, store settings)');
      await expect.poll(() => findSecret(page, SECRET)).toEqual(['nlft-studio/settings/judge[1].apiKey']);
      await page.getByTestId('prepare-judge-remember').uncheck();
      await expect.poll(() => findSecret(page, SECRET)).toEqual([]);
    });

    it('names a failing judge with its URL and status and keeps the records prepared before it', async () => {
      await page.getByTestId('prepare-judge-model').fill('judge-flaky');
      await prepare(page, 5, 'error');
      expect(await page.getByTestId('prepare-error').textContent()).toBe(
        `judge ${chat.url}/chat/completions: HTTP 500: {"error": "refused"}. The 2 records prepared before it are kept below.`,
      );
      expect(await page.getByTestId('prepare-row').count()).toBe(2);
      const judgments = await page.getByTestId('prepare-judgment').evaluateAll((els) => els.map((e) => (e as HTMLTextAreaElement).value));
      expect(judgments).toEqual([JUDGMENT, JUDGMENT]);
      await page.getByTestId('prepare-panel').screenshot({ path: resolve(SHOTS, 'prepare-judge-error.png') });
      expect(pageErrors).toEqual([]);
    });
  },
);
