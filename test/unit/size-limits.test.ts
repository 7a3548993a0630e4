/**
 * Size limits that hold (issue 13, part 4): a 2 GiB safetensors file (sparse on disk) is read
 * through file ranges, its header and one small tensor at its end, with the process's memory
 * growing by far less than the file; a 10⁵-record dataset (generated here, about 11 MiB) parses
 * with its records' memory bounded by a stated multiple of the file, and one over the size limit
 * is refused with its size and the limit.
 */
import { open, rm } from 'node:fs/promises';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { parseDataset } from '../../src/data/dataset.ts';
import { readSafetensorsHeader, readTensorF32 } from '../../src/model/safetensors.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { makeTmpDir } from '../fixtures/tiny-llama.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Heap and ArrayBuffer bytes in use after a full collection. */
function memoryInUse(): { heap: number; buffers: number } {
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, buffers: m.arrayBuffers };
}

const MiB = 1024 * 1024;
let dir: string;
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('size limits', () => {
  it('a 2 GiB safetensors file: header and the small tensor at its end read with less than 8 MiB more memory', async () => {
    dir = await makeTmpDir('size-limits');
    const big = 2 ** 29 - 16; // F32 values: 2 GiB - 64 bytes
    const header = new TextEncoder().encode(
      JSON.stringify({
        big: { dtype: 'F32', shape: [big], data_offsets: [0, big * 4] },
        tail: { dtype: 'F32', shape: [16], data_offsets: [big * 4, big * 4 + 64] },
      }),
    );
    const dataStart = 8 + header.length;
    const size = dataStart + big * 4 + 64;
    const prefix = new Uint8Array(dataStart);
    new DataView(prefix.buffer).setBigUint64(0, BigInt(header.length), true);
    prefix.set(header, 8);
    const tail = Float32Array.from({ length: 16 }, (_, i) => i + 0.5);
    const file = await open(path.join(dir, 'model.safetensors'), 'w');
    await file.write(prefix, 0, prefix.length, 0);
    await file.truncate(size); // sparse: the 2 GiB of zeros take no disk
    await file.write(new Uint8Array(tail.buffer), 0, 64, size - 64);
    await file.close();
    expect(size).toBeGreaterThan(2 * 1024 * MiB - 1);

    const before = memoryInUse();
    const rssBefore = process.memoryUsage().rss;
    const source = new FolderSource(dir);
    const parsed = await readSafetensorsHeader(source, 'model.safetensors');
    const read = await readTensorF32(source, 'model.safetensors', parsed, 'tail');
    const after = memoryInUse();
    const grown = after.heap + after.buffers - before.heap - before.buffers;
    const rssGrown = process.memoryUsage().rss - rssBefore;
    console.log(
      `size limits: a ${(size / MiB).toFixed(0)} MiB safetensors file read (header + last tensor) with ${(grown / 1024).toFixed(0)} KiB more heap and buffers, ${(rssGrown / MiB).toFixed(1)} MiB more RSS`,
    );
    expect(parsed.tensors.get('big')?.end).toBe(big * 4);
    expect(Array.from(read)).toEqual(Array.from(tail));
    expect(grown).toBeLessThan(8 * MiB);
    expect(rssGrown).toBeLessThan(64 * MiB);
  });

  it('a 10⁵-record dataset parses with its records in under 4 bytes of heap per file byte; over the limit it is refused with both sizes', () => {
    const lines = Array.from({ length: 100_000 }, (_, i) =>
      JSON.stringify({
        id: `r${i}`,
        input: `What is ${i} + ${i}?`,
        output: `It is ${2 * i + (i % 3 === 0 ? 1 : 0)}.`,
        answer: `#### ${2 * i}`,
        judgment: i % 3 === 0 ? 'Off by one.' : null,
      }),
    );
    const bytes = new TextEncoder().encode(lines.join('\n'));
    const before = memoryInUse();
    const parsed = parseDataset(bytes, 'big.jsonl', { requireOutput: true });
    const after = memoryInUse();
    const kept = after.heap - before.heap;
    console.log(
      `size limits: ${parsed.records.length} records (${(bytes.length / MiB).toFixed(1)} MiB) parsed; the records keep ${(kept / MiB).toFixed(1)} MiB of heap (${(kept / bytes.length).toFixed(2)} per file byte)`,
    );
    expect(parsed.records).toHaveLength(100_000);
    expect(parsed.records[99_999]).toMatchObject({ id: 'r99999', polarity: 'negative' });
    expect(kept).toBeLessThan(4 * bytes.length);
    expect(() => parseDataset(bytes, 'big.jsonl', { maxBytes: 8 * MiB })).toThrow(
      `big.jsonl: the file is ${(bytes.length / MiB).toFixed(1)} MiB (${bytes.length} bytes), over the size limit of 8.0 MiB (8388608 bytes)`,
    );
  });
});
