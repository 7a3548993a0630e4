/** Writes a PEFT adapter's files into a local folder (Node). */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { PeftAdapterFiles } from '../export/peft.ts';
import { writeFileAtomic } from './atomic-file.ts';

/**
 * Writes the adapter's files (`adapter_config.json`, `adapter_model.safetensors`, `adapter.gguf` when
 * given) into `dir`, creating it when missing; each file atomically (`writeFileAtomic`).
 */
export async function writePeftAdapter(dir: string, files: PeftAdapterFiles): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) if (content !== undefined) await writeFileAtomic(path.join(dir, name), content);
}
