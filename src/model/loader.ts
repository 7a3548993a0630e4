/**
 * Loads a Hugging Face Llama model folder from any `FileSource`: `config.json`, the weights
 * (`model.safetensors`, or `model.safetensors.index.json` and its shards) and, when present,
 * `tokenizer.json` and `tokenizer_config.json`. Everything is validated; errors name the
 * file and the field or tensor at fault.
 */
import { ModelFormatError } from '../errors.ts';
import { describeJsonValue } from '../util/json.ts';
import { parseLlamaConfig, type LlamaConfig } from './config.ts';
import { loadGgufModel } from './gguf-model.ts';
import { readSafetensorsHeader, readTensorF32, type SafetensorsHeader, type SafetensorsTensorInfo } from './safetensors.ts';
import type { FileSource } from './source.ts';
import { assembleWeights, hfTensorNames, type LlamaWeights, type TensorLookup } from './weights.ts';

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';
export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

/** A loaded model folder. */
export interface LoadedModel {
  config: LlamaConfig;
  weights: LlamaWeights;
  /** Parsed `tokenizer.json`, or null when the folder has none. */
  tokenizerJson: unknown | null;
  /** Parsed `tokenizer_config.json`, or null when the folder has none. */
  tokenizerConfig: unknown | null;
  /** The files that were read, in reading order. */
  files: string[];
}

export interface LoadModelOptions {
  /** Called with the tensor bytes read so far and in all: once with 0 before reading, then after each tensor. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/**
 * Loads and validates a Llama model folder, or the GGUF model file a source is
 * (`FileSource.ggufFile`: see `gguf-model.ts`). When both `model.safetensors` and an index
 * exist, the single file wins (as in `transformers`). Only headers and the tensors the
 * model needs are read from the weight files.
 *
 * @throws ModelFormatError naming the file and field/tensor of anything missing or malformed
 */
export async function loadModelFolder(source: FileSource, options: LoadModelOptions = {}): Promise<LoadedModel> {
  if (source.ggufFile !== undefined) return loadGgufModel(source, source.ggufFile, options);
  // The small files first, so that a bad one fails before any weights are read.
  const files = [CONFIG_FILE];
  const config = parseLlamaConfig(await readJsonFile(source, CONFIG_FILE), CONFIG_FILE);
  const tokenizerJson = await readOptionalJson(source, TOKENIZER_FILE, files);
  const tokenizerConfig = await readOptionalJson(source, TOKENIZER_CONFIG_FILE, files);
  const checkpoint = await openCheckpoint(source);
  files.push(...checkpoint.files);

  const { onProgress } = options;
  let total = 0;
  for (const spec of hfTensorNames(config)) {
    const found = checkpoint.locate(spec.name);
    if (found !== null) total += found.info.end - found.info.begin;
  }
  let done = 0;
  onProgress?.(0, total);
  const lookup = checkpointLookup(source, checkpoint, (bytes) => {
    done += bytes;
    onProgress?.(done, total);
  });
  const weights = await assembleWeights(config, lookup);
  return { config, weights, tokenizerJson, tokenizerConfig, files };
}

/** The weight files of a folder, with their validated headers. */
interface Checkpoint {
  /** The file named when a tensor is missing: the single weights file or the index. */
  source: string;
  /** Weight files read: `model.safetensors`, or the index then its shards. */
  files: string[];
  /** The file and header entry of a tensor, or null when the checkpoint lacks it. */
  locate(name: string): { file: string; header: SafetensorsHeader; info: SafetensorsTensorInfo } | null;
}

/** Finds the weight files and reads (only) their headers. */
async function openCheckpoint(source: FileSource): Promise<Checkpoint> {
  if ((await source.size(WEIGHTS_FILE)) !== null) {
    const header = await readSafetensorsHeader(source, WEIGHTS_FILE);
    return {
      source: WEIGHTS_FILE,
      files: [WEIGHTS_FILE],
      locate: (name) => {
        const info = header.tensors.get(name);
        return info === undefined ? null : { file: WEIGHTS_FILE, header, info };
      },
    };
  }
  if ((await source.size(WEIGHTS_INDEX_FILE)) === null) {
    throw new ModelFormatError(WEIGHTS_FILE, undefined, `not found in ${source.label} (nor ${WEIGHTS_INDEX_FILE})`);
  }
  const weightMap = parseWeightMap(await readJsonFile(source, WEIGHTS_INDEX_FILE));
  const headers = new Map<string, SafetensorsHeader>();
  for (const shard of new Set(weightMap.values())) {
    if ((await source.size(shard)) === null) {
      throw new ModelFormatError(shard, undefined, `not found in ${source.label} (listed in ${WEIGHTS_INDEX_FILE})`);
    }
    headers.set(shard, await readSafetensorsHeader(source, shard));
  }
  for (const [name, shard] of weightMap) {
    if (!headers.get(shard)!.tensors.has(name)) {
      throw new ModelFormatError(shard, name, `not in this file, though ${WEIGHTS_INDEX_FILE} maps it here`);
    }
  }
  return {
    source: WEIGHTS_INDEX_FILE,
    files: [WEIGHTS_INDEX_FILE, ...headers.keys()],
    locate: (name) => {
      const file = weightMap.get(name);
      if (file === undefined) return null;
      const header = headers.get(file)!;
      return { file, header, info: header.tensors.get(name)! };
    },
  };
}

/** Validates an index's `weight_map`: tensor name → shard file name in the same folder. */
function parseWeightMap(index: unknown): Map<string, string> {
  if (typeof index !== 'object' || index === null || Array.isArray(index)) {
    throw new ModelFormatError(WEIGHTS_INDEX_FILE, undefined, `expected a JSON object, found ${describeJsonValue(index)}`);
  }
  const map = (index as Record<string, unknown>).weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw new ModelFormatError(
      WEIGHTS_INDEX_FILE,
      'weight_map',
      `expected an object mapping tensor names to shard files, found ${describeJsonValue(map)}`,
    );
  }
  const result = new Map<string, string>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string' || !isPlainFileName(shard)) {
      throw new ModelFormatError(
        WEIGHTS_INDEX_FILE,
        `weight_map[${JSON.stringify(name)}]`,
        `expected a shard file name in the model folder, found ${describeJsonValue(shard)}`,
      );
    }
    result.set(name, shard);
  }
  return result;
}

