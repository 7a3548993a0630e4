/**
 * The CLI's progress line for a big dataset (issue 13, part 4): a 10⁵-record JSON Lines file
 * (generated here, about 6 MiB) read in chunks and parsed, reported as bytes read of the total and records
 * parsed; as plain lines at most one a second when stderr is not a terminal (none for a file read
 * within the second), rewritten in place on a terminal. The clock is the test's, so nothing here
 * depends on how fast the machine is.
 */
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseDataset } from '../../src/data/dataset.ts';
import { readDatasetBytes } from '../../src/node/cli/inputs.ts';
import { DatasetProgress, type ProgressOutput } from '../../src/node/cli/progress.ts';
import { makeTmpDir } from '../fixtures/tiny-llama.ts';

let dir: string;
let file: string;
let size: number;

beforeAll(async () => {
  dir = await makeTmpDir('dataset-progress');
  file = path.join(dir, 'big.jsonl');
  const text = Array.from({ length: 100_000 }, (_, i) =>
    JSON.stringify({ question: `What is ${i} times 3?`, answer: `#### ${3 * i}` }),
  ).join('\n');
  await writeFile(file, text);
  size = Buffer.byteLength(text);
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** An output whose clock moves `stepMs` at every reading of it, and what was written to it. */
function fakeOutput(isTTY: boolean, stepMs: number): ProgressOutput & { written: string[] } {
  let t = 0;
  const written: string[] = [];
  return { written, isTTY, write: (text) => void written.push(text), now: () => (t += stepMs) };
}

/** Reads and parses the file as `nlft score` does, its progress going to `out`. */
async function readWith(out: ProgressOutput): Promise<number> {
  const progress = new DatasetProgress('big.jsonl', out);
  const { records } = parseDataset(await readDatasetBytes(file, progress), 'big.jsonl', { onProgress: progress.parsed });
  progress.end();
  return records.length;
}

it('not a terminal: a line per second, bytes read of the total then records parsed, up to the whole file', async () => {
  const out = fakeOutput(false, 1000); // every update a second after the last
  expect(await readWith(out)).toBe(100_000);
  const lines = out.written.map((l) => l.replace(/\n$/, ''));
  expect(out.written.every((l) => l.endsWith('\n') && !l.includes('\r'))).toBe(true);
  const figures = lines.map((l) => {
    const m = /^data {7}reading big\.jsonl: ([\d.]+ (?:B|KiB|MiB)) of ([\d.]+ MiB)(?:, ([\d,]+) records)?$/.exec(l);
    if (!m) throw new Error(`unexpected progress line: ${l}`);
    return { read: m[1], total: m[2], records: m[3] ? Number(m[3].replaceAll(',', '')) : 0 };
  });
  const total = `${(size / 2 ** 20).toFixed(1)} MiB`;
  expect(new Set(figures.map((f) => f.total))).toEqual(new Set([total]));
  expect(figures[0]).toEqual({ read: '0 B', total, records: 0 });
  // Chunks of 4 MiB, then every 10 000 records, and the end repeats the last figures.
  const reads = figures.filter((f) => f.records === 0).map((f) => f.read);
  const chunks = Array.from({ length: Math.ceil(size / 2 ** 22) - 1 }, (_, i) => `${(4 * (i + 1)).toFixed(1)} MiB`);
  expect(reads).toEqual(['0 B', ...chunks, total]);
  const parsed = figures.filter((f) => f.records > 0).map((f) => f.records);
  expect(parsed).toEqual([...Array.from({ length: 10 }, (_, i) => 10_000 * (i + 1)), 100_000, 100_000]);
  expect(figures.filter((f) => f.records > 0).every((f) => f.read === total)).toBe(true);
});

it('not a terminal: nothing when the file is read within the second', async () => {
  const out = fakeOutput(false, 0);
  expect(await readWith(out)).toBe(100_000);
  expect(out.written).toEqual([]);
});

it('a terminal: one line rewritten in place, ended with a newline', async () => {
  const out = fakeOutput(true, 100);
  expect(await readWith(out)).toBe(100_000);
  expect(out.written.length).toBeGreaterThan(10);
  expect(out.written.slice(0, -1).every((w) => w.startsWith('\r') && w.endsWith('\x1b[K'))).toBe(true);
  expect(out.written.at(-1)).toBe(
    '\rdata       reading big.jsonl: ' +
      `${(size / 2 ** 20).toFixed(1)} MiB of ${(size / 2 ** 20).toFixed(1)} MiB, 100,000 records\x1b[K\n`,
  );
});
