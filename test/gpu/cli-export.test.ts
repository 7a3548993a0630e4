/**
 * GGUF adapters from the CLI, as child processes: `nlft train` writes adapter.gguf beside the PEFT
 * files and prints the llama.cpp line and an Ollama Modelfile; `nlft export --format gguf` turns
 * the PEFT folder into the same bytes; bad inputs get one clear line and a non-zero exit.
 * (That llama.cpp runs such a file as our engine does: test/gpu/gguf-llamacpp.test.ts.)
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ggufLoraAdapter } from '../../src/export/gguf.ts';
import { readPeftAdapter } from '../../src/export/peft.ts';
import type { LlamaConfig } from '../../src/model/config.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { makeTmpDir, SMOLLM2_TOKENIZER_DIR, SMOLLM2_VOCAB, TINY_SHAPE, writeTinyLlamaFolder } from '../fixtures/tiny-llama.ts';
import { nlft, ROOT } from '../helpers/cli.ts';

let tmp: string;
let modelDir: string;
let runDir: string;
let config: LlamaConfig;

beforeAll(async () => {
  tmp = await makeTmpDir('cli-export');
  modelDir = path.join(tmp, 'tiny');
  ({
    weights: { config },
  } = await writeTinyLlamaFolder(modelDir, {
    seed: 4,
    ...TINY_SHAPE,
    vocabSize: SMOLLM2_VOCAB,
    dtype: 'F32',
    tokenizerDir: SMOLLM2_TOKENIZER_DIR,
  }));
  const lines = (await readFile(path.join(ROOT, 'public', 'samples', 'gsm8k-sample.jsonl'), 'utf8')).split('\n').slice(0, 2);
  const data = path.join(tmp, 'gsm.jsonl');
  await writeFile(data, lines.join('\n'));
  runDir = path.join(tmp, 'run');
  const train = await nlft(
    'train',
    ...['--model', modelDir, '--data', data, '--out', runDir, '--method', 'sft', '--steps', '1', '--batch', '2'],
    ...['--max-len', '160', '--rank', '4', '--targets', 'q_proj,k_proj,down_proj', '--lr', '1e-2', '--quant', 'f32'],
  );
  expect(train.stderr).toBe('');
  expect(train.code).toBe(0);
  // What the training printed about the GGUF file.
  expect(train.stdout).toContain(`gguf       wrote ${path.join(runDir, 'adapter.gguf')} (`);
  expect(train.stdout).toContain(`llama.cpp  llama-cli -m tiny.gguf --lora ${path.join(runDir, 'adapter.gguf')}\n`);
  expect(train.stdout).toContain(
    `           # the base must be the same model (${modelDir}) in GGUF\n           FROM ./tiny.gguf\n           ADAPTER ./adapter.gguf\n`,
  );
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

it('nlft train writes adapter.gguf: the trained PEFT adapter as GGUF; nlft export makes the same bytes from the PEFT folder', async () => {
  const peft = await readPeftAdapter(new FolderSource(runDir), config);
  const trained = await readFile(path.join(runDir, 'adapter.gguf'));
  expect(new Uint8Array(trained)).toEqual(ggufLoraAdapter(peft.lora, peft.config, config));

  const outFile = path.join(tmp, 'exported.gguf');
  const res = await nlft('export', '--adapter', runDir, '--format', 'gguf', '--out', outFile); // base from adapter_config.json
  expect(res.stderr).toBe('');
  expect(res.code).toBe(0);
  expect(res.stdout).toContain(`adapter    ${runDir}: LoRA r 4 alpha 4 on q_proj,k_proj,down_proj, base ${modelDir}\n`);
  expect(res.stdout).toContain(`gguf       wrote ${outFile} (`);
  expect(res.stdout).toContain('FROM ./tiny.gguf\n           ADAPTER ./exported.gguf\n');
  expect(await readFile(outFile)).toEqual(trained);
});

it('nlft export: a wrong format, a missing adapter folder or an adapter of another model get one clear line', async () => {
  const wrongFormat = await nlft('export', '--adapter', runDir, '--format', 'peft');
  expect(wrongFormat.code).toBe(1);
  expect(wrongFormat.stderr.trim()).toBe(`nlft export: --format must be gguf (got "peft"); the PEFT files are in ${runDir} already`);

  const missing = await nlft('export', '--adapter', path.join(tmp, 'nowhere'), '--format', 'gguf');
  expect(missing.code).toBe(1);
  expect(missing.stderr).toMatch(/^nlft export: adapter_config\.json: .*nowhere/);

  const other = path.join(tmp, 'other');
  await writeTinyLlamaFolder(other, { seed: 5, ...TINY_SHAPE, hiddenSize: 48, vocabSize: 64, dtype: 'F32' });
  const mismatch = await nlft('export', '--adapter', runDir, '--format', 'gguf', '--model', other, '--out', path.join(tmp, 'x.gguf'));
  expect(mismatch.code).toBe(1);
  expect(mismatch.stderr).toMatch(
    /^nlft export: adapter_model\.safetensors \(base_model\.model\.model\.layers\.0\.[a-z_.]+\.lora_A\.weight\): expected shape \[4, 48\]/,
  );
});
