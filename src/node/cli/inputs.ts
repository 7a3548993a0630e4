/** Inputs several commands share: a model folder with its tokenizer, and a dataset file. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseDataset, type DatasetRecord } from '../../data/dataset.ts';
import { TextTokenizer } from '../../data/tokenizer.ts';
import { ModelFormatError, UsageError } from '../../errors.ts';
import { loadModelFolder, type LoadedModel } from '../../model/loader.ts';
import { FolderSource } from '../fs-source.ts';

/** Load a model folder that must have a tokenizer (`purpose` says what needs it, for the message). */
export async function loadModelWithTokenizer(dir: string, purpose: string): Promise<{ model: LoadedModel; tok: TextTokenizer }> {
  const model = await loadModelFolder(new FolderSource(dir));
  if (!model.tokenizerJson) throw new ModelFormatError('tokenizer.json', undefined, `not found in ${dir}; ${purpose} needs the model's tokenizer`);
  return { model, tok: TextTokenizer.fromJson(model.tokenizerJson, model.tokenizerConfig ?? {}) };
}

/** Read and validate a dataset file. */
export async function readDatasetFile(file: string, requireOutput: boolean): Promise<DatasetRecord[]> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch {
    throw new UsageError(`cannot read the dataset ${file}`);
  }
  return parseDataset(bytes, path.basename(file), { requireOutput }).records;
}
