/**
 * The readers of training files from outside under fuzzed input (test/helpers/fuzz.ts): dataset
 * files (JSON arrays and JSON Lines), PEFT adapter folders (`adapter_config.json` and
 * `adapter_model.safetensors`, read against a model), and checkpoint files (`--resume`, and a
 * stored run's checkpoint in the app). A checkpoint cut anywhere or with any byte changed is
 * refused, never read as a good one (its CRC-32).
 */
import { describe, expect, it } from 'vitest';
import { MICRO_SHAPE } from '../fixtures/tiny-llama.ts';
import { parseDataset } from '../../src/data/dataset.ts';
import { peftAdapterFiles, readPeftAdapter } from '../../src/export/peft.ts';
import { tinyLlamaConfig } from '../../src/model/demo.ts';
import { initLora, type LoraConfig } from '../../src/model/lora.ts';
import { PROJECTIONS } from '../../src/model/weights.ts';
import { CHECKPOINT_FILE, checkpointBytes, readCheckpoint } from '../../src/train/checkpoint.ts';
import { DEFAULT_TRAIN } from '../../src/train/trainer.ts';
import type { Rng } from '../../src/util/rng.ts';
import { folderSize, fuzz, MemorySource, mutateBytes, mutateFolder, mutateJsonText } from '../helpers/fuzz.ts';

const CASES = 10_000;
const MODEL = tinyLlamaConfig({
  seed: 0,
  ...MICRO_SHAPE,
});

/** A valid NLFT or GSM8K record. */
function randomRecord(rng: Rng, i: number): Record<string, unknown> {
  if (rng.int(3) === 0) return { question: `What is ${i} + ${i}?`, answer: `#### ${2 * i}` };
  return {
    id: `r${i}`,
    input: 'Add 2 and 2.',
    output: rng.int(2) ? 'It is 4.' : 'It is 5.',
    answer: '#### 4',
    judgment: rng.int(2) ? 'Wrong sum.' : null,
    score: rng.int(11),
  };
}

describe('training files under fuzzed input', () => {
  it(`${CASES} dataset files (JSON and JSON Lines): records, or a DatasetError naming the file`, async () => {
    const o = await fuzz({
      name: 'dataset file',
      seed: 31,
      cases: CASES,
      valid(rng: Rng) {
        const records = Array.from({ length: 1 + rng.int(6) }, (_, i) => randomRecord(rng, i));
        return rng.int(2) ? JSON.stringify(records) : records.map((r) => JSON.stringify(r)).join('\n');
      },
      // A JSON array as a tree and as bytes; JSON Lines one line at a time (a tree or its bytes), or as bytes.
      mutate(text, rng) {
        if (text.startsWith('[')) return new TextDecoder().decode(mutateJsonText(text, rng));
        const lines = text.split('\n');
        const at = rng.int(lines.length);
        lines[at] = new TextDecoder().decode(mutateJsonText(lines[at], rng));
        return rng.int(4) ? lines.join('\n') : new TextDecoder().decode(mutateBytes(new TextEncoder().encode(text), rng));
      },
      size: (text) => text.length,
      mentions: 'data.jsonl',
      parse: (text) => parseDataset(new TextEncoder().encode(text), 'data.jsonl', { requireOutput: text.length % 2 === 0 }),
    });
    expect(o.ok).toBeGreaterThan(500);
    expect(o.refused).toBeGreaterThan(500);
  });

  it(`${CASES} PEFT adapter folders: an adapter for the model, or a ModelFormatError`, async () => {
    const o = await fuzz({
      name: 'PEFT adapter folder',
      seed: 32,
      cases: CASES,
      valid(rng: Rng) {
        const c: LoraConfig = { r: 4 * (1 + rng.int(2)), alpha: 8, dropout: 0.05, targets: PROJECTIONS.filter(() => rng.int(2) === 1) };
        if (c.targets.length === 0) c.targets = ['q_proj'];
        const files = peftAdapterFiles(initLora(MODEL, c, rng.int(100)), c, { baseModel: 'tiny' });
        return {
          'adapter_config.json': new TextEncoder().encode(files['adapter_config.json']),
          'adapter_model.safetensors': files['adapter_model.safetensors'],
        };
      },
      mutate: mutateFolder,
      size: folderSize,
      parse: (files) => readPeftAdapter(new MemorySource(files), MODEL),
    });
    expect(o.ok).toBeGreaterThan(500);
    expect(o.refused).toBeGreaterThan(500);
  });

  it(`${CASES} checkpoint files: the checkpoint, or a ModelFormatError naming it; every changed file refused`, async () => {
    let changedRead = 0;
    const o = await fuzz({
      name: 'checkpoint file',
      seed: 33,
      cases: CASES,
      valid(rng: Rng) {
        const n = 4 * (1 + rng.int(30));
        const values = () => new Float32Array(n).map(() => rng.normal());
        const lora: LoraConfig = { r: 4, alpha: 4, dropout: 0.1, targets: ['q_proj'] };
        return checkpointBytes(
          { config: { ...DEFAULT_TRAIN, seed: rng.int(9) }, state: { step: rng.int(50) }, params: values(), m: values(), v: values() },
          lora,
        );
      },
      mutate: mutateBytes,
      size: (bytes) => bytes.length,
      mentions: CHECKPOINT_FILE,
      async parse(bytes) {
        const saved = await readCheckpoint(new MemorySource({ [CHECKPOINT_FILE]: bytes }));
        // A changed file that still reads must hold exactly what a valid file holds: only unchanged bytes pass the CRC.
        const again = checkpointBytes(saved.checkpoint, saved.lora);
        if (again.length !== bytes.length || again.some((b, i) => b !== bytes[i])) changedRead++;
        return saved;
      },
    });
    // Unchanged files read; changes that only touch JSON whitespace or key order could still read, and none does here.
    expect(changedRead).toBe(0);
    expect(o.ok).toBeGreaterThan(500);
    expect(o.refused).toBeGreaterThan(5000);
  });
});

describe('checkpoint damage the fuzzer found', () => {
  it('a flipped bit in the crc32 key ("c2c32") is refused, not read as a checkpoint without a checksum', async () => {
    const lora: LoraConfig = { r: 4, alpha: 4, dropout: 0.1, targets: ['q_proj'] };
    const good = checkpointBytes(
      { config: DEFAULT_TRAIN, state: { step: 3 }, params: new Float32Array(8), m: new Float32Array(8), v: new Float32Array(8) },
      lora,
    );
    const at = new TextDecoder().decode(good).indexOf('"crc32"') + 2;
    const bad = good.slice();
    bad[at] ^= 0x40; // 'r' → '2'
    await expect(readCheckpoint(new MemorySource({ [CHECKPOINT_FILE]: bad }))).rejects.toThrow(
      'checkpoint.safetensors (__metadata__.c2c32): unknown field; expected format, config, lora, step and crc32',
    );
    await expect(readCheckpoint(new MemorySource({ [CHECKPOINT_FILE]: good }))).resolves.toMatchObject({
      checkpoint: { state: { step: 3 } },
    });
  });
});
