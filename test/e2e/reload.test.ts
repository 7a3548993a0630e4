/**
 * Reloaded, not stopped (issue 13): the built app in Chromium (WebGPU on SwiftShader) reloaded at
 * seeded random moments — during training at random steps, during a checkpoint write, during the
 * write of a run's end (after its last checkpoint, or with it), during a model download from the (mock) Hub —
 * then continued. After every reload the IndexedDB records
 * read back valid through the app's own readers (`readStoredRun`, `readCheckpoint`), the run lost
 * no step up to its last checkpoint and logs every step once, and it ends with the adapter of an
 * unbroken run of the same seed and settings, bit for bit; a download cut mid-file is never
 * cached, and the file kept after the next download is the Hub's, byte for byte.
 *
 * The reloads inside a write are made exact without touching the app: the test wraps IndexedDB's
 * `IDBObjectStore.put` in the page (a test-side script, `holdWrite`) so that the transaction
 * writing a checkpoint, or a finished run's record, is kept busy (never committed) once its value
 * is put, then reloads the page: the browser aborts the transaction as the page goes, which is
 * what a reload landing inside the write does. The mock Hub holds the weights file back after its
 * first half until the test releases it, so the reload during the download lands mid-file.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStoredRun, type StoredRun } from '../../src/storage/runs.ts';
import { CHECKPOINT_FILE, readCheckpoint } from '../../src/train/checkpoint.ts';
import { isRecord } from '../../src/util/json.ts';
import { Rng } from '../../src/util/rng.ts';
import { type AppBrowser, CHROMIUM, hasChromium, ROOT, startApp, TMP } from '../helpers/app-browser.ts';
import { MemorySource } from '../helpers/fuzz.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';
import { startMockHub } from '../helpers/mock-hub.ts';

/** The seed of the reload points (printed; `NLFT_RELOAD_SEED` tries others). */
const SEED = Number(process.env.NLFT_RELOAD_SEED ?? 13);
/** Records trained on (toy-math's sample), batch 1, 2 epochs: 12 steps. */
const RECORDS = 6;
const STEPS = 2 * RECORDS;
/** Reloads at random steps (each after a checkpoint taken at a random step by pausing), before the two inside writes. */
const STEP_RELOADS = 3;
/** How long a model load may take on a busy machine (generous: a load compiles the kernels). */
const LOAD_MS = 180_000;
const toyRecords = JSON.parse(readFileSync(resolve(ROOT, 'public/toy-math/data/nlft_train_100.json'), 'utf8')) as unknown[];

/** A value read out of the page: byte arrays travel as base64. */
type Encoded = unknown;

/** Every `[key, value]` of one object store of the app's IndexedDB, typed arrays as `{ $bytes, type }` (base64). */
function readStoreInPage(store: string): Promise<Array<[string, Encoded]>> {
  const base64 = (u8: Uint8Array) => {
    let s = '';
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const encode = (v: unknown): unknown => {
    if (ArrayBuffer.isView(v)) return { $bytes: base64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)), type: v.constructor.name };
    if (Array.isArray(v)) return v.map(encode);
    if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, encode(x)]));
    return v;
  };
  const done = <T>(r: IDBRequest<T>) =>
    new Promise<T>((ok, fail) => {
      r.onsuccess = () => ok(r.result);
      r.onerror = () => fail(r.error);
    });
  return done(indexedDB.open('nlft-studio')).then(async (db) => {
    const s = db.transaction(store).objectStore(store);
    const [keys, values] = await Promise.all([done(s.getAllKeys()), done(s.getAll())]);
    db.close();
    return keys.map((k, i) => [String(k), encode(values[i])] as [string, unknown]);
  });
}

const TYPED = { Uint8Array, Float32Array, Int32Array, Uint32Array, Float64Array } as const;

/** The value as it was stored: `{ $bytes, type }` back to its typed array. */
function decode(v: Encoded): unknown {
  if (Array.isArray(v)) return v.map(decode);
  if (!isRecord(v)) return v;
  if (typeof v.$bytes === 'string') {
    const bytes = Uint8Array.from(Buffer.from(v.$bytes, 'base64'));
    const Typed = TYPED[v.type as keyof typeof TYPED];
    if (!Typed) throw new Error(`a stored ${String(v.type)} the test does not decode`);
    return new Typed(bytes.buffer, 0, bytes.byteLength / Typed.BYTES_PER_ELEMENT);
  }
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, decode(x)]));
}

