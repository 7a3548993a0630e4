/**
 * Checkpoint files: `checkpoint.safetensors` holds the flat LoRA parameters and the AdamW moments
 * (F32, shape [n]); its metadata holds the run and LoRA configurations and the step, as JSON. Reading
 * validates both and names the file and field at fault; a checkpoint of the previous version (its
 * training config with a `dropout`) reads with that rate as the LoRA dropout.
 */
import { ModelFormatError } from '../errors.ts';
import { readSafetensorsHeader, readTensorF32, writeSafetensors } from '../model/safetensors.ts';
import type { FileSource } from '../model/source.ts';
import { isRecord } from '../util/json.ts';
import { loraConfigIssue, type LoraConfig } from '../model/lora.ts';
import type { Checkpoint, TrainConfig } from './trainer.ts';

export const CHECKPOINT_FILE = 'checkpoint.safetensors';

/** The checkpoint and the LoRA configuration its parameters were laid out for. */
export interface SavedCheckpoint {
  checkpoint: Checkpoint;
  lora: LoraConfig;
}

export function checkpointBytes(ck: Checkpoint, lora: LoraConfig): Uint8Array {
  const n = ck.params.length;
  return writeSafetensors(
    [
      { name: 'lora.params', dtype: 'F32', shape: [n], data: ck.params },
      { name: 'adamw.m', dtype: 'F32', shape: [n], data: ck.m },
      { name: 'adamw.v', dtype: 'F32', shape: [n], data: ck.v },
    ],
    { format: 'nlft-checkpoint', config: JSON.stringify(ck.config), lora: JSON.stringify(lora), step: String(ck.state.step) },
  );
}

export async function readCheckpoint(source: FileSource): Promise<SavedCheckpoint> {
  const header = await readSafetensorsHeader(source, CHECKPOINT_FILE);
  const meta = header.metadata;
  if (meta.format !== 'nlft-checkpoint')
    throw new ModelFormatError(
      CHECKPOINT_FILE,
      '__metadata__.format',
      `expected "nlft-checkpoint", found ${JSON.stringify(meta.format ?? null)}`,
    );
  const json = (field: 'config' | 'lora'): Record<string, unknown> => {
    let v: unknown;
    try {
      v = JSON.parse(meta[field] ?? '');
    } catch {
      throw new ModelFormatError(CHECKPOINT_FILE, `__metadata__.${field}`, 'is not valid JSON');
    }
    if (!isRecord(v)) throw new ModelFormatError(CHECKPOINT_FILE, `__metadata__.${field}`, 'expected a JSON object');
    return v;
  };
  const { dropout: oldDropout, ...config } = json('config');
  const lora = json('lora');
  // Checkpoints of the previous version kept the dropout rate in the training config too, and used
  // that one: it moves to the LoRA config, its one home now, so the run continues exactly.
  if (oldDropout !== undefined) lora.dropout = oldDropout;
  const issue = loraConfigIssue(lora as unknown as LoraConfig);
  if (issue) throw new ModelFormatError(CHECKPOINT_FILE, `__metadata__.lora.${issue.field}`, issue.detail);
  const step = Number(meta.step);
  if (!Number.isInteger(step) || step < 0)
    throw new ModelFormatError(CHECKPOINT_FILE, '__metadata__.step', `expected a step number, found ${JSON.stringify(meta.step ?? null)}`);
  const [params, m, v] = await Promise.all(
    ['lora.params', 'adamw.m', 'adamw.v'].map((name) => {
      if (!header.tensors.has(name)) throw new ModelFormatError(CHECKPOINT_FILE, name, 'missing');
      return readTensorF32(source, CHECKPOINT_FILE, header, name);
    }),
  );
  if (m.length !== params.length || v.length !== params.length)
    throw new ModelFormatError(CHECKPOINT_FILE, 'adamw.m', `expected ${params.length} values like lora.params`);
  return { checkpoint: { config: config as unknown as TrainConfig, state: { step }, params, m, v }, lora: lora as unknown as LoraConfig };
}
