/**
 * End to end, a newcomer's first visit (a fresh browser profile, nothing downloaded): the built app
 * in Debian's Chromium (WebGPU on SwiftShader) loads the embedded toy-math demo, takes its view
 * texts from the model folder, shows its training data in the Data panel, evaluates the base model
 * on its sample test file, trains NLFT (the default preset) and SFT on a slice of its sample,
 * evaluates each adapter, and compares the three accuracies side by side. It writes the
 * screenshots of the main panels that the README shows (docs/screenshots/, overwritten each run).
 */
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AppBrowser, CHROMIUM, hasChromium, ROOT, startApp, SHOTS, waitSettled } from '../helpers/app-browser.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';

/** Questions each evaluation asks, and the records each run trains on (batch 4: 4 steps). */
const EVAL_ITEMS = 10;
const SLICE = 16;
const toyData = (file: string) => readFileSync(resolve(ROOT, 'public/toy-math/data', file), 'utf8');
const templates = JSON.parse(readFileSync(resolve(ROOT, 'public/toy-math/model/templates.json'), 'utf8')) as { baseSystem: string };

describe.skipIf(skipOutsideCi(!hasChromium))(hasChromium ? 'first visit' : `first visit (skipped: ${CHROMIUM} is missing)`, () => {
  requirePrerequisite(hasChromium, CHROMIUM);
  let app: AppBrowser;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true });
    app = await startApp('dist-first-visit');
    ({ page } = await app.newPage({ errors: pageErrors }));
  });

  afterAll(async () => {
    await app?.close();
  });

  /** Evaluates the loaded model (with the adapter trained last, if any) on the sample's first questions. */
  const evaluate = async () => {
    await page.getByTestId('eval-start').click();
    await waitSettled(page, 'eval-status', 240_000);
    expect(await page.getByTestId('eval-error').textContent()).toBe('');
    expect(await page.getByTestId('eval-status').textContent()).toMatch(
      new RegExp(`^Accuracy \\d+/${EVAL_ITEMS} = [\\d.]+% — toy-math, q8, .+; test_easy_100\\.jsonl, greedy`),
    );
  };
  /** Trains with the form's settings and waits for the end. */
  const train = async (method: 'nlft' | 'sft') => {
    await page.getByTestId('train-method').selectOption(method);
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 300_000 });
    expect(await page.getByTestId('train-error').textContent()).toBe('');
    expect(await page.getByTestId('train-status').textContent()).toMatch(/^Done after 4 of 4 steps\./);
  };

  it('loads the toy-math demo, evaluates it, trains NLFT and SFT, and compares the three accuracies', async () => {
    await page.goto(app.url);
    await page.locator('[data-testid=model-status]:is([data-state=ready], [data-state=error])').waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('model-error').textContent()).toBe('');
    expect(await page.getByTestId('model-status').textContent()).toBe('toy-math, q8 weights');
    expect(await page.getByTestId('model-kind').inputValue()).toBe('demo');
    expect(await page.getByTestId('model-kind-hint').textContent()).toMatch(
      /^toy-math demo \(0\.9 M parameters, pretrained on grade-school word problems, offline\): /,
    );
    expect(await page.getByTestId('model-panel').textContent()).toContain('vocabulary 849');

    // The view texts come from the model folder's templates.json, without the user pasting them.
    expect(await page.getByTestId('train-templates-hint').textContent()).toMatch(/^Prompt templates from the model folder/);
    expect(await page.getByTestId('template-baseSystem').inputValue()).toBe(templates.baseSystem);
    expect(await page.getByTestId('train-data').textContent()).toMatch(/^toy-math-nlft-40\.json/);
    expect(await page.getByTestId('train-lr').inputValue()).toBe('0.001');

    // The Data panel shows the data Train would use, measured with the model's tokenizer.
    expect(await page.getByTestId('dataset-status').textContent()).toBe(
      'toy-math-nlft-40.json: 40 records: 19 positive, 21 negative. Pick one to try it in the playground.',
    );
    await page.locator('[data-testid=dataset-summary][data-state=done]').waitFor({ timeout: 30_000 });
    const lengths = await page.getByTestId('dataset-lengths').locator('tbody tr').allTextContents();
    expect(lengths).toHaveLength(3);
    expect(await page.getByTestId('dataset-truncated').getAttribute('data-count')).toBe('0');

    // The playground holds the first record; the model writes its own answer.
    expect(await page.getByTestId('prompt').inputValue()).toBe(JSON.parse(toyData('nlft_train_100.json'))[0].input); // the sample's first record
    await page.getByTestId('generate').click();
    await page.getByTestId('generate-info').waitFor({ state: 'visible', timeout: 120_000 });
    expect(await page.getByTestId('generate-info').textContent()).toMatch(/^Generated \d+ tokens in [\d.]+ s, ended by /);
    expect(await page.getByTestId('response').inputValue()).toMatch(/<<\d+[-+*/]\d+=\d+>>/); // it writes calculations as it learned to
    await page.getByTestId('model-panel').screenshot({ path: resolve(SHOTS, 'model.png') });
    await page.getByTestId('playground-panel').screenshot({ path: resolve(SHOTS, 'playground.png') });

    // The base model on its easy test file, under the templates' base text.
    expect(await page.getByTestId('eval-data').textContent()).toMatch(/^test_easy_100\.jsonl/);
    expect(await page.getByTestId('eval-system').inputValue()).toBe(templates.baseSystem);
    await page.getByTestId('eval-limit').fill(String(EVAL_ITEMS));
    await evaluate();

    // The Data panel shows the data Train would use: a picked file, with its problems and the records training would cut.
    const records = JSON.parse(toyData('nlft_train_100.json'));
    const long = { ...records[0], output: `${records[0].output} `.repeat(12) };
    const noInput = { ...records[1], input: 42 };
    await page.getByTestId('train-file').setInputFiles({
      name: 'mixed.json',
      mimeType: 'application/json',
      buffer: Buffer.from(JSON.stringify([long, noInput, records[2]])),
    });
    await expect.poll(() => page.getByTestId('dataset-status').textContent()).toMatch(/^mixed\.json: /);
    expect(await page.getByTestId('dataset-problems').locator('li').allTextContents()).toEqual([
      expect.stringMatching(/record 2.*"input".*expected a non-empty string, found/),
    ]);
    await expect.poll(() => page.getByTestId('dataset-truncated').getAttribute('data-count')).toBe('1');

    // NLFT with the default preset, then SFT, on the first records of the sample (a picked file).
    const slice = JSON.stringify(JSON.parse(toyData('nlft_train_100.json')).slice(0, SLICE));
    await page
      .getByTestId('train-file')
      .setInputFiles({ name: 'toy-math-16.json', mimeType: 'application/json', buffer: Buffer.from(slice) });
    await expect.poll(() => page.getByTestId('dataset-status').textContent()).toMatch(/^toy-math-16\.json: 16 records: /);
    expect(await page.getByTestId('train-preset').inputValue()).toBe('small-model');
    await page.getByTestId('train-epochs').fill('1');
    await page.getByTestId('train-batch').fill('4');
    await train('nlft');
    expect(await page.getByTestId('loss-chart').getAttribute('data-steps')).toBe('4');
    expect(await page.getByTestId('loss-chart').getAttribute('data-epochs')).toBe('1');
    expect(await page.getByTestId('loss-chart').locator('[data-series=ema]').count()).toBe(1);
    expect(await page.getByTestId('saliency-tokens').locator('[data-class]').count()).toBeGreaterThan(5);
    await page.getByTestId('train-panel').screenshot({ path: resolve(SHOTS, 'train.png') });
    await evaluate();
    await train('sft');
    await evaluate();

    // The results table: newest first, one row per evaluation.
    const rows = page.getByTestId('eval-history-row');
    expect(await rows.count()).toBe(3);
    expect(await rows.first().locator('td').first().textContent()).toMatch(/sft run of .+ on toy-math-16\.json/);
    expect(await rows.last().locator('td').first().textContent()).toContain('no adapter');
    await page.getByTestId('eval-panel').screenshot({ path: resolve(SHOTS, 'evaluate.png') });

    // Compare: the three evaluations of the same file side by side.
    const panel = page.getByTestId('compare-panel');
    await panel.getByTestId('compare-all').click();
    const stored = panel.getByTestId('compare-stored');
    const counts = await stored.getByTestId('compare-bar').evaluateAll((gs) => gs.map((g) => g.getAttribute('data-counts')));
    expect(counts).toEqual([0, 1, 2].map(() => expect.stringMatching(new RegExp(`^\\d+/${EVAL_ITEMS} = \\d+\\.\\d%$`))));
    expect(await stored.locator('.bar-label').allTextContents()).toEqual([
      '1. base model',
      expect.stringMatching(/^2\. nlft run of .+ on toy-math-16\.json/),
      expect.stringMatching(/^3\. sft run of .+ on toy-math-16\.json/),
    ]);
    await panel.screenshot({ path: resolve(SHOTS, 'compare.png') });
    await page.getByTestId('data-panel').screenshot({ path: resolve(SHOTS, 'data.png') });
    await page.screenshot({ path: resolve(SHOTS, 'app.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  }, 900_000);
});
