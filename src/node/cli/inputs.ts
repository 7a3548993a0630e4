/** Inputs several commands share: a model folder with its tokenizer, and a dataset file. */
import { existsSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
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
import { DatasetProgress } from './progress.ts';

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

/** Bytes read from a dataset file at a time (the progress line's step). */
const READ_CHUNK = 4 * 1024 * 1024;

/**
 * The bytes of a dataset file, read in chunks, each reported to `progress` (the caller ends it
 * once it has parsed them), or else to a progress line of its own, ended when read.
 */
export async function readDatasetBytes(file: string, progress?: DatasetProgress): Promise<Uint8Array> {
  const line = progress ?? new DatasetProgress(file);
  const bytes = await readChunks(file, line);
  if (!progress) line.end();
  return bytes;
}

async function readChunks(file: string, progress: DatasetProgress): Promise<Uint8Array> {
  try {
    const handle = await open(file);
    try {
      const { size } = await handle.stat();
      const bytes = new Uint8Array(size);
      let done = 0;
      progress.read(0, size);
      while (done < size) {
        const { bytesRead } = await handle.read(bytes, done, Math.min(READ_CHUNK, size - done), done);
        if (bytesRead === 0) break; // the file shrank while read
        done += bytesRead;
        progress.read(done, size);
      }
      return done === size ? bytes : bytes.subarray(0, done);
    } finally {
      await handle.close();
    }
  } catch {
    throw new UsageError(`cannot read the dataset ${file}`);
  }
}

/** Read and validate a dataset file, with its progress line. */
export async function readDatasetFile(file: string, requireOutput: boolean): Promise<DatasetRecord[]> {
  const progress = new DatasetProgress(file);
  const { records } = parseDataset(await readDatasetBytes(file, progress), path.basename(file), {
    requireOutput,
    onProgress: progress.parsed,
  });
  progress.end();
  return records;
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
