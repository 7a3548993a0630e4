/** Writes a PEFT adapter's files into a local folder (Node). */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PeftAdapterFiles } from '../export/peft.ts';

/** Writes the adapter's files (`adapter_config.json`, `adapter_model.safetensors`, `adapter.gguf` when given) into `dir`, creating it when missing. */
export async function writePeftAdapter(dir: string, files: PeftAdapterFiles): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) if (content !== undefined) await writeFile(path.join(dir, name), content);
}
