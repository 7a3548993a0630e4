/**
 * The worker's host (`workers/trainer-host.ts`) run in Node, with what the CLI uses: its kernel
 * tuning cache folder (so both run the same kernels), no file cache, the bundled demo tokenizer.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Engine } from '../../src/engine/engine.ts';
import { NO_FILE_CACHE } from '../../src/model/hub.ts';
import { createNodeEngine } from '../../src/node/engine.ts';
import { FileTuningCache } from '../../src/node/tuning-cache.ts';
import { TrainerHost } from '../../workers/trainer-host.ts';
import { CLI_CACHE_DIR, ROOT } from './cli.ts';

/** A TrainerHost on Dawn; `createEngine` defaults to a fresh Node engine per call. */
export function nodeTrainerHost(createEngine: () => Promise<Engine> = () => createNodeEngine()): TrainerHost {
  const tokenizerDir = path.join(ROOT, 'public', 'tokenizers', 'smollm2');
  return new TrainerHost({
    createEngine,
    tuningCache: async () => new FileTuningCache(CLI_CACHE_DIR),
    fileCache: async () => NO_FILE_CACHE,
    demoTokenizerFile: async (file) => JSON.parse(await readFile(path.join(tokenizerDir, file), 'utf8')),
    transfer: (value) => value,
    release: () => undefined,
    logBug: (e) => console.error(e),
  });
}
