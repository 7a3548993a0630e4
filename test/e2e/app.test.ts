/**
 * End to end: the built app in Debian's Chromium (WebGPU on SwiftShader), driven by Playwright
 * (built, served and opened by test/helpers/app-browser.ts).
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { compareRows } from '../../src/eval/compare.ts';
import { ggufLoraAdapter } from '../../src/export/gguf.ts';
import { readPeftAdapter } from '../../src/export/peft.ts';
import { DEMO_MODEL_OPTIONS, makeTinyLlama } from '../../src/model/demo.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { writeTinyLlamaFolder } from '../fixtures/tiny-llama.ts';
import {
  type AppBrowser,
  BASE_ARGS,
  CHROMIUM,
  hasChromium,
  type RequestLog,
  ROOT,
  startApp,
  TMP,
  waitSettled,
} from '../helpers/app-browser.ts';
import { startMockHub } from '../helpers/mock-hub.ts';
import { KERNELS_TEXT } from '../helpers/cli.ts';
import { requirePrerequisite, skipOutsideCi } from '../helpers/guard.ts';

/** How the kernels line says the tiles are a software adapter's preset (src/session/model.ts `describeTuning`). */
const PRESET = 'software-adapter preset, not measured';
const readPublic = (file: string) => readFileSync(resolve(ROOT, 'public', file), 'utf8');
// These tests run on the stress model (SmolLM2's vocabulary, random weights), whose samples are the
// NLFT sample (Train, and so the Data panel) and the GSM8K sample (Evaluate); test/e2e/first-visit.test.ts
// covers the toy-math demo a first visit loads.
const records = JSON.parse(readPublic('samples/nlft-sample.json')) as { input: string; answer: string }[];
const tokenizer = TextTokenizer.fromJson(
  JSON.parse(readPublic('tokenizers/smollm2/tokenizer.json')),
  JSON.parse(readPublic('tokenizers/smollm2/tokenizer_config.json')),
);

