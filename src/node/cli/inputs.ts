/** Inputs several commands share: a model folder with its tokenizer, and a dataset file. */
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDataset, type DatasetRecord } from '../../data/dataset.ts';
import { UsageError } from '../../errors.ts';
import { isPositiveInt, numberOption } from './args.ts';
import { formatBytes } from '../../engine/buffers.ts';
import { HubSource, parseHubId } from '../../model/hub.ts';
import type { FileSource } from '../../model/source.ts';
import type { LlamaConfig } from '../../model/config.ts';
import { readPeftAdapter, type PeftAdapter } from '../../export/peft.ts';
import { type OpenedModel, openModel } from '../../session/model.ts';
import { FolderSource } from '../fs-source.ts';
import { FolderFileCache } from '../hub-cache.ts';

/**
 * Where --model points: a local `.gguf` model file (a `tokenizer.json` beside it is used when
 * present), a local folder, or else a Hub id `org/name[@revision]`, whose files are
 * downloaded once into the cache (FolderFileCache). The Hub's base URL is $HF_ENDPOINT (default
 * https://huggingface.co), its token $HF_TOKEN, as huggingface_hub reads them.
 */
export function modelSource(spec: string, out?: (line: string) => void): FileSource {
  if (spec.toLowerCase().endsWith('.gguf') && statSync(spec, { throwIfNoEntry: false })?.isFile()) {
    return new FolderSource(path.dirname(spec), path.basename(spec));
  }
  if (existsSync(spec)) return new FolderSource(spec);
  const ref = parseHubId(spec);
  if (!ref) throw new UsageError(`--model ${spec}: no such folder or .gguf file, and not a Hub id (org/name or org/name@revision)`);
  return new HubSource(ref, {
    baseUrl: process.env.HF_ENDPOINT || undefined,
    token: process.env.HF_TOKEN || undefined,
    cache: new FolderFileCache(),
    onDownload: (file, loaded, total) => {
      if (loaded === 0) out?.(`download   ${file}${total === null ? '' : ` (${formatBytes(total)})`} from hub:${ref.repo}@${ref.revision}`);
    },
  });
}

/** Load a model (see `modelSource`) that must have a tokenizer (`purpose` says what needs it, for the message). */
export function loadModelWithTokenizer(spec: string, purpose: string, out?: (line: string) => void): Promise<OpenedModel> {
  return openModel(modelSource(spec, out), purpose);
}

/** The bytes of a dataset file. */
export async function readDatasetBytes(file: string): Promise<Uint8Array> {
  try {
    return await readFile(file);
  } catch {
    throw new UsageError(`cannot read the dataset ${file}`);
  }
}

/** Read and validate a dataset file. */
export async function readDatasetFile(file: string, requireOutput: boolean): Promise<DatasetRecord[]> {
  return parseDataset(await readDatasetBytes(file), path.basename(file), { requireOutput }).records;
}

/** --adapter: a PEFT adapter folder for the model, or null when the option is absent. */
export async function adapterOption(values: Record<string, unknown>, config: LlamaConfig): Promise<PeftAdapter | null> {
  if (values.adapter === undefined) return null;
  if (typeof values.adapter !== 'string' || values.adapter === '') throw new UsageError('--adapter needs a folder');
  return readPeftAdapter(new FolderSource(values.adapter), config);
}

/** --limit: how many records to use from the first (all when absent). */
export function limitOption(values: Record<string, unknown>): number {
  return values.limit === undefined ? Infinity : numberOption(values, 'limit', 1, isPositiveInt, 'a positive integer');
}
