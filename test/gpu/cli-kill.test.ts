/**
 * `nlft train` killed, not stopped (issue 13): a run checkpointing after every step
 * (`--checkpoint-seconds 0`) is killed with SIGKILL at seeded random moments — during start-up,
 * during a step, during a checkpoint write — at least 20 times, and each time continued with
 * `--resume` from its own folder; the final adapter equals an uninterrupted run's bit for bit, and
 * the checkpoint on disk after every kill reads back whole (written to a temporary name, flushed
 * and renamed; its CRC-32 checked on read), and metrics.jsonl logs every step once.
 */
import { spawn } from 'node:child_process';
import { access, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FolderSource } from '../../src/node/fs-source.ts';
import { CHECKPOINT_FILE, readCheckpoint } from '../../src/train/checkpoint.ts';
import { Rng } from '../../src/util/rng.ts';
import { makeTmpDir, writeCliTrainingFixture } from '../fixtures/tiny-llama.ts';
import { CLI_ENV, NLFT, nlft, ROOT } from '../helpers/cli.ts';

/** Kills the test makes before it lets the run finish. */
const KILLS = 20;

let tmp: string;
let modelDir: string;
let data: string;

beforeAll(async () => {
  tmp = await makeTmpDir('cli-kill');
  ({ modelDir, data } = await writeCliTrainingFixture(tmp, 9));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const TRAIN = [
  '--method',
  'sft',
  '--quant',
  'q8',
  '--max-len',
  '128',
  '--batch',
  '1',
  '--epochs',
  '12',
  '--rank',
  '4',
  '--targets',
  'q_proj,down_proj',
  '--lr',
  '1e-3',
  '--seed',
  '5',
  '--dropout',
  '0.1',
];

/**
 * One `nlft train` into `out` (continuing its checkpoint when there is one), killed with SIGKILL
 * `at.ms` after it started, or `at.afterStepMs` after its first step line. Resolves with whether it
 * was killed (false: it finished first) and what it printed.
 */
async function runAndKill(out: string, at: { ms: number } | { afterStepMs: number }): Promise<{ killed: boolean; stdout: string }> {
  const hasCheckpoint = await access(path.join(out, CHECKPOINT_FILE)).then(
    () => true,
    () => false,
  );
  const args = [NLFT, 'train', '--model', modelDir, '--data', data, '--out', out, '--checkpoint-seconds', '0', ...TRAIN];
  const child = spawn('node', hasCheckpoint ? [...args, '--resume', out] : args, { cwd: ROOT, env: CLI_ENV });
  let stdout = '';
  let stderr = '';
  let timer: NodeJS.Timeout | undefined;
  const kill = (ms: number) => (timer ??= setTimeout(() => child.kill('SIGKILL'), ms));
  if ('ms' in at) kill(at.ms);
  child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (/^step /m.test(stdout) && 'afterStepMs' in at) kill(at.afterStepMs);
  });
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (c, s) => resolve({ code: c, signal: s })),
  );
  clearTimeout(timer);
  if (signal !== 'SIGKILL' && code !== 0) throw new Error(`nlft train failed (${code}): ${stderr}`);
  return { killed: signal === 'SIGKILL', stdout };
}

it(`a run killed with SIGKILL ${KILLS} times and resumed each time ends with the uninterrupted run's adapter, bit for bit`, async () => {
  const full = path.join(tmp, 'full');
  const r = await nlft('train', '--model', modelDir, '--data', data, '--out', full, ...TRAIN);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/^trained: 48\/48 steps/m);

  // A step's time here once its kernels are compiled (the median of the uninterrupted run's steps after the first):
  // kills after a step line land in the next step or the checkpoint write before it, whatever this machine's speed.
  const stepMs = (await readFile(path.join(full, 'metrics.jsonl'), 'utf8'))
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => JSON.parse(line).ms as number)
    .sort((a, b) => a - b)[23];
  const out = path.join(tmp, 'killed');
  const rng = new Rng(13);
  let kills = 0;
  let checkpointKills = 0;
  const stepsAfterKill: number[] = [];
  for (let attempt = 0; kills < KILLS; attempt++) {
    if (attempt > 3 * KILLS) throw new Error(`only ${kills} kills landed in ${attempt} runs`);
    // Mostly during training (the next step or the checkpoint write after it); one in five during start-up.
    const duringStartup = rng.int(5) === 0;
    const { killed, stdout } = await runAndKill(out, duringStartup ? { ms: rng.int(3000) } : { afterStepMs: 1.2 * stepMs * rng.next() });
    if (!killed) break; // it finished before the kill
    kills++;
    const saved = await readCheckpoint(new FolderSource(out)).catch((e: Error) => e);
    if (saved instanceof Error) {
      // Killed before its first checkpoint: nothing may be on disk.
      expect(
        await access(path.join(out, CHECKPOINT_FILE)).then(
          () => 'present',
          () => 'absent',
        ),
      ).toBe('absent');
      continue;
    }
    const printed = [...stdout.matchAll(/^step +(\d+)\//gm)].map((m) => Number(m[1]));
    // The checkpoint is that of the last step printed, or of the one before (killed while writing it).
    if (printed.length) {
      const last = printed[printed.length - 1];
      expect([last - 1, last]).toContain(saved.checkpoint.state.step);
      if (saved.checkpoint.state.step === last - 1) checkpointKills++;
    }
    stepsAfterKill.push(saved.checkpoint.state.step);
  }
  expect(kills).toBe(KILLS);
  const last = await runAndKill(out, { ms: 2 ** 31 - 1 });
  expect(last.killed).toBe(false);
  console.log(
    `cli kill: ${kills} SIGKILLs survived, ${checkpointKills} between a step and its checkpoint; checkpoint steps after each: ${stepsAfterKill.join(' ')}`,
  );
  for (const file of ['adapter_model.safetensors', 'adapter_config.json'])
    expect(await readFile(path.join(out, file)), file).toEqual(await readFile(path.join(full, file)));
  // Each resume dropped the log lines of steps after its checkpoint: every step is logged once, as in the full run.
  const loggedSteps = async (dir: string) =>
    (await readFile(path.join(dir, 'metrics.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { step: number }).step);
  expect(await loggedSteps(out)).toEqual(await loggedSteps(full));
}, 1_200_000); // 22 starts of the CLI (each compiles its kernels): minutes on SwiftShader
