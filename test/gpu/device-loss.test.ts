/**
 * A GPU device lost in the middle of a training run (issue 13, part 3), on a tiny model with the
 * toy-math tokenizer (849 tokens) and 4 of its questions, through both hosts of the training session: `nlft train` (its command run in
 * this process, its engine's device destroyed from the test when it prints a step) and the
 * worker's `TrainerHost` (destroyed from the run's step event). Each run ends with a
 * `DeviceLostError` naming the step and the checkpoint kept, never a hang and never a checkpoint
 * after the loss; continued on a new device from that checkpoint, it ends with the adapter of an
 * unbroken run, byte for byte (the worker host's; the two hosts train byte-identical adapters,
 * test/gpu/session-hosts.test.ts). Any other job of the worker's host that a loss breaks (an
 * evaluation here) fails with the loss, not with the GPU call it refused. Most of the time goes to
 * compiling the kernels on each new device.
 */
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { Engine } from '../../src/engine/engine.ts';
import { DeviceLostError } from '../../src/errors.ts';
import { ADAPTER_WEIGHTS_FILE } from '../../src/export/peft.ts';
import { trainCommand } from '../../src/node/cli/train.ts';
import { createNodeEngine } from '../../src/node/engine.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { DEFAULT_SALIENCY } from '../../src/nlft/saliency.ts';
import { DEFAULT_TEMPLATES } from '../../src/nlft/templates.ts';
import type { TrainEvent, TrainRequest } from '../../src/session/requests.ts';
import { readCheckpoint } from '../../src/train/checkpoint.ts';
import { DEFAULT_TRAIN } from '../../src/train/trainer.ts';
import type { Projection } from '../../src/model/weights.ts';
import type { TrainerHost } from '../../workers/trainer-host.ts';
import { nodeTrainerHost } from '../helpers/node-host.ts';
import { makeTmpDir, TINY_SHAPE, writeTinyLlamaFolder } from '../fixtures/tiny-llama.ts';
import { CLI_CACHE_DIR, ROOT } from '../helpers/cli.ts';

/** Every engine `nlft train` creates in this process, newest last (the test destroys their devices). */
const cliEngines = vi.hoisted(() => [] as Engine[]);
vi.mock('../../src/node/engine.ts', async (original) => {
  const mod = await original<typeof import('../../src/node/engine.ts')>();
  return {
    ...mod,
    createTunedEngine: async (...args: Parameters<typeof mod.createTunedEngine>) => {
      const made = await mod.createTunedEngine(...args);
      cliEngines.push(made.engine);
      return made;
    },
  };
});

let tmp: string;
let modelDir: string;
let data: string;
let host: TrainerHost;
/** Every engine the worker host creates, newest last. */
const hostEngines: Engine[] = [];
/** What the worker host told the page of lost devices. */
const hostLosses: string[] = [];

/** One run's settings, as the worker host gets them and as `nlft train` flags (`CLI_FLAGS`). */
const TRAIN = { ...DEFAULT_TRAIN, epochs: 2, batch: 1, lr: 1e-3, seed: 2 };
const LORA = { r: 4, dropout: 0.1, targets: ['q_proj', 'down_proj'] as Projection[] };
const CLI_FLAGS = ['--method', 'sft', '--quant', 'q8', '--max-len', '128', '--batch', '1', '--epochs', '2', '--lr', '1e-3', '--seed', '2'];
const CLI_LORA = ['--rank', '4', '--dropout', '0.1', '--targets', 'q_proj,down_proj'];

