/** The real SmolLM2 tokenizer the app bundles (public/tokenizers/smollm2), for tests of tiny models in its vocabulary. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { ROOT } from './cli.ts';

/** Reads the bundled SmolLM2 `tokenizer.json` and `tokenizer_config.json`. */
export async function smollm2Tokenizer(): Promise<TextTokenizer> {
  const dir = path.join(ROOT, 'public', 'tokenizers', 'smollm2');
  const read = async (file: string) => JSON.parse(await readFile(path.join(dir, file), 'utf8'));
  return TextTokenizer.fromJson(await read('tokenizer.json'), await read('tokenizer_config.json'));
}
