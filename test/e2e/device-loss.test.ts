/**
 * A GPU device lost in the middle of a training run in the app (issue 13, part 3). The loss is
 * real: Chromium's GPU process is crashed through the DevTools protocol (`Browser.crashGpuProcess`,
 * what chrome://gpucrash does; a driven page is not let navigate there), which loses every WebGPU
 * device of the browser, the worker's included. The toy-math demo trains SFT twice with the same
 * settings: once unbroken, once paused (a checkpoint), resumed and crashed a step later. The run
 * stops and is kept with its checkpoint, the banner says what happened and offers to continue;
 * continuing gets a new device in the worker, loads the model again, trains from the checkpoint
 * to the end and ends with the unbroken run's adapter, byte for byte.
 */
import { readFile } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AppBrowser, CHROMIUM, hasChromium, startApp } from '../helpers/app-browser.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';

/** 40 records × 0.8 epochs in batches of 4. */
const STEPS = 8;

/** The adapter's weights file, as the Train panel's download link gives it. */
async function downloadedWeights(page: Page): Promise<Buffer> {
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-weights').click()]);
  return readFile(await download.path());
}

describe.skipIf(skipOutsideCi(!hasChromium))(hasChromium ? 'device loss' : `device loss (skipped: ${CHROMIUM} is missing)`, () => {
  requirePrerequisite(hasChromium, CHROMIUM);
  let app: AppBrowser;

  beforeAll(async () => {
    app = await startApp('dist-device-loss');
  });
  afterAll(async () => {
    await app?.close();
  });

  it('a run whose GPU device is lost stops with its checkpoint, says so, and continues on a new device to the unbroken adapter', async () => {
    const errors: string[] = [];
    const { page } = await app.newPage({ errors });
    await page.goto(app.url);
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    await page.getByTestId('train-method').selectOption('sft');
    await page.getByTestId('train-epochs').fill('0.8');
    await page.getByTestId('train-batch').fill('4');
    await page.getByTestId('train-rank').fill('4');
    const status = page.getByTestId('train-status');
    const ended = page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error], [data-state=device-lost])');
    const steps = async () => Number(await page.getByTestId('loss-chart').getAttribute('data-steps'));

    // The unbroken run.
    await page.getByTestId('train-start').click();
    await ended.waitFor({ timeout: 180_000 });
    expect(await status.textContent()).toBe(`Done after ${STEPS} of ${STEPS} steps. The playground now scores with the trained adapter.`);
    const unbroken = await downloadedWeights(page);

    // The same run, paused after its first step (the worker sends a checkpoint), resumed, and the GPU process crashed a step later.
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status][data-state=training]').waitFor({ timeout: 60_000 });
    await expect.poll(steps, { timeout: 60_000 }).toBeGreaterThanOrEqual(1);
    await page.getByTestId('train-pause').click();
    const paused = page.locator('[data-testid=train-status][data-state=paused]');
    await paused.waitFor({ timeout: 60_000 });
    const kept = Number((await paused.textContent())!.match(/^Paused after step (\d+) of \d+\.$/)![1]);
    await page.getByTestId('train-pause').click(); // Resume
    await expect.poll(steps, { timeout: 60_000 }).toBeGreaterThan(kept);
    const cdp = await app.browser.newBrowserCDPSession();
    await cdp.send('Browser.crashGpuProcess');

    await ended.waitFor({ timeout: 60_000 });
    expect(await status.getAttribute('data-state')).toBe('device-lost');
    expect(await status.textContent()).toMatch(new RegExp(`^Stopped after \\d of ${STEPS} steps: the GPU device was lost\\.$`));
    const said = new RegExp(
      `^The GPU device was lost \\(.+\\) at step \\d of ${STEPS}; the run is kept with its checkpoint at step ${kept} and can continue from it on a new device\\.$`,
    );
    expect(await page.getByTestId('train-error').textContent()).toMatch(said);
    const banner = page.getByTestId('app-error');
    expect(await banner.textContent()).toMatch(said);
    const action = page.getByTestId('app-error-action');
    expect(await action.textContent()).toBe('Continue on a new GPU device');
    expect(await page.getByTestId('train-continue').textContent()).toBe(`Continue from step ${kept}`);
    expect(await page.getByTestId('train-start').isDisabled()).toBe(true); // nothing runs on the lost device
    await page.screenshot({ path: '/tmp/devlost-banner.png' });

    // A new device in the worker, the model loaded again, the run continued from its checkpoint to the end.
    await action.click();
    await page.locator('[data-testid=train-status][data-state=training]').waitFor({ timeout: 120_000 });
    expect(await banner.isHidden()).toBe(true);
    await ended.waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('train-error').textContent()).toBe('');
    expect(await status.textContent()).toBe(`Done after ${STEPS} of ${STEPS} steps. The playground now scores with the trained adapter.`);
    expect(await steps()).toBe(STEPS);
    expect((await downloadedWeights(page)).equals(unbroken)).toBe(true);
    expect(errors).toEqual([]);
  }, 900_000);
});