/** A file name without directories (shards live beside the index). */
function isPlainFileName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !/[/\\]/.test(name);
}

/** A `TensorLookup` reading tensors of the checkpoint from `source`; `onRead` gets each tensor's byte size. */
function checkpointLookup(source: FileSource, checkpoint: Checkpoint, onRead: (bytes: number) => void): TensorLookup {
  return {
    source: checkpoint.source,
    find: (name) => {
      const found = checkpoint.locate(name);
      return found === null ? null : { file: found.file, shape: found.info.shape };
    },
    read: async (name) => {
      const found = checkpoint.locate(name);
      if (found === null) throw new ModelFormatError(checkpoint.source, name, 'missing');
      const data = await readTensorF32(source, found.file, found.header, name);
      onRead(found.info.end - found.info.begin);
      return data;
    },
  };
}

/** Reads `name` as UTF-8 JSON when the folder has it (appending it to `files`), else null. */
async function readOptionalJson(source: FileSource, name: string, files: string[]): Promise<unknown | null> {
  if ((await source.size(name)) === null) return null;
  files.push(name);
  return readJsonFile(source, name);
}

/** Reads and parses a UTF-8 JSON file; a missing file is the source's ModelFormatError. */
export async function readJsonFile(source: FileSource, name: string): Promise<unknown> {
  const bytes = await source.read(name);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ModelFormatError(name, undefined, 'not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelFormatError(name, undefined, `not valid JSON: ${(e as Error).message}`);
  }
}
