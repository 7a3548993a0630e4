/**
 * End to end, the Library and Storage views (built app in Chromium, WebGPU on SwiftShader, the toy-math
 * demo model): the run an earlier version kept moves into the library on upgrade; two short runs are
 * both listed, renamed, kept across a reload, the first one's adapter is used for an evaluation and
 * an entry deleted; PEFT folders written here are imported (a good one, and one with a tensor of
 * the wrong shape, refused naming it); the Storage view lists what is stored, and a quota forced
 * below what is stored through the DevTools protocol refuses a run's write without losing anything
 * and names what to delete; deleting works while it is full, and the run is stored once the quota
 * is lifted.
 */
import { readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { BrowserContext, CDPSession, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { peftAdapterFiles, readPeftAdapter } from '../../src/export/peft.ts';
import { parseLlamaConfig } from '../../src/model/config.ts';
import { DEFAULT_LORA, initLora } from '../../src/model/lora.ts';
import { writePeftAdapter } from '../../src/node/adapter-files.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { DEFAULT_SALIENCY } from '../../src/nlft/saliency.ts';
import { DEFAULT_TEMPLATES } from '../../src/nlft/templates.ts';
import { newRun } from '../../src/storage/runs.ts';
import { DEFAULT_TRAIN } from '../../src/train/trainer.ts';
import { type AppBrowser, CHROMIUM, hasChromium, ROOT, SHOTS, startApp, TMP, trainInApp, waitSettled } from '../helpers/app-browser.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';

const toyModel = resolve(ROOT, 'public/toy-math/model');
const toyConfig = parseLlamaConfig(JSON.parse(readFileSync(resolve(toyModel, 'config.json'), 'utf8')), 'toy-math config.json');
/** Six records of the toy-math sample, picked as the Train panel's file: batch 4, one epoch = 2 steps. */
const TRAIN_FILE = {
  name: 'toy-6.json',
  mimeType: 'application/json',
  buffer: Buffer.from(JSON.stringify(JSON.parse(readFileSync(resolve(ROOT, 'public/samples/toy-math-nlft-40.json'), 'utf8')).slice(0, 6))),
};
const LEGACY_ID = '2026-01-01T00:00:00.000Z';

/** The run record a version-4 app kept under `last` (no name yet), trained with SFT for one step. */
function legacyRun() {
  const run = newRun({
    method: 'sft',
    train: { ...DEFAULT_TRAIN, epochs: 1 },
    lora: { ...DEFAULT_LORA, r: 4, alpha: 4 },
    maxLen: 256,
    saliency: DEFAULT_SALIENCY,
    templates: DEFAULT_TEMPLATES,
    data: { name: 'old-data.json', bytes: new Uint8Array(3) },
  });
  const { name: _, ...record } = run;
  const m = { step: 1, totalSteps: 1, epoch: 0, loss: 2, tokens: 10, ms: 5, lr: 1e-3, gradNorm: 1, peakBytes: 1, samples: [] };
  return { ...record, startedAt: LEGACY_ID, status: 'done', totalSteps: 1, metrics: [m] };
}

/**
 * The quota the origin has until a test forces it lower. It bounds the free space Chromium's
 * IndexedDB keeps as allowance between its quota look-ups (for up to 30 s), so a write bigger than
 * it always makes IndexedDB look the quota up again.
 */
const QUOTA = 32 * 1024 ** 2;
/** The test's own database beside the app's, for the write that shows the browser refusing writes. */
const PROBE_DB = 'quota-probe';

/** Writes `bytes` bytes to the probe database; resolves '' when stored, else the transaction's error name. */
function probeWrite(page: Page, bytes: number): Promise<string> {
  return page.evaluate(
    async ({ name, bytes }) => {
      const open = indexedDB.open(name, 1);
      open.onupgradeneeded = () => open.result.createObjectStore('bytes');
      const db = await new Promise<IDBDatabase>((ok, fail) => {
        open.onsuccess = () => ok(open.result);
        open.onerror = () => fail(open.error);
      });
      const tx = db.transaction('bytes', 'readwrite');
      tx.objectStore('bytes').put(new Uint8Array(bytes), 'probe');
      const outcome = await new Promise<string>((ok) => {
        tx.oncomplete = () => ok('');
        tx.onabort = () => ok(tx.error?.name ?? 'AbortError');
      });
      db.close();
      return outcome;
    },
    { name: PROBE_DB, bytes },
  );
}

/** Trains one run on six records (batch 4, one epoch: 2 steps) and waits for it to end. */
async function train(page: Page, method: 'sft' | 'nlft', end: 'done' | 'error' = 'done') {
  await page.getByTestId('train-file').setInputFiles(TRAIN_FILE);
  await trainInApp(page, method, end);
}

/** The library's row of entry `id`. */
const row = (page: Page, id: string) => page.locator(`[data-testid=library-row][data-id="${id}"]`);

describe.skipIf(skipOutsideCi(!hasChromium))(
  hasChromium ? 'library in Chromium' : `library in Chromium (skipped: ${CHROMIUM} is missing)`,
  () => {
    requirePrerequisite(hasChromium, CHROMIUM);
    let app: AppBrowser;
    let page: Page;
    let context: BrowserContext;
    let cdp: CDPSession;
    let origin: string;
    const pageErrors: string[] = [];
    /** The ids of the two runs trained here (SFT, then NLFT). */
    const ids: string[] = [];

    beforeAll(async () => {
      app = await startApp('dist-library');
      ({ page, context } = await app.newPage({ errors: pageErrors }));
      // Set before the origin first stores anything, so that no allowance IndexedDB keeps is bigger than QUOTA.
      cdp = await context.newCDPSession(page);
      origin = new URL(app.url).origin;
      await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: QUOTA });
    });

    afterAll(async () => {
      await app?.close();
    });

    it('moves the earlier run in, keeps every run, renames, reloads, uses the first adapter for an evaluation and deletes an entry', async () => {
      // A database as version 4 left it: one run under `last` in `runs`, with its data apart.
      await page.goto(`${app.url}favicon.svg`);
      await page.evaluate(
        async ({ record, data }) => {
          const open = indexedDB.open('nlft-studio', 4);
          open.onupgradeneeded = () => {
            for (const name of ['settings', 'tuning', 'runs', 'files']) open.result.createObjectStore(name);
          };
          const db = await new Promise<IDBDatabase>((ok, fail) => {
            open.onsuccess = () => ok(open.result);
            open.onerror = () => fail(open.error);
          });
          const tx = db.transaction('runs', 'readwrite');
          tx.objectStore('runs').put(record, 'last');
          tx.objectStore('runs').put(new Uint8Array(data), 'last:dataset');
          await new Promise((ok) => (tx.oncomplete = ok));
          db.close();
        },
        { record: legacyRun(), data: [1, 2, 3] },
      );
      await page.goto(app.url);
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
      await row(page, LEGACY_ID).waitFor();
      expect(await row(page, LEGACY_ID).locator('[data-col=method]').textContent()).toBe('SFT');
      expect(await row(page, LEGACY_ID).locator('[data-col=data]').textContent()).toBe('old-data.json');
      expect(await row(page, LEGACY_ID).locator('[data-col=steps]').textContent()).toBe('1/1');

      await train(page, 'sft');
      await train(page, 'nlft');
      const rows = page.getByTestId('library-row');
      await expect.poll(() => rows.count()).toBe(3);
      ids.push(...(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id')!))).slice(0, 2).reverse());
      const [sft, nlft] = ids;
      // The form took its NLFT options from the newest stored run, the moved one (the authors' defaults): the preset says so.
      expect(await row(page, nlft).locator('[data-col=method]').textContent()).toBe('NLFT (authors)');
      expect(await row(page, sft).locator('[data-col=method]').textContent()).toBe('SFT');
      for (const id of ids) {
        expect(await row(page, id).locator('[data-col=data]').textContent()).toBe('toy-6.json');
        expect(await row(page, id).locator('[data-col=steps]').textContent()).toBe('2/2');
        expect(await row(page, id).locator('[data-col=status]').textContent()).toBe('done');
      }
      expect(await row(page, nlft).getAttribute('data-in-use')).toBe('true'); // the run trained last is on the model

      await row(page, sft).getByTestId('library-rename').click();
      await row(page, sft).getByTestId('library-name').fill('sft baseline');
      await row(page, sft).getByTestId('library-save-name').click();
      await expect.poll(() => row(page, sft).locator('td.name').textContent()).toBe('sft baseline');
      await page.reload();
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
      await expect.poll(() => rows.count()).toBe(3);
      expect(await row(page, sft).locator('td.name').textContent()).toBe('sft baseline');

      // The first run's adapter on the model, then an evaluation: its accuracy shows in its row.
      await row(page, sft).getByTestId('library-use').click();
      await page.locator('[data-testid=library-status]:is([data-state=ready], [data-state=error])').waitFor({ timeout: 60_000 });
      expect(await page.getByTestId('library-error').textContent()).toBe('');
      expect(await page.getByTestId('library-status').textContent()).toBe(
        'The playground and Evaluate now use the adapter of sft baseline.',
      );
      expect(await row(page, sft).getAttribute('data-in-use')).toBe('true');
      await page.getByTestId('eval-limit').fill('2');
      await page.getByTestId('eval-max-new').fill('8');
      await page.getByTestId('eval-start').click();
      await waitSettled(page, 'eval-status', 120_000);
      expect(await page.getByTestId('eval-status').textContent()).toMatch(/^Accuracy [0-2]\/2 = .+trained adapter \(r 4 on /);
      await expect.poll(() => row(page, sft).locator('[data-col=accuracy]').textContent()).toMatch(/^[0-2]\/2 = [\d.]+%$/);
      expect(await row(page, nlft).locator('[data-col=accuracy]').textContent()).toBe('–');

      // Open: its settings, loss chart and downloads; the weights download is the run's adapter.
      await row(page, sft).getByTestId('library-open').click();
      const detail = page.getByTestId('library-detail');
      expect(await detail.getByTestId('loss-chart').getAttribute('data-steps')).toBe('2');
      expect(await detail.getByTestId('library-settings').textContent()).toContain('r 4, alpha 4');
      const dir = resolve(TMP, 'library-download');
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      for (const id of ['export-config', 'export-weights']) {
        const [download] = await Promise.all([page.waitForEvent('download'), detail.getByTestId(id).click()]);
        await download.saveAs(resolve(dir, download.suggestedFilename()));
      }
      expect((await readPeftAdapter(new FolderSource(dir), toyConfig)).config.r).toBe(4);
      await page.getByTestId('library-panel').screenshot({ path: resolve(SHOTS, 'library.png') });

      // Delete asks first; Keep keeps it.
      await row(page, LEGACY_ID).getByTestId('library-delete').click();
      await row(page, LEGACY_ID).getByTestId('library-cancel-delete').click();
      expect(await rows.count()).toBe(3);
      await row(page, LEGACY_ID).getByTestId('library-delete').click();
      await row(page, LEGACY_ID).getByTestId('library-confirm-delete').click();
      await expect.poll(() => rows.count()).toBe(2);
      expect(pageErrors).toEqual([]);
    }, 420_000);

    it('imports a PEFT folder checked against the model, and refuses one with a tensor of the wrong shape, naming it', async () => {
      const lora = initLora(toyConfig, { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'v_proj'] }, 7);
      const config = { r: 4, alpha: 8, dropout: 0, targets: ['q_proj', 'v_proj'] as const };
      const good = resolve(TMP, 'library-import', 'peft-good');
      const bad = resolve(TMP, 'library-import', 'peft-bad');
      await rm(resolve(TMP, 'library-import'), { recursive: true, force: true });
      await writePeftAdapter(
        good,
        peftAdapterFiles(lora, { ...config, targets: [...config.targets] }, { baseModel: 'someone/tiny-llama' }),
      );
      const v = lora[1].v_proj!;
      const cut = [...lora];
      cut[1] = { ...lora[1], v_proj: { ...v, B: v.B.slice(0, v.B.length - 8 * 4) } }; // 8 rows short
      await writePeftAdapter(bad, peftAdapterFiles(cut, { ...config, targets: [...config.targets] }, { baseModel: 'someone/tiny-llama' }));

      const rows = page.getByTestId('library-row');
      await page.getByTestId('library-import').setInputFiles(bad);
      await page.locator('[data-testid=library-status][data-state=error]').waitFor({ timeout: 60_000 });
      const kv = toyConfig.numKvHeads * (toyConfig.hiddenSize / toyConfig.numHeads);
      expect(await page.getByTestId('library-error').textContent()).toBe(
        `adapter_model.safetensors (base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight): expected shape [${kv}, 4] (r 4), found [${kv - 8}, 4]`,
      );
      expect(await rows.count()).toBe(2);

      await page.getByTestId('library-import').setInputFiles(good);
      await page.locator('[data-testid=library-status][data-state=ready]').waitFor({ timeout: 60_000 });
      expect(await page.getByTestId('library-status').textContent()).toMatch(
        /^Imported peft-good \(its config names someone\/tiny-llama as its base; the shapes fit\); the playground and Evaluate now use it\.$/,
      );
      await expect.poll(() => rows.count()).toBe(3);
      const imported = page.locator('[data-testid=library-row][data-kind=imported]');
      expect(await imported.getAttribute('data-in-use')).toBe('true');
      expect(await imported.locator('[data-col=method]').textContent()).toBe('imported LoRA (r 4)');
      // An evaluation with it is counted in its row; its GGUF is offered with the PEFT files.
      await page.getByTestId('eval-limit').fill('1');
      await page.getByTestId('eval-start').click();
      await waitSettled(page, 'eval-status', 120_000);
      await expect.poll(() => imported.locator('[data-col=accuracy]').textContent()).toMatch(/^[01]\/1 = [\d.]+%$/);
      await imported.getByTestId('library-open').click();
      expect(await page.getByTestId('library-detail').getByTestId('export-gguf').textContent()).toMatch(/^adapter\.gguf \(/);
      expect(pageErrors).toEqual([]);
    }, 240_000);

    it('lists what is stored with sizes; a quota forced below it refuses a run and loses nothing, deleting works while full, and the run is stored once the quota is lifted', async () => {
      await page.reload();
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
      const items = page.getByTestId('storage-row');
      await expect.poll(() => items.count()).toBeGreaterThanOrEqual(5);
      const kinds = await items.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-kind')));
      // (No kernel tuning: a small model on SwiftShader runs the preset; test/e2e/app.test.ts lists a measured one.)
      for (const k of ['run', 'dataset', 'checkpoint', 'imported', 'evaluations']) expect(kinds).toContain(k);
      const estimate = page.getByTestId('storage-estimate');
      expect(await estimate.textContent()).toMatch(/^The browser counts .+ used of the .+ it allows this app/);
      expect(await page.getByTestId('storage-persisted').getAttribute('data-state')).toMatch(/^(true|false)$/);
      await page.getByTestId('storage-panel').screenshot({ path: resolve(SHOTS, 'storage.png') });

      const libraryIds = () => page.getByTestId('library-row').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id')!));
      /** What the Storage view lists (its kind, entry and size), in one order. */
      const storedItems = async () =>
        (await items.evaluateAll((trs) => trs.map((tr) => `${tr.dataset.kind} ${tr.dataset.id} ${tr.dataset.bytes}`))).sort();
      /** The Storage view measured and listed again (the store read back), after whatever came before. */
      const listedAgain = async () => {
        await estimate.evaluate((p) => void (p.dataset.usage = 'stale'));
        await page.getByTestId('storage-refresh').click();
        await expect.poll(() => estimate.getAttribute('data-usage')).toMatch(/^\d+$/);
        return storedItems();
      };
      const before = await libraryIds();
      const kept = await listedAgain();

      // The quota 1 byte: below anything stored, so every write that puts a value is refused, whatever Chromium's
      // usage figure says. IndexedDB answers from its allowance until a write exceeds it; a probe bigger than any
      // allowance (QUOTA) makes it look the quota up: refused, and from then on every write is checked.
      await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1 });
      expect(await probeWrite(page, QUOTA + 1)).toBe('QuotaExceededError');
      await train(page, 'sft');
      const error = page.getByTestId('train-error');
      const refusal =
        /^This browser's storage for the app is full: the run (with its data or checkpoint )?could not be saved \(nothing of it was written\)\. Delete something in the Storage view, then try again; the biggest items: .+ \([\d.]+ (B|KiB|MiB)\)/;
      const refused = (await error.textContent()) ?? '';
      expect(refused).toMatch(refusal);
      expect(await page.getByTestId('train-save').isVisible()).toBe(true);
      // Nothing lost or half-written: the store reads back as it was, and the trained run is still on the page.
      expect(await listedAgain()).toEqual(kept);
      expect(await libraryIds()).toEqual(before);
      expect(await page.locator('[data-testid=library-row][data-kind=unreadable]').count()).toBe(0);
      expect(await page.getByTestId('train-panel').getByTestId('loss-chart').getAttribute('data-steps')).toBe('2');

      // Deleting works while the quota is full: the imported adapter, the NLFT run, and the first run's checkpoint
      // (whose record, which a full quota cannot rewrite, keeps its entry).
      const deleted = [`[data-kind=imported]`, `[data-kind=run][data-id="${ids[1]}"]`, `[data-kind=checkpoint][data-id="${ids[0]}"]`];
      for (const which of deleted) {
        const item = page.locator(`[data-testid=storage-row]${which}`);
        await item.getByTestId('storage-delete').click();
        await item.getByTestId('storage-confirm-delete').click();
        await item.waitFor({ state: 'detached' });
      }
      expect(await page.getByTestId('storage-error').textContent()).toBe('');
      const imported = kept.find((k) => k.startsWith('imported '))!.split(' ')[1];
      const gone = (k: string) => k.startsWith('imported ') || k.split(' ')[1] === ids[1] || k.startsWith(`checkpoint ${ids[0]} `);
      const left = kept.filter((k) => !gone(k));
      expect(await listedAgain()).toEqual(left);
      // Still full: saving again is refused, naming what is biggest now.
      await page.getByTestId('train-save').click();
      await expect.poll(() => error.textContent()).not.toBe(refused);
      expect(await error.textContent()).toMatch(refusal);

      // The quota lifted: "Save the run" stores it.
      await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: QUOTA });
      await page.getByTestId('train-save').click();
      await expect.poll(() => page.getByTestId('train-save').isVisible(), { timeout: 30_000 }).toBe(false);
      expect(await error.textContent()).toBe('');
      await page.evaluate((name) => indexedDB.deleteDatabase(name), PROBE_DB);
      // Stored whole, and nothing else changed: after a reload the new run is listed first, then every earlier entry
      // but the two deleted, each read back as it was.
      await page.reload();
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
      await expect.poll(libraryIds).toHaveLength(before.length - 1);
      const [fresh, ...rest] = await libraryIds();
      expect(rest).toEqual(before.filter((id) => id !== imported && id !== ids[1]));
      expect(await row(page, fresh).locator('[data-col=steps]').textContent()).toBe('2/2');
      expect(await row(page, fresh).locator('[data-col=status]').textContent()).toBe('done');
      expect(await row(page, ids[0]).locator('td.name').textContent()).toBe('sft baseline');
      expect(await page.locator('[data-testid=library-row][data-kind=unreadable]').count()).toBe(0);
      const after = await listedAgain();
      expect(after.filter((k) => k.split(' ')[1] !== fresh)).toEqual(left);
      expect(after.filter((k) => k.split(' ')[1] === fresh).map((k) => k.split(' ')[0])).toEqual(
        expect.arrayContaining(['run', 'dataset']),
      );
      expect(pageErrors).toEqual([]);
    }, 420_000);
  },
);
