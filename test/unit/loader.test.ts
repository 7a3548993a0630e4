import { readFile, rm, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelFormatError } from '../../src/errors.ts';
import { configToJson } from '../../src/model/config.ts';
import { DEMO_MODEL_OPTIONS, makeTinyLlama, weightsToSafetensorsEntries, type TinyLlamaOptions } from '../../src/model/demo.ts';
import { loadModelFolder } from '../../src/model/loader.ts';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, writeSafetensors } from '../../src/model/safetensors.ts';
import { hfTensorNames, parameterCount, weightAt, type LlamaWeights } from '../../src/model/weights.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { makeTmpDir, writeTinyLlamaFolder, MICRO_SHAPE } from '../fixtures/tiny-llama.ts';

const TINY: TinyLlamaOptions = {
  seed: 11,
  ...MICRO_SHAPE,
};

let root: string;
let counter = 0;
/** A fresh folder under this file's tmp root. */
const folder = () => path.join(root, `m${counter++}`);

beforeAll(async () => {
  root = await makeTmpDir('loader');
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Expects every tensor of `got` to equal `want` after `round` was applied to `want`'s values. */
function expectWeights(got: LlamaWeights, want: LlamaWeights, round: (x: number) => number = (x) => x) {
  expect(got.config).toEqual(want.config);
  expect(got.layers.length).toBe(want.layers.length);
  for (const spec of hfTensorNames(want.config)) {
    const g = weightAt(got, spec.slot)!;
    const w = weightAt(want, spec.slot)!;
    expect(g.length, spec.name).toBe(w.length);
    for (let i = 0; i < w.length; i++) {
      if (g[i] !== round(w[i])) expect.fail(`${spec.name}[${i}]: ${g[i]} != ${round(w[i])}`);
    }
  }
  expect(got.lmHead === null).toBe(want.config.tieWordEmbeddings);
}

async function loadError(dir: string): Promise<ModelFormatError> {
  const error = await loadModelFolder(new FolderSource(dir)).then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ModelFormatError);
  return error as ModelFormatError;
}

async function editConfig(dir: string, edit: (json: Record<string, unknown>) => void) {
  const file = path.join(dir, 'config.json');
  const json = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  edit(json);
  await writeFile(file, JSON.stringify(json));
}

describe('loadModelFolder: valid folders', () => {
  it('loads a single-file F32 tied model exactly', async () => {
    const dir = folder();
    const { weights } = await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    const model = await loadModelFolder(new FolderSource(dir));
    expectWeights(model.weights, weights);
    expect(model.config).toEqual(weights.config);
    expect(model.tokenizerJson).toBeNull();
    expect(model.tokenizerConfig).toBeNull();
    expect(model.files).toEqual(['config.json', 'model.safetensors']);
  });

  it('loads a sharded F16 untied model with tokenizer files, reporting progress', async () => {
    const tokDir = folder();
    const tokenizer = { version: '1.0', model: { type: 'BPE', vocab: { a: 0 } } };
    await writeTinyLlamaFolder(tokDir, { ...TINY, dtype: 'F32' });
    await writeFile(path.join(tokDir, 'tokenizer.json'), JSON.stringify(tokenizer));
    await writeFile(path.join(tokDir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|im_end|>' }));

    const dir = folder();
    const opts = { ...TINY, tie: false, dtype: 'F16' as const, shards: 3, tokenizerDir: tokDir };
    const { weights, files } = await writeTinyLlamaFolder(dir, opts);
    expect(files).toContain('model-00003-of-00003.safetensors');
    const progress: [number, number][] = [];
    const model = await loadModelFolder(new FolderSource(dir), { onProgress: (d, t) => progress.push([d, t]) });

    expectWeights(model.weights, weights, (x) => f16BitsToF32(f32ToF16Bits(x)));
    expect(model.tokenizerJson).toEqual(tokenizer);
    expect(model.tokenizerConfig).toEqual({ eos_token: '<|im_end|>' });
    expect(model.files).toEqual([
      'config.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'model.safetensors.index.json',
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
    ]);
    const total = parameterCount(weights.config) * 2;
    expect(progress[0]).toEqual([0, total]);
    expect(progress.at(-1)).toEqual([total, total]);
    expect(progress.length).toBe(hfTensorNames(weights.config).length + 1);
    expect(progress.every(([d], i) => i === 0 || d > progress[i - 1][0])).toBe(true);
  });

  it('loads a sharded BF16 tied model with head_dim != hidden/heads and rope scaling', async () => {
    const dir = folder();
    const opts = { ...TINY, headDim: 6, ropeScaling: true, dtype: 'BF16' as const, shards: 2 };
    const { weights } = await writeTinyLlamaFolder(dir, opts);
    const model = await loadModelFolder(new FolderSource(dir));
    expectWeights(model.weights, weights, (x) => bf16BitsToF32(f32ToBf16Bits(x)));
    expect(model.config.ropeScaling?.ropeType).toBe('llama3');
    expect(model.weights.layers[1].q.length).toBe(4 * 6 * 16);
  });

  it('ignores lm_head.weight in a tied model, and extra tensors', async () => {
    const dir = folder();
    const untied = makeTinyLlama({ ...TINY, tie: false });
    const entries = weightsToSafetensorsEntries(untied, 'F32');
    entries.push({ name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'F32', shape: [2], data: new Float32Array(2) });
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    await writeFile(path.join(dir, 'model.safetensors'), writeSafetensors(entries));
    const model = await loadModelFolder(new FolderSource(dir));
    expect(model.weights.lmHead).toBeNull();
    expect(model.weights.embed).toEqual(untied.embed);
  });
});

describe('loadModelFolder: errors name the file and field', () => {
  it('reports a shape mismatch between config and tensors', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    await editConfig(dir, (json) => (json.intermediate_size = 32));
    const error = await loadError(dir);
    expect(error.message).toBe('model.safetensors (model.layers.0.mlp.gate_proj.weight): expected shape [32, 16], found [24, 16]');
    expect(error.file).toBe('model.safetensors');
    expect(error.field).toBe('model.layers.0.mlp.gate_proj.weight');
  });

  it('names the shard holding a mis-shaped tensor', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F16', shards: 2 });
    await editConfig(dir, (json) => (json.vocab_size = 41));
    expect((await loadError(dir)).message).toBe(
      'model-00001-of-00002.safetensors (model.embed_tokens.weight): expected shape [41, 16], found [40, 16]',
    );
  });

  it('reports a missing shard', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32', shards: 3 });
    await unlink(path.join(dir, 'model-00002-of-00003.safetensors'));
    const error = await loadError(dir);
    expect(error.message).toBe(`model-00002-of-00003.safetensors: not found in ${dir} (listed in model.safetensors.index.json)`);
    expect(error.file).toBe('model-00002-of-00003.safetensors');
  });

  it('reports an index that maps a tensor to the wrong shard, or outside the folder', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32', shards: 2 });
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(await readFile(indexFile, 'utf8'));
    index.weight_map['model.norm.weight'] = 'model-00001-of-00002.safetensors';
    await writeFile(indexFile, JSON.stringify(index));
    expect((await loadError(dir)).message).toBe(
      'model-00001-of-00002.safetensors (model.norm.weight): not in this file, though model.safetensors.index.json maps it here',
    );
    index.weight_map['model.norm.weight'] = '../secret.safetensors';
    await writeFile(indexFile, JSON.stringify(index));
    expect((await loadError(dir)).message).toBe(
      'model.safetensors.index.json (weight_map["model.norm.weight"]): expected a shard file name in the model folder, found "../secret.safetensors"',
    );
    await writeFile(indexFile, JSON.stringify({ metadata: {} }));
    expect((await loadError(dir)).message).toBe(
      'model.safetensors.index.json (weight_map): expected an object mapping tensor names to shard files, found nothing',
    );
  });

  it('reports a missing lm_head in an untied model', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    await editConfig(dir, (json) => (json.tie_word_embeddings = false));
    const error = await loadError(dir);
    expect(error.message).toBe(
      'model.safetensors (lm_head.weight): missing; expected shape [40, 16] (required because tie_word_embeddings is false)',
    );
    // Sharded: the index is the file that lacks it.
    const sharded = folder();
    await writeTinyLlamaFolder(sharded, { ...TINY, dtype: 'F32', shards: 2 });
    await editConfig(sharded, (json) => (json.tie_word_embeddings = false));
    expect((await loadError(sharded)).file).toBe('model.safetensors.index.json');
  });

  it('reports invalid tokenizer JSON, naming the file', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    const text = '{"version": "1.0", "model": ';
    await writeFile(path.join(dir, 'tokenizer.json'), text);
    let parseMessage = '';
    try {
      JSON.parse(text);
    } catch (e) {
      parseMessage = (e as Error).message;
    }
    const error = await loadError(dir);
    expect(error.message).toBe(`tokenizer.json: not valid JSON: ${parseMessage}`);
    expect(error.file).toBe('tokenizer.json');
  });

  it('reports a missing config or missing weights', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    await unlink(path.join(dir, 'model.safetensors'));
    expect((await loadError(dir)).message).toBe(`model.safetensors: not found in ${dir} (nor model.safetensors.index.json)`);
    await unlink(path.join(dir, 'config.json'));
    expect((await loadError(dir)).message).toBe(`config.json: not found in ${dir}`);
  });

  it('reports an invalid config, naming the field', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    await editConfig(dir, (json) => (json.rope_scaling = { rope_type: 'yarn', factor: 4 }));
    expect((await loadError(dir)).message).toBe(
      'config.json (rope_scaling.rope_type): unsupported rope scaling "yarn"; supported: "llama3" (or null for none)',
    );
  });

  it('reports a truncated weights file from its header', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    const file = path.join(dir, 'model.safetensors');
    const bytes = await readFile(file);
    await writeFile(file, bytes.subarray(0, 1000));
    const claimed = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    expect(claimed).toBeGreaterThan(992);
    expect((await loadError(dir)).message).toBe(
      `model.safetensors (header): header claims ${claimed} bytes but the file has only 1000 (8-byte length + header + data)`,
    );
  });
});

