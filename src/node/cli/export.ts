/**
 * `nlft export --adapter DIR --format gguf [--out FILE] [--model M]`: a PEFT adapter folder (what
 * `nlft train` writes) as a GGUF LoRA adapter for llama.cpp and Ollama, with the lines to use it.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { formatBytes } from '../../engine/buffers.ts';
import { UsageError } from '../../errors.ts';
import { GGUF_ADAPTER_FILE, ggufAdapterUsage, ggufLoraAdapter } from '../../export/gguf.ts';
import { ADAPTER_CONFIG_FILE, readPeftAdapter } from '../../export/peft.ts';
import { parseLlamaConfig } from '../../model/config.ts';
import { CONFIG_FILE, readJsonFile } from '../../model/loader.ts';
import { isRecord } from '../../util/json.ts';
import { FolderSource } from '../fs-source.ts';
import { parse, required } from './args.ts';
import { modelSource } from './inputs.ts';

/** The formats `--format` takes. */
const EXPORT_FORMATS = ['gguf'];

/**
 * Prints where the GGUF adapter is and how to run it: the `llama-cli` line and an Ollama
 * `Modelfile` (the base model named after `base`).
 */
export function printGgufUsage(base: string, adapterPath: string, bytes: number, out: (line: string) => void): void {
  const { modelfile, llamaCpp } = ggufAdapterUsage(base, adapterPath);
  out(`gguf       wrote ${adapterPath} (${formatBytes(bytes)}), a LoRA adapter for llama.cpp and Ollama`);
  out(`llama.cpp  ${llamaCpp}`);
  out(`Modelfile  for Ollama, beside ${path.basename(adapterPath)} (then: ollama create NAME -f Modelfile):`);
  for (const line of modelfile.trimEnd().split('\n')) out(`           ${line}`);
}

export async function exportCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    adapter: { type: 'string' },
    format: { type: 'string' },
    out: { type: 'string' },
    model: { type: 'string' },
  });
  const adapterDir = required(values, 'adapter');
  const format = required(values, 'format');
  if (!EXPORT_FORMATS.includes(format)) {
    throw new UsageError(`--format must be ${EXPORT_FORMATS.join(' or ')} (got "${format}"); the PEFT files are in ${adapterDir} already`);
  }
  const adapterSource = new FolderSource(adapterDir);
  const adapterConfig = await readJsonFile(adapterSource, ADAPTER_CONFIG_FILE);
  const named = isRecord(adapterConfig) ? adapterConfig.base_model_name_or_path : undefined;
  const base = typeof values.model === 'string' ? values.model : typeof named === 'string' && named !== '' ? named : null;
  if (base === null) {
    throw new UsageError(`--model is required: ${adapterDir}/${ADAPTER_CONFIG_FILE} names no base_model_name_or_path`);
  }
  // Only the base's config.json is read: the adapter's shapes are checked against it.
  const source = modelSource(base, out);
  const modelConfig = parseLlamaConfig(await readJsonFile(source, CONFIG_FILE), `${source.label}/${CONFIG_FILE}`);
  const peft = await readPeftAdapter(adapterSource, modelConfig);
  const bytes = ggufLoraAdapter(peft.lora, peft.config, modelConfig);
  const outFile = typeof values.out === 'string' && values.out !== '' ? values.out : path.join(adapterDir, GGUF_ADAPTER_FILE);
  try {
    await writeFile(outFile, bytes);
  } catch (e) {
    throw new UsageError(`--out ${outFile}: cannot write it (${(e as Error).message})`);
  }
  out(`adapter    ${adapterDir}: LoRA r ${peft.config.r} alpha ${peft.config.alpha} on ${peft.config.targets.join(',')}, base ${base}`);
  printGgufUsage(base, outFile, bytes.length, out);
}
