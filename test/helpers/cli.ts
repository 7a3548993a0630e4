/** Run the `nlft` CLI as a user does (a child process); never throws on a non-zero exit. */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const NLFT = path.join(ROOT, 'bin', 'nlft.js');

/**
 * The kernel-tuning cache of this test file's CLI runs (the first run measures, later ones reuse;
 * never the user's ~/.cache).
 */
export const CLI_CACHE_DIR = mkdtempSync(path.join(os.tmpdir(), 'nlft-cli-cache-'));
process.on('exit', () => rmSync(CLI_CACHE_DIR, { recursive: true, force: true }));

/** The environment of a CLI child process. */
export const CLI_ENV = { ...process.env, NLFT_CACHE_DIR: CLI_CACHE_DIR };

export function nlft(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return nlftWithEnv({}, ...args);
}

/** `nlft` with extra environment variables (e.g. HF_ENDPOINT for the mock hub). */
export async function nlftWithEnv(
  env: Record<string, string>,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('node', [NLFT, ...args], { cwd: ROOT, env: { ...CLI_ENV, ...env } });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** The kernel choice as `describeTuning` words it (`matmul 16×8 (wg 2×4), dx 8×8, lm-head 8×8, decode cols 8 (wg 16), attention 4 threads a head`), for regexes. */
export const KERNELS_TEXT = String.raw`matmul (shared (f16 )?|subgroup )?\d+×\d+ \(wg \d+(×\d+)?\), dx \d+×\d+, lm-head \d+×\d+, decode (cols|splitk|subgroup) \d+ \(wg \d+\), attention \d+ threads a head`;
