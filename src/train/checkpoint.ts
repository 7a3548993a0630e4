/**
 * Checkpoint files: `checkpoint.safetensors` holds the flat LoRA parameters and the AdamW moments
 * (F32, shape [n]); its metadata holds the run and LoRA configurations and the step, as JSON. Reading
 * validates both and names the file and field at fault; a checkpoint of the previous version (its
 * training config with a `dropout`) reads with that rate as the LoRA dropout; one written before
 * packing (no `packing` in its training config) trained one pass per record and continues so.
 *
 * The metadata's `crc32` is the CRC-32 of the three tensors' bytes and the other metadata values: a
 * file cut short or changed anywhere is refused rather than taken for a good one. (Checkpoints
 * written before it existed have none and read as before; a field of another name is refused.)
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

/** CRC-32 (IEEE 802.3, reflected, as zlib's) lookup table. */
const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

/** CRC-32 of the checkpoint's tensors (their f32 bytes) and its other metadata values, as 8 hex digits. */
function checkpointCrc(tensors: readonly Float32Array[], meta: readonly string[]): string {
  let c = 0xffffffff;
  const add = (bytes: Uint8Array) => {
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  };
  for (const t of tensors) add(new Uint8Array(t.buffer, t.byteOffset, t.byteLength));
  add(new TextEncoder().encode(meta.join('\n')));
  return ((c ^ 0xffffffff) >>> 0).toString(16).padStart(8, '0');
}

/** The checkpoint as a safetensors file, with its CRC-32 in the metadata. */
export function checkpointBytes(ck: Checkpoint, lora: LoraConfig): Uint8Array {
  const n = ck.params.length;
  const meta = { format: 'nlft-checkpoint', config: JSON.stringify(ck.config), lora: JSON.stringify(lora), step: String(ck.state.step) };
  return writeSafetensors(
    [
      { name: 'lora.params', dtype: 'F32', shape: [n], data: ck.params },
      { name: 'adamw.m', dtype: 'F32', shape: [n], data: ck.m },
      { name: 'adamw.v', dtype: 'F32', shape: [n], data: ck.v },
    ],
    { ...meta, crc32: checkpointCrc([ck.params, ck.m, ck.v], [meta.config, meta.lora, meta.step]) },
  );
}

/**
 * Reads a checkpoint file from `source`.
 *
 * @throws ModelFormatError naming the file and field: not a checkpoint, a config that does not
 *   validate, or (its CRC-32 not matching) a file cut short or changed
 */
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
  config.packing ??= false;
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
  // Only a file of the version before the checksum (exactly these four fields) reads without one.
  const unknown = Object.keys(meta).filter((k) => !['format', 'config', 'lora', 'step', 'crc32'].includes(k));
  if (unknown.length)
    throw new ModelFormatError(
      CHECKPOINT_FILE,
      `__metadata__.${unknown[0]}`,
      'unknown field; expected format, config, lora, step and crc32',
    );
  if (meta.crc32 !== undefined) {
    const crc = checkpointCrc([params, m, v], [meta.config ?? '', meta.lora ?? '', meta.step ?? '']);
    if (crc !== meta.crc32)
      throw new ModelFormatError(
        CHECKPOINT_FILE,
        '__metadata__.crc32',
        `expected ${crc} (the CRC-32 of its contents), found ${JSON.stringify(meta.crc32)}: the file is damaged (cut short or changed); resume from an earlier copy or start again`,
      );
  }
  return { checkpoint: { config: config as unknown as TrainConfig, state: { step }, params, m, v }, lora: lora as unknown as LoraConfig };
}