/** One object store of the app's IndexedDB in the page, by key. */
async function storeOf(page: Page, store: 'library' | 'runFiles' | 'files'): Promise<Map<string, unknown>> {
  const entries = await page.evaluate(readStoreInPage, store);
  return new Map(entries.map(([k, v]) => [k, decode(v)]));
}

/** What the library holds: every record read by the app's reader (an unreadable one fails the test), and each run's checkpoint read back whole. */
async function storedRuns(page: Page): Promise<Array<{ run: StoredRun; checkpointStep: number | null }>> {
  const [library, files] = await Promise.all([storeOf(page, 'library'), storeOf(page, 'runFiles')]);
  const out = [];
  for (const [id, value] of library) {
    const run = readStoredRun(value, id);
    const bytes = files.get(`${id}/checkpoint`);
    expect(bytes === undefined, `${id}: a checkpoint is stored exactly when the record names one`).toBe(run.checkpointStep === null);
    let checkpointStep: number | null = null;
    if (bytes instanceof Uint8Array) {
      const saved = await readCheckpoint(new MemorySource({ [CHECKPOINT_FILE]: bytes })); // its CRC-32 checked
      checkpointStep = saved.checkpoint.state.step;
    }
    expect(checkpointStep, `${id}: the stored checkpoint's own step`).toBe(run.checkpointStep);
    expect(files.get(`${id}/dataset`), `${id}: its dataset`).toBeInstanceOf(Uint8Array);
    out.push({ run, checkpointStep });
  }
  return out.sort((a, b) => (a.run.startedAt < b.run.startedAt ? -1 : 1));
}

