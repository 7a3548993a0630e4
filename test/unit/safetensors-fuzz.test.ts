/**
 * The safetensors reader and the model-folder loader under fuzzed input (test/helpers/fuzz.ts):
 * single files (header, metadata and every tensor read back), and sharded folders
 * (`config.json`, `model.safetensors.index.json` and two shards, loaded as a model).
 */
import { describe, expect, it } from 'vitest';
import { configToJson } from '../../src/model/config.ts';
import { makeTinyLlama, weightsToSafetensorsEntries } from '../../src/model/demo.ts';
import { loadModelFolder, WEIGHTS_INDEX_FILE } from '../../src/model/loader.ts';
import {
  parseSafetensorsHeader,
  readTensorF32,
  type SafetensorsDtype,
  type SafetensorsTensor,
  writeSafetensors,
} from '../../src/model/safetensors.ts';
import { Rng } from '../../src/util/rng.ts';
import { folderSize, fuzz, MemorySource, mutateBytes, mutateFolder } from '../helpers/fuzz.ts';

const CASES = 10_000;
const DTYPES: SafetensorsDtype[] = ['F32', 'F16', 'BF16'];

/** A valid file of up to four random tensors (any dtype, 0–3 dimensions, empty ones too) and maybe metadata. */
function randomSafetensors(rng: Rng): Uint8Array {
  const tensors: SafetensorsTensor[] = Array.from({ length: rng.int(5) }, (_, i) => {
    const shape = Array.from({ length: rng.int(4) }, () => rng.int(5));
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).map(() => rng.normal());
    return { name: `t${i}`, dtype: DTYPES[rng.int(3)], shape, data };
  });
  return writeSafetensors(tensors, rng.int(2) ? { format: 'pt', note: 'é' } : undefined);
}

/** A valid sharded model folder: the layers in one shard, the rest in another, F16 or BF16. */
function randomShardedModel(rng: Rng): Record<string, Uint8Array> {
  const weights = makeTinyLlama({
    seed: rng.int(1000),
    vocabSize: 24,
    hiddenSize: 8,
    intermediateSize: 12,
    numLayers: 1 + rng.int(2),
    numHeads: 2,
    numKvHeads: 1,
    tie: rng.int(2) === 0,
  });
  const entries = weightsToSafetensorsEntries(weights, rng.int(2) ? 'F16' : 'BF16');
  const shardOf = (name: string) => (name.includes('layers') ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors');
  const index = { metadata: { total_size: 0 }, weight_map: Object.fromEntries(entries.map((e) => [e.name, shardOf(e.name)])) };
  const encode = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  return {
    'config.json': encode(configToJson(weights.config)),
    [WEIGHTS_INDEX_FILE]: encode(index),
    ...Object.fromEntries(shards.map((s) => [s, writeSafetensors(entries.filter((e) => shardOf(e.name) === s))])),
  };
}

describe('safetensors under fuzzed input', () => {
  it('a weight_map nested 10 000 deep is a ModelFormatError, not a stack overflow (found by the fuzzer)', async () => {
    const files = randomShardedModel(new Rng(1));
    const deep = `${'['.repeat(10_000)}1${']'.repeat(10_000)}`;
    files[WEIGHTS_INDEX_FILE] = new TextEncoder().encode(`{"weight_map": ${deep}}`);
    await expect(loadModelFolder(new MemorySource(files))).rejects.toThrow(
      'model.safetensors.index.json (weight_map): expected an object mapping tensor names to shard files, found a list nested too deeply to show',
    );
  });

  it(`${CASES} single files: header and every tensor read, or a ModelFormatError naming the file`, async () => {
    const outcomes = await fuzz({
      name: 'safetensors file',
      seed: 13,
      cases: CASES,
      valid: randomSafetensors,
      mutate: mutateBytes,
      size: (bytes) => bytes.length,
      mentions: 'fuzz.safetensors',
      async parse(bytes) {
        const header = await parseSafetensorsHeader(bytes, bytes.length, 'fuzz.safetensors');
        const source = new MemorySource({ 'fuzz.safetensors': bytes });
        for (const name of header.tensors.keys()) await readTensorF32(source, 'fuzz.safetensors', header, name);
        return header;
      },
    });
    expect(outcomes.ok).toBeGreaterThan(1000);
    expect(outcomes.refused).toBeGreaterThan(1000);
  });

  it(`${CASES} sharded model folders (config, index, shards): a loaded model or a ModelFormatError`, async () => {
    const outcomes = await fuzz({
      name: 'sharded model folder',
      seed: 14,
      cases: CASES,
      valid: randomShardedModel,
      mutate: mutateFolder,
      size: folderSize,
      parse: (files) => loadModelFolder(new MemorySource(files)),
    });
    expect(outcomes.ok).toBeGreaterThan(1000);
    expect(outcomes.refused).toBeGreaterThan(1000);
  });
});
