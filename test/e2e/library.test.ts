/**
 * End to end, the Library and Storage views (built app in Chromium, WebGPU on SwiftShader, the toy-math
 * demo model): the run an earlier version kept moves into the library on upgrade; two short runs are
 * both listed, renamed, kept across a reload, the first one's adapter is used for an evaluation and
 * an entry deleted; PEFT folders written here are imported (a good one, and one with a tensor of
 * the wrong shape, refused naming it); the Storage view lists what is stored, and a quota forced
 * small through the DevTools protocol refuses a run's write without losing anything, names what to
 * delete, and takes the write once items are deleted.
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
import { type AppBrowser, CHROMIUM, hasChromium, ROOT, SHOTS, startApp, TMP, trainInApp } from '../helpers/app-browser.ts';
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
      // Chromium enforces a quota override on IndexedDB only when one was set before the origin first used it.
      cdp = await context.newCDPSession(page);
      origin = new URL(app.url).origin;
      await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1024 ** 3 });
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
      await page.locator('[data-testid=eval-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 120_000 });
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
      await page.locator('[data-testid=eval-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 120_000 });
      await expect.poll(() => imported.locator('[data-col=accuracy]').textContent()).toMatch(/^[01]\/1 = [\d.]+%$/);
      await imported.getByTestId('library-open').click();
      expect(await page.getByTestId('library-detail').getByTestId('export-gguf').textContent()).toMatch(/^adapter\.gguf \(/);
      expect(pageErrors).toEqual([]);
    }, 240_000);

    it('lists what is stored with sizes; a forced small quota refuses a run without losing anything, and deleting makes room', async () => {
      await page.reload();
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
      const items = page.getByTestId('storage-row');
      await expect.poll(() => items.count()).toBeGreaterThanOrEqual(5);
      const kinds = await items.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-kind')));
      for (const k of ['run', 'dataset', 'imported', 'evaluations', 'tuning']) expect(kinds).toContain(k);
      expect(await page.getByTestId('storage-estimate').textContent()).toMatch(/^The browser counts .+ used of the .+ it allows this app/);
      expect(await page.getByTestId('storage-persisted').getAttribute('data-state')).toMatch(/^(true|false)$/);
      await page.getByTestId('storage-panel').screenshot({ path: resolve(SHOTS, 'storage.png') });

      // The quota just under what is used now: the next run's writes are refused. Chromium's usage figure can run
      // ahead of what its store really holds (space not yet compacted), letting a run through: then again, lower.
      const ids0 = () => page.getByTestId('library-row').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id')!));
      const error = page.getByTestId('train-error');
      let before: string[] = [];
      for (let attempt = 0; attempt < 3; attempt++) {
        const used = await page.evaluate(async () => (await navigator.storage.estimate()).usage ?? 0);
        await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: used - 1 });
        before = await ids0();
        await train(page, 'sft');
        if (await page.getByTestId('train-save').isVisible()) break;
      }
      expect(await error.textContent()).toMatch(
        /^This browser's storage for the app is full: the run (with its data or checkpoint )?could not be saved \(nothing of it was written\)\. Delete something in the Storage view, then try again; the biggest items: .+ \([\d.]+ (B|KiB|MiB)\)/,
      );
      expect(await page.getByTestId('train-save').isVisible()).toBe(true);
      // Nothing lost or half-written: every earlier entry is there and readable, and the trained run is still on the page.
      const during = await ids0();
      expect(during.filter((id) => before.includes(id))).toEqual(before);
      expect(await page.locator('[data-testid=library-row][data-kind=unreadable]').count()).toBe(0);
      expect(await page.getByTestId('train-panel').getByTestId('loss-chart').getAttribute('data-steps')).toBe('2');

      // Delete the imported adapter and the NLFT run, then save: the run is stored.
      for (const which of ['[data-kind=imported]', `[data-kind=run][data-id="${ids[1]}"]`]) {
        const item = page.locator(`[data-testid=storage-row]${which}`);
        await item.getByTestId('storage-delete').click();
        await item.getByTestId('storage-confirm-delete').click();
        await item.waitFor({ state: 'detached' });
      }
      await page.getByTestId('train-save').click();
      await expect.poll(() => page.getByTestId('train-save').isVisible(), { timeout: 30_000 }).toBe(false);
      expect(await error.textContent()).toBe('');
      // Stored whole: after a reload the new run is listed first, the first run last, with any run an earlier attempt
      // let through between them (the two entries deleted, the new one added).
      await page.reload();
      await expect.poll(ids0).toHaveLength(before.length - 1);
      const listed = await ids0();
      const fresh = listed[0];
      expect(listed.at(-1)).toBe(ids[0]);
      expect(await row(page, fresh).locator('[data-col=steps]').textContent()).toBe('2/2');
      expect(await row(page, fresh).locator('[data-col=status]').textContent()).toBe('done');
      expect(readFileSync('/tmp/library-library.png').byteLength).toBeGreaterThan(0);
      expect(pageErrors).toEqual([]);
    }, 300_000);
  },
);