/** The steps of a run's metrics, in order. */
const stepsOf = (run: StoredRun) => run.metrics.map((m) => m.step);
/** What a step computed (not how long it took). */
const computed = (run: StoredRun) =>
  run.metrics.map(({ step, epoch, loss, lr, gradNorm, tokens, samples }) => ({ step, epoch, loss, lr, gradNorm, tokens, samples }));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Makes the page's next write of a checkpoint (`checkpoint`: its bytes put in `runFiles`) or of a
 * finished run's end (`end`: a record put with status done) never end: its transaction is kept busy
 * from its first answer on, so a reload lands inside it. A run's end may come in the same write as
 * its last checkpoint (the store composes a write when its turn comes, and the run's record is done
 * by then when the end arrived first); `heldWithCheckpoint` says whether the held write carries
 * checkpoint bytes. Test-side only (it wraps the page's IndexedDB).
 */
function holdWrite(page: Page, what: 'checkpoint' | 'end'): Promise<void> {
  return page.evaluate((kind) => {
    const put = IDBObjectStore.prototype.put;
    const w = window as unknown as { heldWrite?: string; heldWithCheckpoint?: boolean };
    /** The transactions that put checkpoint bytes. */
    const withCheckpoint = new WeakSet<IDBTransaction>();
    let held: IDBTransaction | null = null;
    IDBObjectStore.prototype.put = function (this: IDBObjectStore, value: unknown, key?: IDBValidKey) {
      const request = put.call(this, value, key);
      const checkpoint = this.name === 'runFiles' && String(key).endsWith('/checkpoint');
      if (checkpoint) withCheckpoint.add(this.transaction);
      const hit = kind === 'checkpoint' ? checkpoint : this.name === 'library' && (value as { status?: unknown }).status === 'done';
      if (hit && held === null) {
        const tx = this.transaction;
        held = tx;
        const label = `${this.name} ${String(key)}`;
        // A write's puts all come in one task, before its first answer: by then the set knows them.
        const busy = () => {
          w.heldWrite = label;
          w.heldWithCheckpoint = withCheckpoint.has(tx);
          tx.objectStore('library').count().onsuccess = busy;
        };
        tx.objectStore('library').count().onsuccess = busy;
      }
      return request;
    };
  }, what);
}

/** Waits until the write `holdWrite` waits for is under way (and held). */
async function heldWrite(page: Page): Promise<void> {
  await page.waitForFunction(() => (window as unknown as { heldWrite?: string }).heldWrite !== undefined, null, { timeout: 120_000 });
}

describe.skipIf(skipOutsideCi(!hasChromium))(hasChromium ? 'reloads' : `reloads (skipped: ${CHROMIUM} is missing)`, () => {
  requirePrerequisite(hasChromium, CHROMIUM);
  let app: AppBrowser;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    app = await startApp('dist-reload');
  });
  afterAll(async () => {
    await app?.close();
  });

  it(`a run reloaded at ${STEP_RELOADS} random steps, inside a checkpoint write and before its end is stored continues to the unbroken run's adapter`, async () => {
    const { page } = await app.newPage({ errors: pageErrors });
    const rng = new Rng(SEED);
    const t0 = Date.now();
    const log = (what: string) => console.log(`reload [${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);
    const status = page.getByTestId('train-status');
    const chartSteps = async () => Number(await page.getByTestId('loss-chart').getAttribute('data-steps'));
    const modelReady = () => page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: LOAD_MS });
    /** Waits until the run shows `n` steps (the page's chart, polled in the page). */
    const stepsShown = (n: number) =>
      page.waitForFunction((k) => Number(document.querySelector('[data-testid=loss-chart]')?.getAttribute('data-steps')) >= k, n, {
        timeout: 120_000,
        polling: 20,
      });
    const ended = () => page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 180_000 });

    await page.goto(app.url);
    await modelReady();
    expect(await page.getByTestId('model-status').textContent()).toBe('toy-math, q8 weights');
    await page.getByTestId('train-file').setInputFiles({
      name: 'toy-math-6.json',
      mimeType: 'application/json',
      buffer: Buffer.from(JSON.stringify(toyRecords.slice(0, RECORDS))),
    });
    await page.getByTestId('train-method').selectOption('sft');
    await page.getByTestId('train-epochs').fill('2');
    await page.getByTestId('train-batch').fill('1');
    await page.getByTestId('train-rank').fill('4');
    await page.getByTestId('train-seed').fill('5');

    // The unbroken run.
    await page.getByTestId('train-start').click();
    await ended();
    expect(await status.textContent(), (await page.getByTestId('train-error').textContent()) ?? '').toMatch(
      new RegExp(`^Done after ${STEPS} of ${STEPS} steps\\.`),
    );
    log('the unbroken run ended');
    await expect.poll(async () => (await storedRuns(page))[0]?.run.adapter !== null, { timeout: 10_000 }).toBe(true);
    const [{ run: unbroken }] = await storedRuns(page);
    expect(stepsOf(unbroken)).toEqual(range(1, STEPS));
    log(`step ms: ${unbroken.metrics.map((m) => Math.round(m.ms)).join(' ')}`);

    // The same run again, reloaded.
    await page.getByTestId('train-start').click();
    let checkpoint = 0; // the step of the last checkpoint known to be stored
    const points: string[] = [];
    /** After a reload: the records read back, the run lost no step up to its checkpoint, and it continues from there. */
    const afterReload = async (cutCheckpointStep: number | null, screenshot?: string) => {
      log('reloaded');
      await modelReady();
      log('model ready');
      try {
        await page.locator('[data-testid=train-status][data-state=interrupted]').waitFor({ timeout: 30_000 });
      } catch (e) {
        // Say what the page and the store show instead (this case has failed in CI without a trace of why).
        const status = page.getByTestId('train-status');
        const stored = await page.evaluate(async () => {
          const db = await new Promise<IDBDatabase>((ok, no) => {
            const open = indexedDB.open('nlft-studio');
            open.onsuccess = () => ok(open.result);
            open.onerror = () => no(open.error);
          });
          const all = await new Promise<unknown[]>((ok) => {
            const get = db.transaction('library').objectStore('library').getAll();
            get.onsuccess = () => ok(get.result);
          });
          db.close();
          return all.map((r) => {
            const v = r as { kind?: string; status?: string; checkpointStep?: number | null; metrics?: unknown[] };
            return `${v.kind} ${v.status} checkpoint ${v.checkpointStep} steps ${v.metrics?.length}`;
          });
        });
        throw new Error(
          `no "interrupted" after the reload: train status ${await status.getAttribute('data-state')} "${await status.textContent()}"; stored: ${stored.join('; ')} (${(e as Error).message.split('\n')[0]})`,
        );
      }
      const runs = await storedRuns(page);
      expect(runs.map((r) => r.run.startedAt)).toEqual([unbroken.startedAt, expect.any(String)]);
      const run = runs[1].run;
      const ck = run.checkpointStep;
      expect(ck, 'the last checkpoint stored before the reload is kept').not.toBeNull();
      expect(ck!).toBeGreaterThanOrEqual(checkpoint);
      if (cutCheckpointStep !== null) expect(ck!, 'the checkpoint whose write the reload cut is not taken').toBeLessThan(cutCheckpointStep);
      const trained = stepsOf(run);
      expect(trained, 'every step up to the checkpoint, once each, in order').toEqual(range(1, trained.length));
      expect(trained.length).toBeGreaterThanOrEqual(ck!);
      expect(computed(run).slice(0, ck!), 'the steps before the checkpoint are the unbroken run’s').toEqual(
        computed(unbroken).slice(0, ck!),
      );
      expect(await status.textContent()).toBe(
        `The last run (sft, toy-math-6.json) was interrupted by a reload after ${trained.length} of ${STEPS} steps; it can continue from its checkpoint at step ${ck}.`,
      );
      expect(await page.getByTestId('library-row').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-kind')))).toEqual([
        'run',
        'run',
      ]);
      checkpoint = ck!;
      const cont = page.getByTestId('train-continue');
      expect(await cont.textContent()).toBe(`Continue from step ${ck}`);
      if (screenshot) await page.getByTestId('train-panel').screenshot({ path: screenshot });
      await cont.click();
      await page.locator('[data-testid=train-status]:is([data-state=training], [data-state=done])').waitFor({ timeout: 60_000 });
      return { ck: ck!, trained: trained.length };
    };
    /** Pauses after the step under way once `step` steps show (the worker sends a checkpoint), and resumes; the checkpoint's step. */
    const checkpointAt = async (step: number) => {
      await stepsShown(step);
      await page.getByTestId('train-pause').click();
      const paused = page.locator('[data-testid=train-status][data-state=paused]');
      await paused.waitFor({ timeout: 60_000 });
      const held = Number((await paused.textContent())!.match(/^Paused after step (\d+) of /)![1]);
      await expect.poll(async () => (await storedRuns(page))[1].run.checkpointStep, { timeout: 10_000 }).toBe(held);
      checkpoint = held;
      await page.getByTestId('train-pause').click(); // Resume
      return held;
    };

    for (let i = 0; i < STEP_RELOADS; i++) {
      // A checkpoint at a random step after the last one, then a reload at a random step after it, a random moment into that step.
      // Both at least 3 steps before the end, so a fast machine cannot finish the run before the reload lands.
      const held = await checkpointAt(Math.min(checkpoint + 1 + rng.int(2), STEPS - 4));
      const at = Math.min(held + 1 + rng.int(2), STEPS - 3);
      const delay = rng.int(400);
      await stepsShown(at);
      await page.waitForTimeout(delay);
      const shown = await chartSteps();
      await page.reload();
      const { ck, trained } = await afterReload(null);
      points.push(`checkpoint ${held}, reload at step ${shown} + ${delay} ms (stored: ${trained} steps, continued from ${ck})`);
      log(points.at(-1)!);
    }

    // A reload during a checkpoint write (the one a pause sends).
    await stepsShown(checkpoint + 1);
    await holdWrite(page, 'checkpoint');
    await page.getByTestId('train-pause').click();
    await heldWrite(page);
    const cutAt = await chartSteps();
    await page.reload();
    const cut = await afterReload(cutAt, resolve(TMP, 'reload-interrupted.png'));
    points.push(`a checkpoint write after step ${cutAt} cut (stored: ${cut.trained} steps, continued from ${cut.ck})`);
    log(points.at(-1)!);

    // A reload while the run's end (its adapter) is being written: after its last checkpoint, or in
    // the same write as that checkpoint (then the checkpoint before it is the one kept).
    await holdWrite(page, 'end');
    await heldWrite(page);
    const withCheckpoint = await page.evaluate(() => (window as unknown as { heldWithCheckpoint?: boolean }).heldWithCheckpoint === true);
    await page.reload();
    const end = await afterReload(withCheckpoint ? STEPS : null);
    if (!withCheckpoint) expect(end).toEqual({ ck: STEPS, trained: STEPS });
    points.push(`the run's end cut ${withCheckpoint ? 'with' : 'after'} its last checkpoint (continued from ${end.ck})`);
    log(points.at(-1)!);

    await ended();
    expect(await status.textContent(), (await page.getByTestId('train-error').textContent()) ?? '').toMatch(
      new RegExp(`^Done after ${STEPS} of ${STEPS} steps\\.`),
    );
    await page.getByTestId('train-panel').screenshot({ path: resolve(TMP, 'reload-done.png') });
    await expect.poll(async () => (await storedRuns(page))[1].run.status, { timeout: 10_000 }).toBe('done');
    const [, { run: reloaded }] = await storedRuns(page);
    expect(stepsOf(reloaded), 'every step once').toEqual(range(1, STEPS));
    expect(computed(reloaded), 'every step computed as in the unbroken run').toEqual(computed(unbroken));
    for (const file of ['adapter_model.safetensors', 'adapter_config.json'] as const)
      expect(reloaded.adapter?.[file], file).toEqual(unbroken.adapter?.[file]);
    console.log(`reload seed ${SEED}: ${points.length} reloads during training — ${points.join('; ')}`);
    expect(pageErrors).toEqual([]);
  }, 900_000);

  it('a model download cut by a reload mid-file is never cached; the next one keeps the Hub’s file and loads its model', async () => {
    const dir = resolve(ROOT, 'public/toy-math/model'); // the demo's own folder, served as a Hub repository
    const weights = readFileSync(resolve(dir, 'model.safetensors'));
    const key = 'test-org/toy-math/main/model.safetensors';
    const afterBytes = Math.floor(weights.length / 2);
    const hub = await startMockHub({ 'test-org/toy-math@main': dir }, [], { file: key, afterBytes });
    try {
      const { page, requests } = await app.newPage({ errors: pageErrors }); // a fresh profile: nothing cached
      requests.enter(hub.url, 'the mock Hub');
      const status = page.getByTestId('model-status');
      const ready = () => page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: LOAD_MS });
      /** The playground's token log-probs of one fixed text under the loaded model. */
      const scores = async () => {
        await page.getByTestId('prompt').fill('Tom has 3 apples and buys 4 more. How many apples does he have?');
        await page.getByTestId('response').fill('3+4=<<3+4=7>>7\n#### 7');
        await page.getByTestId('score').click();
        const strip = page.getByTestId('token-strip').locator('[data-logp]');
        await expect.poll(() => strip.count(), { timeout: 30_000 }).toBeGreaterThan(0);
        return strip.evaluateAll((els) => els.map((e) => e.getAttribute('data-logp')));
      };
      await page.goto(app.url);
      await ready();
      expect(await status.textContent()).toBe('toy-math, q8 weights');
      const demoScores = await scores();

      await page.getByTestId('model-kind').selectOption('hub');
      await page.getByTestId('hub-id').fill('test-org/toy-math');
      await page.getByTestId('hub-url').fill(hub.url);
      await page.getByTestId('hub-load').click();
      await expect.poll(() => hub.held(), { timeout: LOAD_MS }).toBe(1); // half the weights sent, the rest held back
      await expect.poll(() => status.textContent(), { timeout: 30_000 }).toMatch(/^Downloading model\.safetensors: [1-9][\d.]* \w+ of /);
      const during = await status.textContent();
      await page.reload();
      // The page loads its model choice again: the other files come from IndexedDB, the weights are asked for anew.
      await expect.poll(() => [hub.gets.get(key), hub.held()], { timeout: LOAD_MS }).toEqual([2, 1]);
      const cached = await storeOf(page, 'files');
      expect([...cached.keys()].sort(), 'nothing of the cut download is kept').not.toContain(key);
      expect(cached.has('test-org/toy-math/main/config.json')).toBe(true);
      hub.release();
      await ready();
      expect(await status.textContent()).toBe('hub:test-org/toy-math@main, q8 weights');
      const kept = (await storeOf(page, 'files')).get(key);
      expect(kept).toBeInstanceOf(Uint8Array);
      const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
      expect([(kept as Uint8Array).length, sha(kept as Uint8Array)], 'the kept file is the Hub’s').toEqual([weights.length, sha(weights)]);
      for (const [file, n] of hub.gets) expect(n, file).toBe(file === key ? 2 : 1);
      expect(await scores(), 'the model loaded is the Hub’s (the demo’s weights): the same scores').toEqual(demoScores);
      console.log(
        `reload during a download: cut at ${afterBytes} of ${weights.length} bytes of model.safetensors ("${during}"); downloaded again whole, sha256 ${sha(weights).slice(0, 12)}…`,
      );
      expect(pageErrors).toEqual([]);
    } finally {
      await hub.close();
    }
  }, 600_000);
});