describe('FolderSource', () => {
  it('reads ranges, reports sizes and missing files, and stays inside its folder', async () => {
    const dir = folder();
    await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'F32' });
    await writeFile(path.join(dir, 'ten.bin'), new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    const source = new FolderSource(dir);
    expect(await source.size('ten.bin')).toBe(10);
    expect(await source.size('nope.bin')).toBeNull();
    expect([...(await source.readRange('ten.bin', 3, 7))]).toEqual([3, 4, 5, 6]);
    expect([...(await source.read('ten.bin'))]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await expect(source.readRange('ten.bin', 8, 12)).rejects.toThrow('ten.bin: file ends at byte 10, before the requested range [8, 12)');
    await expect(source.read('nope.bin')).rejects.toThrow(`nope.bin: not found in ${dir}`);
    await expect(source.readRange('nope.bin', 0, 1)).rejects.toThrow(`nope.bin: not found in ${dir}`);
    await expect(source.read('../x.bin')).rejects.toThrow(`../x.bin: expected a file name inside ${dir}`);
  });
});

describe('demo model', () => {
  it('is deterministic, has the demo shape, and gives non-degenerate logits', () => {
    const a = makeTinyLlama(DEMO_MODEL_OPTIONS);
    const b = makeTinyLlama(DEMO_MODEL_OPTIONS);
    expect(Buffer.compare(Buffer.from(a.embed.buffer), Buffer.from(b.embed.buffer))).toBe(0);
    expect(a.config).toMatchObject({ vocabSize: 49152, hiddenSize: 64, intermediateSize: 128, numLayers: 2, headDim: 16 });
    expect(a.config.ropeScaling?.ropeType).toBe('llama3');
    expect(a.lmHead).toBeNull();
    const count = hfTensorNames(a.config).reduce((n, spec) => n + weightAt(a, spec.slot)!.length, 0);
    expect(parameterCount(a.config)).toBe(count);
    expect(configToJson(a.config).tie_word_embeddings).toBe(true);

    // Logits of a normalised random hidden state against the tied head: std of order 1–3.
    const C = a.config.hiddenSize;
    const h = Float32Array.from(a.embed.subarray(5 * C, 6 * C));
    const rms = Math.sqrt(h.reduce((s, x) => s + x * x, 0) / C);
    const logits = new Float64Array(a.config.vocabSize);
    for (let v = 0; v < logits.length; v++) {
      let dot = 0;
      for (let c = 0; c < C; c++) dot += (h[c] / rms) * a.finalNorm[c] * a.embed[v * C + c];
      logits[v] = dot;
    }
    const mean = logits.reduce((s, x) => s + x, 0) / logits.length;
    const std = Math.sqrt(logits.reduce((s, x) => s + (x - mean) ** 2, 0) / logits.length);
    expect(std).toBeGreaterThan(1);
    expect(std).toBeLessThan(3);
  });
});
