import { rm } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { LoraSet } from '../../src/model/lora.ts';
import { ModelFormatError, NlftError } from '../../src/errors.ts';
import { peftAdapterFiles, peftTensorName, readPeftAdapter, type PeftAdapterFiles } from '../../src/export/peft.ts';
import { tinyLlamaConfig } from '../../src/model/demo.ts';
import { initLora, type LoraConfig } from '../../src/model/lora.ts';
import {
  f16BitsToF32,
  f32ToF16Bits,
  parseSafetensorsHeader,
  writeSafetensors,
  type SafetensorsTensor,
} from '../../src/model/safetensors.ts';
import type { FileSource } from '../../src/model/source.ts';
import { PROJECTIONS } from '../../src/model/weights.ts';
import { writePeftAdapter } from '../../src/node/adapter-files.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { Rng } from '../../src/util/rng.ts';
import { makeTmpDir, MICRO_SHAPE } from '../fixtures/tiny-llama.ts';

/** hidden 16, ffn 24, 2 layers, 4 heads of 4 with 2 KV heads: q/o [16, 16], k/v [8, 16], gate/up [24, 16], down [16, 24]. */
const MODEL = tinyLlamaConfig({
  seed: 0,
  ...MICRO_SHAPE,
});
const ALL: LoraConfig = {
  r: 4,
  alpha: 8,
  dropout: 0.1,
  targets: ['q_proj', 'v_proj', 'k_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
};
const MLP: LoraConfig = { r: 8, alpha: 16, dropout: 0.05, targets: ['gate_proj', 'up_proj', 'down_proj'] };
const CFG = 'adapter_config.json';
const ST = 'adapter_model.safetensors';

/** In-memory FileSource. */
class MemorySource implements FileSource {
  readonly label = 'memory';
  constructor(private readonly files: Record<string, Uint8Array | string>) {}
  private bytes(name: string): Uint8Array {
    const f = this.files[name];
    if (f === undefined) throw new ModelFormatError(name, undefined, 'not found in memory');
    return typeof f === 'string' ? new TextEncoder().encode(f) : f;
  }
  async size(name: string): Promise<number | null> {
    return this.files[name] === undefined ? null : this.bytes(name).length;
  }
  async readRange(name: string, start: number, end: number): Promise<Uint8Array> {
    const b = this.bytes(name);
    if (end > b.length) throw new Error(`read past the end of ${name}`);
    return b.slice(start, end);
  }
  async read(name: string): Promise<Uint8Array> {
    return this.bytes(name);
  }
}

/** LoRA of `c` with A and B both random (B nonzero, unlike a fresh init). */
function randomLora(c: LoraConfig, seed: number): LoraSet {
  const lora = initLora(MODEL, c, seed);
  const rng = new Rng(seed + 1000);
  for (const layer of lora) for (const f of Object.values(layer)) f!.B.forEach((_, i, B) => (B[i] = rng.normal() * 0.1));
  return lora;
}

/** The adapter's tensors as `peftAdapterFiles` writes them, for tests to alter. */
function tensorsOf(lora: LoraSet, c: LoraConfig, dtype: SafetensorsTensor['dtype'] = 'F32'): SafetensorsTensor[] {
  return lora.flatMap((layer, i) =>
    PROJECTIONS.filter((p) => layer[p]).flatMap((p) => [
      { name: peftTensorName(i, p, 'A'), dtype, shape: [c.r, layer[p]!.A.length / c.r], data: layer[p]!.A },
      { name: peftTensorName(i, p, 'B'), dtype, shape: [layer[p]!.B.length / c.r, c.r], data: layer[p]!.B },
    ]),
  );
}

/** The error a promise rejects with. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

/** The bits of every element, so that comparisons are exact (also for -0 and NaN). */
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe('peftAdapterFiles', () => {
  it('writes adapter_config.json with exactly the PEFT fields', () => {
    const files = peftAdapterFiles(initLora(MODEL, MLP, 1), MLP, { baseModel: 'HuggingFaceTB/SmolLM2-135M' });
    const text = files['adapter_config.json'];
    const json = JSON.parse(text);
    expect(json).toEqual({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 8,
      lora_alpha: 16,
      lora_dropout: 0.05,
      target_modules: ['gate_proj', 'up_proj', 'down_proj'],
      bias: 'none',
      base_model_name_or_path: 'HuggingFaceTB/SmolLM2-135M',
      fan_in_fan_out: false,
      inference_mode: true,
      modules_to_save: null,
    });
    expect(Object.keys(json)).toEqual([
      'peft_type',
      'task_type',
      'r',
      'lora_alpha',
      'lora_dropout',
      'target_modules',
      'bias',
      'base_model_name_or_path',
      'fan_in_fan_out',
      'inference_mode',
      'modules_to_save',
    ]);
    expect(text.endsWith('}\n')).toBe(true);
  });

  it('names and shapes the tensors as PEFT does, F32, layer by layer in module order', async () => {
    const bytes = peftAdapterFiles(initLora(MODEL, ALL, 1), ALL, { baseModel: 'tiny' })['adapter_model.safetensors'];
    const header = await parseSafetensorsHeader(bytes, bytes.length, ST);
    const shapes = Object.fromEntries([...header.tensors].map(([k, v]) => [k, v.shape]));
    expect(header.tensors.size).toBe(2 * 7 * 2);
    expect([...header.tensors.values()].every((t) => t.dtype === 'F32')).toBe(true);
    expect(header.metadata).toEqual({ format: 'pt' });
    expect(shapes['base_model.model.model.layers.0.mlp.down_proj.lora_A.weight']).toEqual([4, 24]);
    expect(shapes['base_model.model.model.layers.0.mlp.down_proj.lora_B.weight']).toEqual([16, 4]);
    expect(shapes['base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight']).toEqual([4, 16]);
    expect(shapes['base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight']).toEqual([24, 4]);
    expect(shapes['base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight']).toEqual([4, 16]);
    expect(shapes['base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight']).toEqual([8, 4]);
    expect(shapes['base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight']).toEqual([16, 4]);
    expect([...header.tensors.keys()].slice(0, 4)).toEqual([
      'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
      'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
      'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight',
      'base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight',
    ]);
    expect([...header.tensors.keys()].at(-1)).toBe('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight');
  });

  it('refuses an invalid config, and LoRA that does not match the config', () => {
    const lora = initLora(MODEL, MLP, 1);
    expect(() => peftAdapterFiles(lora, { ...MLP, r: 6 }, { baseModel: 'x' })).toThrow(NlftError);
    expect(() => peftAdapterFiles(lora, { ...MLP, r: 6 }, { baseModel: 'x' })).toThrow(
      'LoRA config (r): expected a positive multiple of 4 (the GPU kernels need it), found 6',
    );
    expect(() => peftAdapterFiles(lora, { ...MLP, targets: ['gate_proj', 'up_proj'] }, { baseModel: 'x' })).toThrow(
      'peftAdapterFiles: layer 0 has down_proj, which is not in the targets',
    );
    expect(() => peftAdapterFiles(lora, { ...MLP, targets: ['q_proj', 'gate_proj', 'up_proj', 'down_proj'] }, { baseModel: 'x' })).toThrow(
      'peftAdapterFiles: layer 0 lacks q_proj',
    );
    expect(() => peftAdapterFiles(lora, { ...MLP, alpha: 8 }, { baseModel: 'x' })).toThrow(
      'peftAdapterFiles: layer 0 gate_proj: scale 2, config says alpha / r = 1',
    );
    expect(() => peftAdapterFiles(lora, { ...MLP, r: 4, alpha: 8 }, { baseModel: 'x' })).toThrow(
      'peftAdapterFiles: layer 0 gate_proj: rank 8, config says 4',
    );
  });
});

describe('readPeftAdapter', () => {
  let files: PeftAdapterFiles;
  let lora: LoraSet;
  beforeAll(() => {
    lora = randomLora(ALL, 9);
    files = peftAdapterFiles(lora, ALL, { baseModel: 'org/tiny' });
  });
  /** Reads the adapter with some files replaced (undefined removes one). */
  const read = (changes: Partial<Record<string, Uint8Array | string | undefined>> = {}) => {
    const all: Record<string, Uint8Array | string | undefined> = { ...files, ...changes };
    const present = Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined)) as Record<string, Uint8Array | string>;
    return readPeftAdapter(new MemorySource(present), MODEL);
  };
  /** adapter_config.json with some fields changed (undefined removes one). */
  const configWith = (changes: Record<string, unknown>) => {
    const json = { ...JSON.parse(files[CFG]), ...changes };
    for (const [k, v] of Object.entries(changes)) if (v === undefined) delete json[k];
    return JSON.stringify(json);
  };
  /** The message readPeftAdapter fails with, checking it is a ModelFormatError. */
  const failure = async (changes: Partial<Record<string, Uint8Array | string | undefined>>) => {
    const e = await rejection(read(changes));
    expect(e).toBeInstanceOf(ModelFormatError);
    return e.message;
  };

  it('round-trips every element bit-exactly, with the config and base model', async () => {
    const back = await read();
    expect(back.config).toEqual(ALL);
    expect(back.baseModel).toBe('org/tiny');
    expect(back.lora).toHaveLength(2);
    for (let i = 0; i < 2; i++) {
      expect(Object.keys(back.lora[i])).toEqual([...PROJECTIONS]);
      for (const p of PROJECTIONS) {
        const [got, want] = [back.lora[i][p]!, lora[i][p]!];
        expect(got.r).toBe(4);
        expect(got.scale).toBe(2);
        expect(bits(got.A)).toEqual(bits(want.A));
        expect(bits(got.B)).toEqual(bits(want.B));
        expect(got.B.some((v) => v !== 0)).toBe(true);
      }
    }
  });

  it('round-trips through a real folder (writePeftAdapter + FolderSource)', async () => {
    const dir = path.join(await makeTmpDir('peft'), 'nested', 'adapter');
    try {
      const mlp = randomLora(MLP, 3);
      await writePeftAdapter(dir, peftAdapterFiles(mlp, MLP, { baseModel: 'm' }));
      const back = await readPeftAdapter(new FolderSource(dir), MODEL);
      expect(back.config).toEqual(MLP);
      for (let i = 0; i < 2; i++) {
        expect(Object.keys(back.lora[i])).toEqual(['gate_proj', 'up_proj', 'down_proj']);
        for (const p of MLP.targets) {
          expect(bits(back.lora[i][p]!.A)).toEqual(bits(mlp[i][p]!.A));
          expect(bits(back.lora[i][p]!.B)).toEqual(bits(mlp[i][p]!.B));
        }
      }
      expect(await rejection(readPeftAdapter(new FolderSource(path.join(dir, 'nope')), MODEL))).toHaveProperty(
        'message',
        `adapter_config.json: not found in ${path.join(dir, 'nope')}`,
      );
    } finally {
      await rm(path.dirname(path.dirname(dir)), { recursive: true, force: true });
    }
  });

  it('reads F16 and BF16 tensors as f32, and configs as other PEFT versions write them', async () => {
    const f16 = await read({ [ST]: writeSafetensors(tensorsOf(lora, ALL, 'F16')) });
    const a = lora[1].up_proj!.A;
    expect(Array.from(f16.lora[1].up_proj!.A)).toEqual(Array.from(a, (v) => f16BitsToF32(f32ToF16Bits(v))));
    const bf16 = await read({ [ST]: writeSafetensors(tensorsOf(lora, ALL, 'BF16')) });
    expect(bf16.lora[0].q_proj!.B.length).toBe(16 * 4);
    // Fields newer PEFT versions add, at their defaults, and optional fields left out.
    const modern = configWith({
      use_rslora: false,
      use_dora: false,
      rank_pattern: {},
      alpha_pattern: {},
      layers_to_transform: null,
      modules_to_save: null,
      init_lora_weights: true,
      revision: null,
      lora_dropout: undefined,
      fan_in_fan_out: undefined,
      bias: undefined,
      base_model_name_or_path: undefined,
      task_type: null,
    });
    const back = await read({ [CFG]: modern });
    expect(back.config).toEqual({ ...ALL, dropout: 0 });
    expect(back.baseModel).toBeNull();
  });

  it('refuses a bad adapter_config.json with a message naming the field', async () => {
    const cases: Array<[Record<string, unknown> | string, string]> = [
      [
        { peft_type: 'PREFIX_TUNING' },
        'adapter_config.json (peft_type): expected "LORA", found "PREFIX_TUNING"; only LoRA adapters are supported',
      ],
      [{ task_type: 'SEQ_CLS' }, 'adapter_config.json (task_type): expected "CAUSAL_LM", found "SEQ_CLS"'],
      [{ r: '4' }, 'adapter_config.json (r): expected a number, found "4"'],
      [{ r: 6 }, 'adapter_config.json (r): expected a positive multiple of 4 (the GPU kernels need it), found 6'],
      [{ lora_alpha: undefined }, 'adapter_config.json (lora_alpha): expected a number, found nothing'],
      [{ lora_alpha: -1 }, 'adapter_config.json (lora_alpha): expected a positive number, found -1'],
      [{ lora_dropout: 1 }, 'adapter_config.json (lora_dropout): expected a number in [0, 1), found 1'],
      [
        { target_modules: 'q_proj|v_proj' },
        'adapter_config.json (target_modules): expected a list of module names (a regular expression is not supported), found "q_proj|v_proj"',
      ],
      [
        { target_modules: ['q_proj', 'lm_head'] },
        'adapter_config.json (target_modules): unknown projection "lm_head"; valid names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj',
      ],
      [{ fan_in_fan_out: true }, "adapter_config.json (fan_in_fan_out): expected false (Llama's projections are nn.Linear), found true"],
      [{ bias: 'all' }, 'adapter_config.json (bias): expected "none", found "all"; LoRA bias terms are not supported'],
      [{ use_rslora: true }, 'adapter_config.json (use_rslora): not supported: rank-stabilized LoRA (use_rslora: true)'],
      [{ use_dora: true }, 'adapter_config.json (use_dora): not supported: DoRA (use_dora: true)'],
      [{ rank_pattern: { q_proj: 8 } }, 'adapter_config.json (rank_pattern): not supported: per-module ranks (rank_pattern: {"q_proj":8})'],
      [
        { layers_to_transform: [0] },
        'adapter_config.json (layers_to_transform): not supported: adapting only some layers (layers_to_transform: [0])',
      ],
      [
        { modules_to_save: ['lm_head'] },
        'adapter_config.json (modules_to_save): not supported: fully trained extra modules (modules_to_save: ["lm_head"])',
      ],
      [{ base_model_name_or_path: 3 }, 'adapter_config.json (base_model_name_or_path): expected a string or null, found 3'],
      ['[1, 2]', 'adapter_config.json: expected a JSON object, found [1,2]'],
      ['{"peft_type": "LORA",', 'adapter_config.json: not valid JSON: '],
    ];
    for (const [change, message] of cases) {
      const text = typeof change === 'string' ? change : configWith(change);
      const got = await failure({ [CFG]: text });
      if (message.endsWith(': ')) expect(got.startsWith(message)).toBe(true);
      else expect(got).toBe(message);
    }
    expect(await failure({ [CFG]: undefined })).toBe('adapter_config.json: not found in memory');
  });

  it('refuses unknown, mis-shaped and missing tensors with messages naming the key', async () => {
    const tensors = tensorsOf(lora, ALL);
    const extra = (name: string, shape = [4, 16]): Uint8Array =>
      writeSafetensors([...tensors, { name, dtype: 'F32', shape, data: new Float32Array(shape[0] * shape[1]) }]);
    const cases: Array<[Uint8Array, string]> = [
      [
        extra('base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight'),
        'adapter_model.safetensors (base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight): unexpected tensor: layer 2, but the model has 2 layers (num_hidden_layers)',
      ],
      [
        extra('base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight'),
        'adapter_model.safetensors (base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight): unexpected ' +
          'tensor; expected base_model.model.model.layers.<i>.<self_attn|mlp>.<module>.lora_A.weight or .lora_B.weight',
      ],
      [
        extra('base_model.model.model.layers.0.self_attn.rotary_emb.lora_A.weight'),
        'adapter_model.safetensors (base_model.model.model.layers.0.self_attn.rotary_emb.lora_A.weight): ' +
          'unexpected tensor: self_attn.rotary_emb is not a LoRA-targetable projection of a Llama layer',
      ],
      [
        extra('base_model.model.model.layers.0.mlp.q_proj.lora_A.weight'),
        'adapter_model.safetensors (base_model.model.model.layers.0.mlp.q_proj.lora_A.weight): unexpected tensor: mlp.q_proj is not a LoRA-targetable projection of a Llama layer',
      ],
      [
        extra('model.layers.0.self_attn.q_proj.lora_A.weight'),
        'adapter_model.safetensors (model.layers.0.self_attn.q_proj.lora_A.weight): unexpected tensor; PEFT always writes ' +
          'keys starting with "base_model.model.", e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
      ],
      [
        writeSafetensors(
          tensors.map((t) => (t.name.endsWith('layers.1.mlp.up_proj.lora_B.weight') ? { ...t, shape: [4, 24], data: t.data } : t)),
        ),
        'adapter_model.safetensors (base_model.model.model.layers.1.mlp.up_proj.lora_B.weight): expected shape [24, 4] (r 4), found [4, 24]',
      ],
      [
        writeSafetensors(
          tensors.map((t) =>
            t.name.endsWith('layers.0.self_attn.v_proj.lora_A.weight') ? { ...t, shape: [4, 8], data: t.data.subarray(0, 32) } : t,
          ),
        ),
        'adapter_model.safetensors (base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight): expected shape [4, 16] (r 4), found [4, 8]',
      ],
      [
        writeSafetensors(tensors.filter((t) => t.name !== 'base_model.model.model.layers.1.mlp.down_proj.lora_B.weight')),
        'adapter_model.safetensors (base_model.model.model.layers.1.mlp.down_proj.lora_B.weight): missing; expected shape [16, 4] since target_modules lists down_proj',
      ],
    ];
    for (const [bytes, message] of cases) expect(await failure({ [ST]: bytes })).toBe(message);
    // A module not in target_modules
    expect(await failure({ [CFG]: configWith({ target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'] }) })).toBe(
      'adapter_model.safetensors (base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight): unexpected ' +
        'tensor: gate_proj is not in target_modules (q_proj, k_proj, v_proj, o_proj, up_proj, down_proj)',
    );
    // A rank that disagrees with the tensors
    expect(await failure({ [CFG]: configWith({ r: 8 }) })).toBe(
      'adapter_model.safetensors (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight): expected shape [8, 16] (r 8), found [4, 16]',
    );
  });

  it('refuses a missing, truncated or pickled weights file', async () => {
    const full = files[ST];
    const header = await parseSafetensorsHeader(full, full.length, ST);
    const dataSize = full.length - header.dataStart;
    expect(await failure({ [ST]: full.subarray(0, full.length - 4) })).toBe(
      `adapter_model.safetensors (base_model.model.model.layers.1.mlp.down_proj.lora_B.weight): data_offsets: expected ` +
        `[begin, end] with 0 <= begin <= end <= ${dataSize - 4} (the data size), found [${dataSize - 256},${dataSize}]`,
    );
    expect(await failure({ [ST]: full.subarray(0, 5) })).toBe(
      'adapter_model.safetensors (header): file is 5 bytes, shorter than the 8-byte header length',
    );
    expect(await failure({ [ST]: undefined })).toBe('adapter_model.safetensors: not found in memory');
    expect(await failure({ [ST]: undefined, 'adapter_model.bin': new Uint8Array(10) })).toBe(
      'adapter_model.safetensors: not found in memory; adapter_model.bin (a pickle) is not supported, save the adapter with safe_serialization',
    );
  });
});