describe.skipIf(skipOutsideCi(!hasChromium))(hasChromium ? 'app in Chromium' : `app in Chromium (skipped: ${CHROMIUM} is missing)`, () => {
  requirePrerequisite(hasChromium, CHROMIUM);
  let app: AppBrowser;
  let page: Page;
  let url: string;
  let requests: RequestLog;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    app = await startApp('dist');
    url = app.url;
    ({ page, requests } = await app.newPage({ errors: pageErrors }));
  });

  afterAll(async () => {
    await app?.close();
  });

  it('loads the stress model, lists the data, scores a record and keeps the draft across a reload', async () => {
    await page.goto(url);
    const adapter = page.getByTestId('adapter');
    await page.locator('[data-testid=adapter]:not([data-state=pending])').waitFor({ timeout: 30_000 });
    expect(await adapter.getAttribute('data-state'), (await adapter.textContent()) ?? '').toBe('ready');
    expect((await adapter.textContent())?.toLowerCase()).toContain('swiftshader');

    // A first visit loads the toy-math demo; these tests switch to the stress model (the choice is kept).
    await page.locator('[data-testid=model-status]:is([data-state=ready], [data-state=error])').waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('model-status').textContent()).toBe('toy-math, q8 weights');
    await page.getByTestId('model-kind').selectOption('stress');
    const status = page.getByTestId('model-status');
    await page.locator('[data-testid=model-status]:is([data-state=ready], [data-state=error])').waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('model-error').textContent()).toBe('');
    expect(await status.getAttribute('data-state')).toBe('ready');
    expect(await status.textContent()).toMatch(/^stress model \(seed \d+\), q8 weights$/);

    // The Data panel shows the data Train uses with this model (the NLFT sample), read by parseDataset.
    const list = page.getByTestId('dataset-list').locator('li');
    await expect.poll(() => list.count()).toBe(records.length);
    expect(records.length).toBe(6);
    expect(await page.getByTestId('dataset-status').textContent()).toBe(
      'nlft-sample.json: 6 records: 3 positive, 3 negative. Pick one to try it in the playground.',
    );
    await page.locator('[data-testid=dataset-summary][data-state=done]').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('dataset-truncated').getAttribute('data-count')).toBe('0');
    // A small model on a software adapter (SwiftShader): the preset tiles, nothing measured (the last test measures).
    expect(await page.getByTestId('kernels').textContent()).toMatch(new RegExp(String.raw`^${KERNELS_TEXT} \(${PRESET}\)$`));
    expect(await page.getByTestId('gpu-bytes').textContent()).toMatch(/\d/);

    const pick = 2;
    await list.nth(pick).locator('button').click();
    expect(await page.getByTestId('prompt').inputValue()).toBe(records[pick].input);
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
    expect(sum).toBeCloseTo(
      values.reduce((a, b) => a + b, 0),
      3,
    );
    await page.screenshot({ path: resolve(TMP, 'app.png'), fullPage: true });

    await page.getByTestId('quant').selectOption('q4');
    const ready = page.locator('[data-testid=model-status][data-state=ready]');
    await expect.poll(() => ready.textContent(), { timeout: 180_000 }).toContain('q4');

    const typed = 'A prompt typed by hand, kept across reloads.';
    await page.getByTestId('prompt').fill(typed);
    await page.locator('[data-testid=draft-status][data-state=saved]').waitFor();
    await page.reload();
    await expect.poll(() => page.getByTestId('prompt').inputValue()).toBe(typed);
    expect(await page.getByTestId('response').inputValue()).toBe(records[pick].answer);
    expect(await page.getByTestId('quant').inputValue()).toBe('q4');
    await expect.poll(() => ready.textContent(), { timeout: 180_000 }).toContain('q4');
    expect(await page.getByTestId('kernels').textContent()).toMatch(new RegExp(String.raw`\(${PRESET}\)$`));
    expect(pageErrors).toEqual([]);
  }, 300_000);

  it('trains NLFT in the worker, shows the loss and the saliency map, exports a PEFT adapter and keeps the run across a reload', async () => {
    await page.goto(url);
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    // A bad file first: the worker names the record and the field.
    await page.getByTestId('train-file').setInputFiles({
      name: 'bad.json',
      mimeType: 'application/json',
      buffer: Buffer.from(JSON.stringify([{ input: 'q', answer: 'a #### 1' }])),
    });
    expect(await page.getByTestId('train-data').textContent()).toMatch(/^bad\.json/);
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status][data-state=error]').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('train-error').textContent()).toContain('bad.json: 1 problem:\n  record 1: field "output": missing');
    await page.getByRole('button', { name: 'use the sample' }).click();
    // The default NLFT setting is the small-model preset; the authors' rules are one pick away.
    expect(await page.getByTestId('train-preset').inputValue()).toBe('small-model');
    expect(await page.getByTestId('train-saliency').inputValue()).toBe('static');
    expect(await page.getByTestId('nlft-negatives').inputValue()).toBe('anchor');
    await page.getByTestId('train-preset').selectOption('authors');
    expect(await page.getByTestId('train-saliency').inputValue()).toBe('dynamic');
    expect(await page.getByTestId('nlft-negatives').inputValue()).toBe('authors');
    expect(await page.getByTestId('train-preset-hint').textContent()).toMatch(/^The paper as written/);
    // NLFT options and templates are checked by the worker, which names the option or field.
    await page.getByTestId('nlft-options').locator('summary').click();
    await page.getByTestId('nlft-tauC').fill('2');
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status][data-state=error]').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('train-error').textContent()).toBe('tauC: expected a number in (0, 1), found 2');
    await page.getByTestId('nlft-tauC').fill('0.95');
    await page.getByTestId('template-standard.user').fill('Question: {input} Judged: {judgment}');
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status][data-state=error]').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('train-error').textContent()).toMatch(/^NLFT templates \(standard\.user\): .*\{judgment\}/);
    await page.getByTestId('nlft-reset').click();
    await page.getByTestId('nlft-rho').fill('1.2');
    await page.getByTestId('template-baseSystem').fill('Solve it; end with #### N.');

    // The sample: 6 records, batch 4, one epoch = 2 optimizer steps.
    await page.getByTestId('train-epochs').fill('1');
    await page.getByTestId('train-batch').fill('4');
    await page.getByTestId('train-lr').fill('0.001');
    await page.getByTestId('train-rank').fill('4');
    await page.getByTestId('train-start').click();
    expect(await page.getByTestId('score').isDisabled()).toBe(true); // the worker is busy training
    await page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('train-error').textContent()).toBe('');
    expect(await page.getByTestId('train-status').textContent()).toMatch(/^Done after 2 of 2 steps\./);
    expect(await page.getByTestId('loss-chart').getAttribute('data-steps')).toBe('2');
    expect(await page.getByTestId('train-stats').textContent()).toMatch(/^Step 2\/2 · epoch 1 · loss \d+\.\d{4} · [\d,]+ tokens\/s/);
    expect(await page.getByTestId('train-summary').textContent()).toMatch(/^Saliency before training: 3 positive and 3 negative records/);
    // Every negative would be trained towards its own wrong answer: the panel says so and offers anchored negatives.
    expect(await page.getByTestId('train-warning').textContent()).toMatch(
      /^3 of 3 negatives have no unlikely token, so the authors' rule trains them towards their own wrong answers\./,
    );
    await page.getByTestId('train-use-anchor').click();
    expect(await page.getByTestId('nlft-negatives').inputValue()).toBe('anchor');
    expect(await page.getByTestId('train-preset').inputValue()).toBe('custom'); // anchored, yet re-scored every step
    await page.getByTestId('nlft-negatives').selectOption('authors'); // the tests below train with the authors' rule
    expect(await page.getByTestId('train-preset').inputValue()).toBe('authors');
    // The saliency map: every record visited once, tokens classed and weighted.
    expect(await page.getByTestId('saliency-record').locator('option').count()).toBe(6);
    const classes = await page
      .getByTestId('saliency-tokens')
      .locator('[data-class]')
      .evaluateAll((spans) => spans.map((s) => s.getAttribute('data-class')));
    expect(classes.length).toBeGreaterThan(5);
    expect(classes.every((c) => ['correct', 'cluster', 'unlikely', 'plain'].includes(c!))).toBe(true);
    expect(await page.getByTestId('saliency-line').textContent()).toMatch(/^Record \d \(.+, (positive|negative)\) at step [12]: loss /);

    // The adapter's two files, read back with our PEFT reader against the demo model's shapes.
    const dir = resolve(TMP, 'adapter');
    await mkdir(dir, { recursive: true });
    for (const id of ['export-config', 'export-weights', 'export-gguf']) {
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId(id).click()]);
      await download.saveAs(resolve(dir, download.suggestedFilename()));
    }
    const demoConfig = makeTinyLlama(DEMO_MODEL_OPTIONS).config;
    const adapter = await readPeftAdapter(new FolderSource(dir), demoConfig);
    // The third download is the same adapter as GGUF for llama.cpp and Ollama, with its Modelfile shown.
    expect(new Uint8Array(readFileSync(resolve(dir, 'adapter.gguf')))).toEqual(ggufLoraAdapter(adapter.lora, adapter.config, demoConfig));
    expect(await page.getByTestId('export-modelfile').textContent()).toMatch(
      /\nFROM \.\/demo-llama-seed-\d+\.gguf\nADAPTER \.\/adapter\.gguf\n$/,
    );
    expect(adapter.config).toMatchObject({ r: 4, alpha: 4, targets: ['gate_proj', 'up_proj', 'down_proj'] });
    expect(adapter.lora).toHaveLength(DEMO_MODEL_OPTIONS.numLayers);
    expect(adapter.lora[0].gate_proj!.B.some((v) => v !== 0)).toBe(true); // B starts at zero: it trained

    // The playground scores with the trained adapter once training is over, and generates with it.
    expect(await page.getByTestId('score').isDisabled()).toBe(false);
    await page.getByTestId('generate').click();
    const info = page.getByTestId('generate-info');
    await info.waitFor({ state: 'visible', timeout: 120_000 });
    expect(await info.textContent()).toMatch(
      /^Generated \d+ tokens in [\d.]+ s, ended by (the end-of-sequence token|the 128-token limit)\./,
    );
    expect(await page.getByTestId('score-error').textContent()).toBe('');

    // Evaluate the trained model on 2 GSM8K sample questions, under the base text the run trained with;
    // the result is kept with the earlier ones.
    expect(await page.getByTestId('eval-system').inputValue()).toBe('Solve it; end with #### N.');
    await page.getByTestId('eval-limit').fill('2');
    await page.getByTestId('eval-max-new').fill('8');
    await page.getByTestId('eval-start').click();
    await waitSettled(page, 'eval-status', 120_000);
    expect(await page.getByTestId('eval-error').textContent()).toBe('');
    expect(await page.getByTestId('eval-status').textContent()).toMatch(
      /^Accuracy [0-2]\/2 = [\d.]+% — .+, trained adapter \(r 4 on gate_proj,up_proj,down_proj\); gsm8k-sample\.jsonl, greedy, up to 8 tokens, system "Solve it; end with #### N\."$/,
    );
    expect(await page.getByTestId('eval-items').locator('li').count()).toBe(2);
    expect(await page.getByTestId('eval-items').locator('li').first().textContent()).toMatch(
      /^#1 (right|wrong): expected 18, got \S+ \(\d tokens\)$/,
    );
    const evals = await page.getByTestId('eval-history-row').count();
    expect(evals).toBeGreaterThanOrEqual(1);
    // An edited system text is kept with the panel's draft across the reload.
    await page.getByTestId('eval-system').fill('Be brief.');
    expect(await page.getByTestId('eval-system-hint').textContent()).toBe('Edited: not the last run’s text.');
    await page.locator('[data-testid=eval-system][data-saved=true]').waitFor();

    await page.reload();
    await page.locator('[data-testid=loss-chart][data-steps="2"]').waitFor({ timeout: 30_000 });
    expect(await page.getByTestId('train-status').textContent()).toMatch(
      /^Last run \(nlft, nlft-sample\.json, .+\): done after 2 of 2 steps\.$/,
    );
    expect(await page.getByTestId('export-weights').getAttribute('download')).toBe('adapter_model.safetensors');
    expect(await page.getByTestId('train-rank').inputValue()).toBe('4');
    expect(await page.getByTestId('nlft-rho').inputValue()).toBe('1.2'); // the run's options come back with it
    await expect.poll(() => page.getByTestId('eval-history-row').count()).toBe(evals);
    await expect.poll(() => page.getByTestId('eval-system').inputValue()).toBe('Be brief.');
    await page.getByTestId('eval-system-reset').click();
    expect(await page.getByTestId('eval-system').inputValue()).toBe('Solve it; end with #### N.');
    await page.screenshot({ path: resolve(TMP, 'app-trained.png'), fullPage: true });
    await page.getByTestId('train-panel').screenshot({ path: resolve(TMP, 'train-panel.png') });
    expect(pageErrors).toEqual([]);
  }, 300_000);

  it('pauses, resumes and stops a run; the stopped run keeps its adapter and continues after a reload', async () => {
    await page.goto(url);
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    await page.getByTestId('train-method').selectOption('sft');
    await page.getByTestId('train-epochs').fill('4'); // 6 records, batch 4: 6 steps
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status][data-state=training]').waitFor({ timeout: 60_000 }); // the new run's chart starts empty
    const chart = page.getByTestId('loss-chart');
    const steps = async () => Number(await chart.getAttribute('data-steps'));
    await expect.poll(steps, { timeout: 60_000 }).toBeGreaterThanOrEqual(1);
    await page.getByTestId('train-pause').click();
    expect(await page.getByTestId('train-status').getAttribute('data-state')).toBe('pausing');
    // The worker reports where it holds: after the step under way when Pause was clicked.
    const status = page.locator('[data-testid=train-status][data-state=paused]');
    await status.waitFor({ timeout: 60_000 });
    const held = Number((await status.textContent())!.match(/^Paused after step (\d+) of 6\.$/)![1]);
    expect(await steps()).toBe(held);
    await new Promise((r) => setTimeout(r, 4000));
    expect(await steps()).toBe(held);
    await page.getByTestId('train-pause').click(); // Resume
    await expect.poll(steps, { timeout: 60_000 }).toBeGreaterThan(held);
    await page.getByTestId('train-stop').click();
    await page.locator('[data-testid=train-status][data-state=cancelled]').waitFor({ timeout: 60_000 });
    const done = await steps();
    expect(done).toBeLessThan(6);
    expect(await page.getByTestId('train-status').textContent()).toBe(
      `Stopped after ${done} of 6 steps. The playground now scores with the trained adapter.`,
    );
    expect(await page.getByTestId('export-weights').isVisible()).toBe(true);

    // After a reload the stopped run continues from its checkpoint (saved when it stopped) to the end.
    await new Promise((r) => setTimeout(r, 1000)); // let the last IndexedDB write land
    await page.reload();
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    const cont = page.getByTestId('train-continue');
    await expect.poll(() => cont.textContent(), { timeout: 30_000 }).toBe(`Continue from step ${done}`);
    expect(await steps()).toBe(done);
    await cont.click();
    await page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('train-error').textContent()).toBe('');
    expect(await page.getByTestId('train-status').textContent()).toBe(
      'Done after 6 of 6 steps. The playground now scores with the trained adapter.',
    );
    expect(await steps()).toBe(6);
    expect(await cont.isHidden()).toBe(true);
    expect(pageErrors).toEqual([]);
  }, 300_000);

  // Needs the worker side of `TrainRequest.memoryBudgetMiB` (the session layer's budget rule, as the CLI's --memory-budget).
  it('refuses a run over the memory budget with the sizes and stores nothing; without a budget it trains', async () => {
    await page.goto(url);
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    // The last run is the previous test's: SFT, 6 of 6 steps, no budget.
    const last = /^Last run \(sft, nlft-sample\.json, .+\): done after 6 of 6 steps\.$/;
    await expect.poll(() => page.getByTestId('train-status').textContent(), { timeout: 30_000 }).toMatch(last);
    const budget = page.getByTestId('train-memory-budget');
    expect(await budget.inputValue()).toBe('');
    await page.getByTestId('train-epochs').fill('1'); // 6 records, batch 4: 2 steps

    await budget.fill('1');
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status]:is([data-state=error], [data-state=done])').waitFor({ timeout: 60_000 });
    const message = (await page.getByTestId('train-error').textContent()) ?? '';
    expect(message).toMatch(/memory budget/);
    const sizes = message.match(/\d+(\.\d+)? (B|KiB|MiB|GiB)\b/g) ?? [];
    expect(sizes, message).toContainEqual(expect.stringMatching(/^1(\.0)? MiB$/)); // the budget
    expect(sizes.length, message).toBeGreaterThanOrEqual(2); // and the size needed
    expect(await page.getByTestId('train-status').getAttribute('data-state')).toBe('error');
    expect(await page.getByTestId('loss-chart').getAttribute('data-steps')).toBe('6'); // the stored run is shown again
    expect(await page.getByTestId('train-start').isDisabled()).toBe(false);

    // Nothing was stored as a new run: after a reload the last run is still the previous one.
    await page.reload();
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    await expect.poll(() => page.getByTestId('train-status').textContent(), { timeout: 30_000 }).toMatch(last);

    // Without a budget it trains: NLFT with the saliency fixed before training (static, an SFT-cost step).
    await page.getByTestId('train-epochs').fill('1');
    await budget.fill('');
    await page.getByTestId('train-method').selectOption('nlft');
    expect(await page.getByTestId('train-saliency').inputValue()).toBe('dynamic');
    await page.getByTestId('train-saliency').selectOption('static');
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('train-error').textContent()).toBe('');
    expect(await page.getByTestId('train-status').textContent()).toBe(
      'Done after 2 of 2 steps. The playground now scores with the trained adapter.',
    );
    expect(await page.getByTestId('train-summary').textContent()).toMatch(/^Saliency before training: 3 positive and 3 negative records/);
    expect(await page.getByTestId('saliency-record').locator('option').count()).toBe(6); // every visit reported
    // The run's setting comes back with it after a reload.
    await page.reload();
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    await expect.poll(() => page.getByTestId('train-status').textContent(), { timeout: 30_000 }).toMatch(/^Last run \(nlft, /);
    expect(await page.getByTestId('train-saliency').inputValue()).toBe('static');
    expect(pageErrors).toEqual([]);
  }, 300_000);

  it('loads a model from a Hub (a local mock) — downloaded once, kept in IndexedDB, scored with its own tokenizer — and from a picked folder', async () => {
    const dir = resolve(TMP, 'hub-model');
    await writeTinyLlamaFolder(dir, {
      seed: 8,
      vocabSize: 49152,
      hiddenSize: 64,
      intermediateSize: 96,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      tie: true,
      dtype: 'BF16',
      shards: 2,
      tokenizerDir: resolve(ROOT, 'public/tokenizers/smollm2'),
    });
    const hub = await startMockHub({ 'test-org/tiny@main': dir });
    requests.enter(hub.url, 'the mock Hub');
    try {
      await page.goto(url);
      await page.locator('[data-testid=model-status]:is([data-state=ready], [data-state=error])').waitFor({ timeout: 180_000 });
      await page.getByTestId('model-kind').selectOption('hub');
      await page.getByTestId('hub-id').fill('test-org/missing');
      await page.getByTestId('hub-url').fill(hub.url);
      await page.getByTestId('hub-load').click();
      await page.locator('[data-testid=model-status][data-state=error]').waitFor({ timeout: 30_000 });
      expect(await page.getByTestId('model-error').textContent()).toBe(
        `config.json: not found in hub:test-org/missing@main (${hub.url}/test-org/missing/resolve/main/config.json answered 404)`,
      );

      await page.getByTestId('hub-id').fill('test-org/tiny');
      await page.getByTestId('hub-load').click();
      const ready = page.locator('[data-testid=model-status][data-state=ready]');
      await ready.waitFor({ timeout: 180_000 });
      expect(await ready.textContent()).toMatch(/^hub:test-org\/tiny@main, q\d weights$/);
      expect(hub.gets.get('test-org/tiny/main/model-00002-of-00002.safetensors')).toBe(1);
      await page.getByTestId('score').click();
      await expect.poll(() => page.getByTestId('token-strip').locator('[data-logp]').count(), { timeout: 30_000 }).toBeGreaterThan(0);
      await page.screenshot({ path: resolve(TMP, 'app-hub.png') });

      // After a reload the same model loads again, from IndexedDB: no new download.
      await page.reload();
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
      expect(await page.getByTestId('model-status').textContent()).toMatch(/^hub:test-org\/tiny@main/);
      expect(await page.getByTestId('hub-id').inputValue()).toBe('test-org/tiny');
      expect([...hub.gets.values()].every((n) => n === 1)).toBe(true);

      // The same model as a folder picked on this computer.
      await page.getByTestId('model-kind').selectOption('folder');
      await page.getByTestId('model-folder').setInputFiles(dir);
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
      expect(await page.getByTestId('model-status').textContent()).toMatch(/^hub-model, q\d weights$/);

      // Back to the stress model for the other tests.
      await page.getByTestId('model-kind').selectOption('stress');
      await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
      expect(pageErrors).toEqual([]);
    } finally {
      await hub.close();
    }
  }, 300_000);

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

  it('compares two evaluations side by side, keeps the selection across a reload, and opens a compare.json from the CLI', async () => {
    await page.goto(url);
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    // Two quick evaluations of the same two questions under different system texts: the base model,
    // then the adapter of a short SFT run (6 sample records, batch 4: 2 steps).
    const systems = ['Be brief.', 'Answer with a number.'];
    const evaluate = async (system: string) => {
      await page.getByTestId('eval-limit').fill('2');
      await page.getByTestId('eval-max-new').fill('4');
      await page.getByTestId('eval-system').fill(system);
      await page.getByTestId('eval-start').click();
      await waitSettled(page, 'eval-status', 240_000);
      expect(await page.getByTestId('eval-error').textContent()).toBe('');
    };
    await evaluate(systems[0]);
    await page.getByTestId('train-method').selectOption('sft');
    await page.getByTestId('train-epochs').fill('1');
    await page.getByTestId('train-batch').fill('4');
    await page.getByTestId('train-rank').fill('4');
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('train-error').textContent()).toBe('');
    await evaluate(systems[1]);
    const panel = page.getByTestId('compare-panel');
    const stored = panel.getByTestId('compare-stored');
    await panel.getByTestId('compare-clear').click();
    const picks = panel.getByTestId('compare-pick');
    const n = await picks.count();
    expect(n).toBeGreaterThanOrEqual(2);
    await picks.nth(n - 2).check();
    await picks.nth(n - 1).check();
    const bars = stored.getByTestId('compare-bar');
    expect(await bars.count()).toBe(2);
    const counts = await bars.evaluateAll((gs) => gs.map((g) => g.getAttribute('data-counts')));
    for (const c of counts) expect(c).toMatch(/^[0-2]\/2 = \d+\.\d%$/);
    const labels = await stored.locator('.bar-label').allTextContents();
    expect(labels).toEqual(['1. base model', expect.stringMatching(/^2\. sft run of .+ on nlft-sample\.json, trained /)]);
    expect(await stored.locator('.bar-detail').allTextContents()).toEqual(systems.map((t) => expect.stringContaining(`system "${t}"`)));
    expect(await panel.getByTestId('compare-status').textContent()).toBe('2 evaluations of gsm8k-sample.jsonl, 2 items each.');
    expect(await stored.getByTestId('compare-diffs').locator('li').first().textContent()).toMatch(
      /^2 vs 1: [+−]\d+\.\d points \[[+−]\d+\.\d, [+−]\d+\.\d\] — sft run of .+, trained adapter \(r 4 on gate_proj,up_proj,down_proj\)$/,
    );
    const grid = stored.getByTestId('compare-grid').locator('tbody tr');
    expect(await grid.count()).toBe(2);
    expect(await grid.first().locator('td').allTextContents()).toEqual([
      '1',
      '18',
      expect.stringMatching(/^[✓✗]$/),
      expect.stringMatching(/^[✓✗]$/),
    ]);
    const differing = Number((await stored.getByTestId('compare-pairs').textContent())!.match(/1 vs 2: (\d)$/)![1]);
    await stored.getByTestId('compare-disagree').check();
    expect(await grid.count()).toBe(differing);
    await page.locator('[data-testid=compare-evals][data-saved=true]').waitFor();
    await page.getByTestId('compare-panel').screenshot({ path: resolve(TMP, 'compare-panel.png') });

    // After a reload the same two evaluations are compared, with the filter as it was.
    await page.reload();
    await expect.poll(() => page.getByTestId('compare-stored').getByTestId('compare-bar').count(), { timeout: 30_000 }).toBe(2);
    const checked = await page.getByTestId('compare-pick').evaluateAll((xs) => xs.map((x) => (x as HTMLInputElement).checked));
    expect(checked.slice(-2)).toEqual([true, true]);
    expect(checked.filter(Boolean)).toHaveLength(2);
    expect(await stored.getByTestId('compare-disagree').isChecked()).toBe(true);
    await stored.getByTestId('compare-disagree').uncheck();

    // A compare.json as nlft compare --out writes it: the base model and two arms of two seeds each.
    const correct = (bits: string) => [...bits].map((b) => b === '1');
    const arms = [
      { arm: 'sft', seeds: [0, 1], correct: [correct('1100'), correct('1000')], trainSeconds: [3, 4] },
      { arm: 'nlft:negatives=anchor', seeds: [0, 1], correct: [correct('1110'), correct('0110')], trainSeconds: [5, 6] },
    ];
    const json = {
      command: 'nlft compare --model M --data d.json --eval t.jsonl --arms sft,nlft:negatives=anchor --seeds 0,1 --out out',
      eval: 't.jsonl',
      reference: 'sft',
      items: ['18', '3', '70000', '540'].map((expected, i) => ({ index: i + 1, id: String(i), expected })),
      base: { label: 'M, q8, no adapter; t.jsonl', correct: correct('0100') },
      runs: arms.flatMap((a) => a.seeds.map((seed, s) => ({ arm: a.arm, seed, system: 'Solve it.', correct: a.correct[s] }))),
      rows: compareRows(arms, 'sft'),
    };
    const imported = page.getByTestId('compare-imported');
    await page
      .getByTestId('compare-import')
      .setInputFiles({ name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from('{"items": []}') });
    // The file is read asynchronously: wait for its message before reading it.
    await page.getByTestId('compare-error').filter({ hasText: 'bad.json' }).waitFor();
    expect(await page.getByTestId('compare-error').textContent()).toBe(
      'bad.json: field "items": expected at least one test item, found []',
    );
    expect(await imported.isHidden()).toBe(true);
    await page
      .getByTestId('compare-import')
      .setInputFiles({ name: 'compare.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(json)) });
    await imported.waitFor();
    expect(await page.getByTestId('compare-error').isHidden()).toBe(true);
    expect(await imported.locator('.bar-label').allTextContents()).toEqual(['1. base model', '2. sft', '3. nlft:negatives=anchor']);
    expect(await imported.getByTestId('compare-bar').evaluateAll((gs) => gs.map((g) => g.getAttribute('data-counts')))).toEqual([
      '1/4 = 25.0%',
      'mean 37.5% · 2/4, 1/4',
      'mean 62.5% · 3/4, 2/4',
    ]);
    expect(await imported.locator('circle[data-seed]').count()).toBe(4);
    const rows = imported.getByTestId('compare-rows').locator('tbody tr');
    expect(await rows.nth(1).locator('td').allTextContents()).toEqual([
      'sft',
      '50.0 (seed 0), 25.0 (seed 1)',
      '37.5 ± 17.7',
      '(reference)',
      '3.5',
    ]);
    expect(await rows.nth(2).locator('td').nth(3).textContent()).toMatch(/^\+25\.0 points \[[+−]\d+\.\d, [+−]\d+\.\d\]$/);
    const cells = await imported.getByTestId('compare-grid').locator('tbody tr').first().locator('td').allTextContents();
    expect(cells).toEqual(['1', '18', '✗', '2/2', '1/2']);
    await page.getByTestId('compare-panel').screenshot({ path: resolve(TMP, 'compare-imported.png') });
    expect(pageErrors).toEqual([]);
  }, 600_000); // two evaluations and a run; each wait is generous for a loaded 2-core machine
  it('scores the data for the saliency explorer, re-classifies on the page, keeps it across a reload, hands its settings to training, and takes a scorer', async () => {
    await page.goto(url);
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    await page
      .getByRole('button', { name: 'use the sample' })
      .click({ timeout: 1000 })
      .catch(() => undefined); // the sample, if a file was picked
    const status = page.getByTestId('explorer-status');
    const settled = '[data-testid=explorer-status]:is([data-state=done], [data-state=error], [data-state=stopped])';
    await page.getByTestId('explorer-score').click();
    await page.locator(settled).waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('explorer-error').textContent()).toBe('');
    expect(await status.textContent()).toMatch(/^Scored nlft-sample\.json: 6 records scored by stress model/);
    expect(await page.getByTestId('explorer-count-records').textContent()).toBe('6: 3 positive, 3 negative');
    const rows = page.getByTestId('explorer-record');
    expect(await rows.count()).toBe(6);
    expect(await page.getByTestId('explorer-histogram').getAttribute('data-tokens')).not.toBe('0');
    // A record's saliency map.
    await rows.nth(1).click();
    expect(await page.getByTestId('explorer-map-line').textContent()).toMatch(
      /^Record 2 \(.+, (positive|negative)\) before training: loss /,
    );
    expect(await page.getByTestId('explorer-tokens').locator('[data-class]').count()).toBeGreaterThan(0);

    // A constant changed: re-classified on the page at once, no worker call (no progress, the status stays as it was).
    const classes = page.getByTestId('explorer-count-classes');
    const before = await classes.textContent();
    const timing = page.getByTestId('explorer-timing');
    const runs = Number(await timing.getAttribute('data-runs'));
    await page.getByTestId('explorer-nlft-pjMin').fill('0');
    await page.getByTestId('explorer-nlft-rho').fill('1.0001');
    await page.getByTestId('explorer-nlft-tauC').fill('0.01');
    expect(Number(await timing.getAttribute('data-runs'))).toBeGreaterThanOrEqual(runs + 3);
    expect(await timing.textContent()).toMatch(
      /^Re-classified 6 records in \d+\.\d ms on this page, from the cached scores \(no GPU pass\)\.$/,
    );
    expect(await page.getByTestId('explorer-progress').isHidden()).toBe(true);
    expect(await status.getAttribute('data-state')).toBe('done');
    const after = await classes.textContent();
    expect(after).not.toBe(before);
    expect(await page.getByTestId('explorer-histogram').locator('text').filter({ hasText: 'ρ = 1.0001' }).count()).toBe(1);
    await page.getByTestId('explorer-panel').screenshot({ path: resolve(TMP, 'explorer-panel.png') });
    await page.screenshot({ path: resolve(TMP, 'app-explorer.png'), fullPage: true });

    // After a reload the explorer shows the same scores and constants without a GPU pass.
    await new Promise((r) => setTimeout(r, 500)); // let the IndexedDB write land
    await page.reload();
    await page.locator('[data-testid=explorer-status][data-state=restored]').waitFor({ timeout: 30_000 });
    expect(await status.textContent()).toMatch(/^Scores kept from nlft-sample\.json: 6 records scored by stress model/);
    expect(await rows.count()).toBe(6);
    expect(await page.getByTestId('explorer-nlft-rho').inputValue()).toBe('1.0001');
    expect(await classes.textContent()).toBe(after);

    // Train with these settings: the Train form takes the constants.
    await page.locator('[data-testid=model-status][data-state=ready]').waitFor({ timeout: 180_000 });
    await page.getByTestId('explorer-train').click();
    expect(await page.getByTestId('train-method').inputValue()).toBe('nlft');
    expect(await page.getByTestId('nlft-rho').inputValue()).toBe('1.0001');
    expect(await page.getByTestId('nlft-pjMin').inputValue()).toBe('0');
    expect(await page.getByTestId('nlft-tauC').inputValue()).toBe('0.01');
    expect(await page.getByTestId('train-scorer').isHidden()).toBe(true);

    // A scorer with another vocabulary is refused, naming where the vocabularies differ.
    const vocab = resolve(TMP, 'other-vocab');
    await mkdir(vocab, { recursive: true });
    const tj = JSON.parse(readPublic('tokenizers/smollm2/tokenizer.json'));
    const last = Object.keys(tj.model.vocab).find((k) => tj.model.vocab[k] === 49151)!;
    delete tj.model.vocab[last];
    tj.model.vocab['scorer-only-token'] = 49151;
    await writeFile(resolve(vocab, 'tokenizer.json'), JSON.stringify(tj));
    await writeFile(resolve(vocab, 'tokenizer_config.json'), readPublic('tokenizers/smollm2/tokenizer_config.json'));
    const shape = { ...DEMO_MODEL_OPTIONS, dtype: 'BF16' as const }; // the demo model's shape, other weights
    const other = resolve(TMP, 'scorer-other');
    await writeTinyLlamaFolder(other, { ...shape, seed: 12, tokenizerDir: vocab });
    await page.getByTestId('explorer-scorer').selectOption('folder');
    await page.getByTestId('explorer-scorer-folder').setInputFiles(other);
    await page.getByTestId('explorer-score').click();
    await page.locator(settled).waitFor({ timeout: 120_000 });
    expect(await status.getAttribute('data-state')).toBe('error');
    expect(await page.getByTestId('explorer-error').textContent()).toBe(
      `scorer scorer-other: its tokenizer differs from the trained model's (token 49151 is ${JSON.stringify(last)} in the model and "scorer-only-token" in the scorer); a scorer must have the same vocabulary`,
    );
    expect(await rows.count()).toBe(6); // the scores shown are still the earlier ones

    // A scorer with the same vocabulary scores; training with its settings re-scores with it (static saliency).
    const same = resolve(TMP, 'scorer-same');
    await writeTinyLlamaFolder(same, { ...shape, seed: 13, tokenizerDir: resolve(ROOT, 'public/tokenizers/smollm2') });
    await page.getByTestId('explorer-scorer-folder').setInputFiles(same);
    await page.getByTestId('explorer-score').click();
    await page.locator(settled).waitFor({ timeout: 120_000 });
    expect(await page.getByTestId('explorer-error').textContent()).toBe('');
    expect(await status.textContent()).toMatch(/^Scored nlft-sample\.json: 6 records scored by the scorer scorer-same/);
    await page.getByTestId('explorer-train').click();
    expect(await page.getByTestId('train-scorer').textContent()).toMatch(/^Scorer: scorer-same /);
    expect(await page.getByTestId('train-saliency').inputValue()).toBe('static');
    await page.getByTestId('train-epochs').fill('1');
    await page.getByTestId('train-batch').fill('4'); // 6 records: 2 steps
    await page.getByTestId('train-start').click();
    await page.locator('[data-testid=train-status]:is([data-state=done], [data-state=error])').waitFor({ timeout: 180_000 });
    expect(await page.getByTestId('train-error').textContent()).toBe('');
    expect(await page.getByTestId('train-status').textContent()).toMatch(/^Done after 2 of 2 steps\./);
    expect(pageErrors).toEqual([]);
  }, 400_000);

  it('measures the kernel tiles on request, keeps them in IndexedDB and takes them after a reload', async () => {
    await page.goto(url);
    const ready = page.locator('[data-testid=model-status][data-state=ready]');
    await ready.waitFor({ timeout: 180_000 });
    // f32 weights: one format to compile each candidate in (q4 adds q8 for the lm-head and f32 for the LoRA factors).
    await page.getByTestId('quant').selectOption('f32');
    await expect.poll(() => ready.textContent(), { timeout: 180_000 }).toMatch(/, f32 weights$/);
    const kernels = page.getByTestId('kernels');
    expect(await kernels.textContent()).toMatch(new RegExp(String.raw`^${KERNELS_TEXT} \(${PRESET}\)$`));
    await page.getByTestId('measure-kernels').click();
    await expect
      .poll(() => page.getByTestId('model-status').textContent(), { timeout: 60_000 })
      .toMatch(/^Measuring kernel speed on this GPU…$/);
    await expect
      .poll(() => kernels.textContent(), { timeout: 300_000 })
      .toMatch(new RegExp(String.raw`^${KERNELS_TEXT} \(measured now\)$`));
    expect(await page.getByTestId('model-status').getAttribute('data-state')).toBe('ready');
    await page.reload();
    await ready.waitFor({ timeout: 180_000 });
    expect(await kernels.textContent()).toMatch(new RegExp(String.raw`^${KERNELS_TEXT} \(measured earlier on this GPU\)$`));
    // The Storage view lists the measurement with what else is stored.
    await expect.poll(() => page.locator('[data-testid=storage-row][data-kind=tuning]').count(), { timeout: 30_000 }).toBe(1);
    expect(pageErrors).toEqual([]);
  }, 480_000); // one measurement: every candidate compiled for each weight format (a minute or two on 2 busy cores)
});