beforeAll(async () => {
  process.env.NLFT_CACHE_DIR = CLI_CACHE_DIR; // the tuning cache of this file's runs, never the user's
  tmp = await makeTmpDir('device-loss');
  modelDir = path.join(tmp, 'model');
  const toyMath = path.join(ROOT, 'public', 'toy-math');
  await writeTinyLlamaFolder(modelDir, {
    seed: 13,
    ...TINY_SHAPE,
    vocabSize: 849,
    dtype: 'F32',
    tokenizerDir: path.join(toyMath, 'model'),
  });
  const lines = (await readFile(path.join(toyMath, 'data', 'test_easy_100.jsonl'), 'utf8')).split('\n').slice(0, 4);
  data = path.join(tmp, 'toy.jsonl');
  await writeFile(data, lines.join('\n'));
  host = nodeTrainerHost(async () => {
    const e = await createNodeEngine();
    hostEngines.push(e);
    return e;
  });
});
afterAll(async () => {
  hostEngines.at(-1)?.destroy();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** The model folder, loaded in the worker host as picked files. */
async function loadInHost(): Promise<void> {
  const files = await Promise.all((await readdir(modelDir)).map(async (n) => new File([await readFile(path.join(modelDir, n))], n)));
  await host.loadModel({ kind: 'files', label: modelDir, files }, 'q8', () => undefined);
}

/** The request of the runs, as the app's Train panel sends it. */
async function request(): Promise<TrainRequest> {
  return {
    method: 'sft',
    train: TRAIN,
    lora: LORA,
    maxLen: 128,
    saliency: { ...DEFAULT_SALIENCY },
    templates: DEFAULT_TEMPLATES,
    data: { name: 'toy.jsonl', bytes: new Uint8Array(await readFile(data)) },
  };
}

/** The adapter of the run trained without a loss, in the worker host (trained once, on first use). */
const unbrokenAdapter = (() => {
  let adapter: Promise<Uint8Array> | null = null;
  return () =>
    (adapter ??= (async () => {
      await host.init((message) => void hostLosses.push(message));
      await loadInHost();
      expect(await host.train(await request(), () => undefined)).toMatchObject({ status: 'done', steps: 8 });
      return (await host.exportAdapter())[ADAPTER_WEIGHTS_FILE];
    })());
})();

/** The run's steps as its messages name them: ", at step N of 8; … checkpoint at step K …". */
const lostAt = (step: number, kept: number) =>
  new RegExp(
    `^The GPU device was lost \\(destroyed: .+\\) at step ${step} of 8; the run is kept with its checkpoint at step ${kept} and can continue from it on a new device\\.$`,
  );

it("the worker's host: a device lost mid-run is reported and ends the run keeping its checkpoint; init gets a new device and the run continues to the unbroken adapter", async () => {
  const unbroken = await unbrokenAdapter();
  // Paused after step 2 (a checkpoint comes with the pause), resumed, and the device destroyed as step 5 is reported.
  const events: TrainEvent[] = [];
  const lost = await host
    .train(await request(), (ev) => {
      events.push(ev);
      if (ev.type === 'step' && ev.metrics.step === 2) void host.setPaused(true);
      if (ev.type === 'paused') void host.setPaused(false);
      if (ev.type === 'step' && ev.metrics.step === 5) hostEngines[0].ctx.device.destroy();
    })
    .catch((e: Error) => e);
  expect(lost).toBeInstanceOf(Error);
  expect((lost as Error).name).toBe('device-lost');
  expect((lost as Error).message).toMatch(lostAt(6, 2));
  const checkpoints = events.flatMap((e) => (e.type === 'checkpoint' ? [e] : []));
  expect(checkpoints.map((c) => c.step)).toEqual([2]); // none after the loss
  expect(hostLosses).toEqual([expect.stringMatching(/^GPU device lost \(destroyed\): /)]);
  // Until init, every call says the device is lost.
  await expect(loadInHost()).rejects.toThrow(/^GPU device lost \(destroyed\): /);

  // A new device, the model loaded again, and the run continued from its checkpoint.
  await host.init((message) => void hostLosses.push(message));
  expect(hostEngines).toHaveLength(2);
  await loadInHost();
  const model = { id: modelDir, quant: 'q8' as const };
  const outcome = await host.train({ ...(await request()), resume: { checkpoint: checkpoints[0].bytes, model } }, () => undefined);
  expect(outcome).toMatchObject({ status: 'done', steps: 8 });
  expect(Buffer.from((await host.exportAdapter())[ADAPTER_WEIGHTS_FILE]).equals(Buffer.from(unbroken))).toBe(true);
  expect(hostLosses).toHaveLength(1);
}, 300_000); // a run, a new device and the rest of the run

it("the worker's host: an evaluation whose device is lost after its first answer fails with the loss, not with the refused GPU call", async () => {
  await unbrokenAdapter(); // a model loaded on a live device
  const answered: number[] = [];
  const request = { data: { name: 'toy.jsonl', bytes: new Uint8Array(await readFile(data)) }, limit: 4, maxNewTokens: 8 };
  const lost = await host
    .evaluate(request, (_item, done) => {
      answered.push(done);
      if (done === 1) hostEngines.at(-1)!.ctx.device.destroy();
    })
    .catch((e: Error) => e);
  expect(answered).toEqual([1]);
  expect(lost).toBeInstanceOf(Error);
  expect((lost as Error).name).toBe('device-lost');
  expect((lost as Error).message).toMatch(/^GPU device lost \(destroyed\): /);
  await host.init((message) => void hostLosses.push(message)); // a new device for the tests after this one
  await loadInHost();
});

it('nlft train: a device lost at step 5 ends with a DeviceLostError and how to continue; --resume on a new device gives the unbroken adapter', async () => {
  const unbroken = await unbrokenAdapter();
  const out = path.join(tmp, 'cli');
  /** `nlft train` in this process, checkpointing after every step; `onLine` sees every line it prints. */
  const train = (extra: string[], onLine: (line: string) => void = () => undefined) =>
    trainCommand(
      ['--model', modelDir, '--data', data, '--out', out, ...CLI_FLAGS, ...CLI_LORA, '--checkpoint-seconds', '0', ...extra],
      onLine,
    );
  // The device is destroyed as step 5 is printed, before its checkpoint is read.
  const printed: string[] = [];
  const lost = await train([], (line) => {
    printed.push(line);
    if (line.startsWith('step    5/')) cliEngines.at(-1)!.ctx.device.destroy();
  }).catch((e: unknown) => e);
  expect(lost).toBeInstanceOf(DeviceLostError);
  expect((lost as Error).message).toMatch(lostAt(6, 4));
  expect(printed.filter((l) => l.startsWith('step '))).toHaveLength(5);
  const hint = printed.at(-1)!;
  expect(hint).toMatch(/^continue {3}from the checkpoint at step 4: nlft train --model \S+ .* --checkpoint-seconds 0 --resume \S+$/);
  expect(hint.endsWith(`--resume ${out}`)).toBe(true);
  // On disk: step 4's checkpoint (step 5's was never read), and no adapter.
  expect((await readCheckpoint(new FolderSource(out))).checkpoint.state.step).toBe(4);
  expect(await readdir(out)).not.toContain(ADAPTER_WEIGHTS_FILE);

  // The command the line gives, on a new device (a new engine).
  await train(['--resume', out]);
  expect(cliEngines).toHaveLength(2);
  expect((await readFile(path.join(out, ADAPTER_WEIGHTS_FILE))).equals(Buffer.from(unbroken))).toBe(true);
  const steps = (await readFile(path.join(out, 'metrics.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l).step);
  expect(steps).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
});
