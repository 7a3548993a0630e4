/**
 * LoRA adapters in the Hugging Face PEFT format: `adapter_config.json` and
 * `adapter_model.safetensors` with keys
 * `base_model.model.model.layers.<i>.<self_attn|mlp>.<proj>.lora_A.weight` `[r, in]` and
 * `….lora_B.weight` `[out, r]`. Written as F32; read from F32, F16 or BF16, and validated
 * against the model the adapter is meant for.
 */
import type { LoraSet } from '../model/lora.ts';
import { ModelFormatError } from '../errors.ts';
import { GGUF_ADAPTER_FILE, ggufLoraAdapter } from './gguf.ts';
import type { LlamaConfig } from '../model/config.ts';
import { loraConfigIssue, validateLoraConfig, type LoraConfig } from '../model/lora.ts';
import { readSafetensorsHeader, readTensorF32, writeSafetensors, type SafetensorsTensor } from '../model/safetensors.ts';
import { projectionShapes } from '../model/size.ts';
import { readJsonFile } from '../model/loader.ts';
import type { FileSource } from '../model/source.ts';
import { PROJECTIONS, type Projection } from '../model/weights.ts';
import { describeJsonValue, isRecord } from '../util/json.ts';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

/**
 * The files of an adapter folder: PEFT's two, and `adapter.gguf` (the same adapter for llama.cpp
 * and Ollama) when the model's config was given.
 */
export interface PeftAdapterFiles {
  'adapter_config.json': string;
  'adapter_model.safetensors': Uint8Array;
  'adapter.gguf'?: Uint8Array;
}

/** An adapter read back: its parameters, hyper-parameters and `base_model_name_or_path`. */
export interface PeftAdapter {
  lora: LoraSet;
  config: LoraConfig;
  baseModel: string | null;
}

/** The submodule of a decoder layer that holds each projection. */
const BLOCK: Record<Projection, 'self_attn' | 'mlp'> = {
  q_proj: 'self_attn',
  k_proj: 'self_attn',
  v_proj: 'self_attn',
  o_proj: 'self_attn',
  gate_proj: 'mlp',
  up_proj: 'mlp',
  down_proj: 'mlp',
};

/** The prefix PEFT puts before the model's own module names (PeftModel → LlamaForCausalLM). */
const PEFT_PREFIX = 'base_model.model.';

/** `base_model.model.model.layers.<layer>.<block>.<proj>.lora_<A|B>.weight` */
export function peftTensorName(layer: number, proj: Projection, factor: 'A' | 'B'): string {
  return `${PEFT_PREFIX}model.layers.${layer}.${BLOCK[proj]}.${proj}.lora_${factor}.weight`;
}

/** Layer index, block, module and factor of a well-formed key (the module may still be unknown). */
const KEY_PATTERN = /^base_model\.model\.model\.layers\.(0|[1-9]\d*)\.(self_attn|mlp)\.([A-Za-z0-9_]+)\.lora_(A|B)\.weight$/;

/* ------------------------------------------------------------------------------------ */
/* Writing                                                                              */
/* ------------------------------------------------------------------------------------ */

/**
 * The files of a PEFT adapter for `lora`. `adapter_config.json` holds exactly `peft_type`,
 * `task_type`, `r`, `lora_alpha`, `lora_dropout`, `target_modules` (in the config's order),
 * `bias`, `base_model_name_or_path`, `fan_in_fan_out`, `inference_mode` and
 * `modules_to_save`; the safetensors file holds A then B of every targeted projection,
 * layer by layer in `PROJECTIONS` order, as F32. With `meta.model`, also `adapter.gguf`
 * (`ggufLoraAdapter`).
 *
 * @throws NlftError for an invalid config (see `validateLoraConfig`)
 * @throws RangeError when `lora` does not hold exactly the config's targets in every layer,
 *   with rank `r`, scale alpha / r and whole rows
 */
export function peftAdapterFiles(lora: LoraSet, c: LoraConfig, meta: { baseModel: string; model?: LlamaConfig }): PeftAdapterFiles {
  validateLoraConfig(c);
  const tensors: SafetensorsTensor[] = [];
  lora.forEach((layer, i) => {
    for (const p of PROJECTIONS) {
      const f = layer[p];
      if (!c.targets.includes(p)) {
        if (f !== undefined) throw new RangeError(`peftAdapterFiles: layer ${i} has ${p}, which is not in the targets`);
        continue;
      }
      if (f === undefined) throw new RangeError(`peftAdapterFiles: layer ${i} lacks ${p}`);
      const where = `peftAdapterFiles: layer ${i} ${p}`;
      if (f.r !== c.r) throw new RangeError(`${where}: rank ${f.r}, config says ${c.r}`);
      if (Math.abs(f.scale - c.alpha / c.r) > 1e-6 * (c.alpha / c.r)) {
        throw new RangeError(`${where}: scale ${f.scale}, config says alpha / r = ${c.alpha / c.r}`);
      }
      if (f.A.length % c.r !== 0 || f.B.length % c.r !== 0) {
        throw new RangeError(`${where}: A (${f.A.length} values) and B (${f.B.length}) must be whole rows/columns of rank ${c.r}`);
      }
      tensors.push({ name: peftTensorName(i, p, 'A'), dtype: 'F32', shape: [c.r, f.A.length / c.r], data: f.A });
      tensors.push({ name: peftTensorName(i, p, 'B'), dtype: 'F32', shape: [f.B.length / c.r, c.r], data: f.B });
    }
  });
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r: c.r,
    lora_alpha: c.alpha,
    lora_dropout: c.dropout,
    target_modules: [...c.targets],
    bias: 'none',
    base_model_name_or_path: meta.baseModel,
    fan_in_fan_out: false,
    inference_mode: true,
    modules_to_save: null,
  };
  return {
    [ADAPTER_CONFIG_FILE]: `${JSON.stringify(config, null, 2)}\n`,
    [ADAPTER_WEIGHTS_FILE]: writeSafetensors(tensors, { format: 'pt' }),
    ...(meta.model === undefined ? {} : { [GGUF_ADAPTER_FILE]: ggufLoraAdapter(lora, c, meta.model) }),
  };
}

/* ------------------------------------------------------------------------------------ */
/* Reading                                                                              */
/* ------------------------------------------------------------------------------------ */

/** The `adapter_config.json` name of each `LoraConfig` field. */
const PEFT_FIELD: Record<keyof LoraConfig, string> = {
  r: 'r',
  alpha: 'lora_alpha',
  dropout: 'lora_dropout',
  targets: 'target_modules',
};

/**
 * Reads and validates a PEFT LoRA adapter for a model of `modelConfig`: the config first,
 * then every tensor's name and shape (before any tensor data is read), then the data,
 * converted to f32.
 *
 * @throws ModelFormatError naming `adapter_config.json` and the field, or
 *   `adapter_model.safetensors` and the tensor, of anything missing, malformed, unexpected
 *   or unsupported
 */
export async function readPeftAdapter(source: FileSource, modelConfig: LlamaConfig): Promise<PeftAdapter> {
  const { config, baseModel } = parseAdapterConfig(await readJsonFile(source, ADAPTER_CONFIG_FILE));
  if ((await source.size(ADAPTER_WEIGHTS_FILE)) === null && (await source.size('adapter_model.bin')) !== null) {
    throw new ModelFormatError(
      ADAPTER_WEIGHTS_FILE,
      undefined,
      `not found in ${source.label}; adapter_model.bin (a pickle) is not supported, save the adapter with safe_serialization`,
    );
  }
  const header = await readSafetensorsHeader(source, ADAPTER_WEIGHTS_FILE);
  const shapes = projectionShapes(modelConfig);
  const expectedShape = (p: Projection, factor: 'A' | 'B'): number[] =>
    factor === 'A' ? [config.r, shapes[p][1]] : [shapes[p][0], config.r];

  for (const [key, info] of header.tensors) {
    const { proj, factor } = parseKey(key, modelConfig, config.targets);
    const want = expectedShape(proj, factor);
    if (info.shape.length !== 2 || info.shape[0] !== want[0] || info.shape[1] !== want[1]) {
      throw new ModelFormatError(
        ADAPTER_WEIGHTS_FILE,
        key,
        `expected shape ${formatShape(want)} (r ${config.r}), found ${formatShape(info.shape)}`,
      );
    }
  }
  const targets = PROJECTIONS.filter((p) => config.targets.includes(p));
  for (let layer = 0; layer < modelConfig.numLayers; layer++) {
    for (const p of targets) {
      for (const factor of ['A', 'B'] as const) {
        const name = peftTensorName(layer, p, factor);
        if (!header.tensors.has(name)) {
          throw new ModelFormatError(
            ADAPTER_WEIGHTS_FILE,
            name,
            `missing; expected shape ${formatShape(expectedShape(p, factor))} since target_modules lists ${p}`,
          );
        }
      }
    }
  }
  const lora: LoraSet = [];
  for (let layer = 0; layer < modelConfig.numLayers; layer++) {
    const factors: LoraSet[number] = {};
    for (const p of targets) {
      const A = await readTensorF32(source, ADAPTER_WEIGHTS_FILE, header, peftTensorName(layer, p, 'A'));
      const B = await readTensorF32(source, ADAPTER_WEIGHTS_FILE, header, peftTensorName(layer, p, 'B'));
      factors[p] = { A, B, r: config.r, scale: config.alpha / config.r };
    }
    lora.push(factors);
  }
  return { lora, config, baseModel };
}

/** Projection and factor of a tensor key, or the error saying why the tensor does not belong. */
function parseKey(key: string, modelConfig: LlamaConfig, targets: Projection[]): { proj: Projection; factor: 'A' | 'B' } {
  const fail = (detail: string): never => {
    throw new ModelFormatError(ADAPTER_WEIGHTS_FILE, key, detail);
  };
  if (!key.startsWith(PEFT_PREFIX)) {
    return fail(`unexpected tensor; PEFT always writes keys starting with "${PEFT_PREFIX}", e.g. ${peftTensorName(0, targets[0], 'A')}`);
  }
  const m = KEY_PATTERN.exec(key);
  if (m === null) {
    return fail('unexpected tensor; expected base_model.model.model.layers.<i>.<self_attn|mlp>.<module>.lora_A.weight or .lora_B.weight');
  }
  const [, layerText, block, module, factor] = m;
  const layer = Number(layerText);
  if (layer >= modelConfig.numLayers) {
    return fail(`unexpected tensor: layer ${layer}, but the model has ${modelConfig.numLayers} layers (num_hidden_layers)`);
  }
  const proj = PROJECTIONS.find((p) => p === module);
  if (proj === undefined || BLOCK[proj] !== block) {
    return fail(`unexpected tensor: ${block}.${module} is not a LoRA-targetable projection of a Llama layer`);
  }
  if (!targets.includes(proj)) return fail(`unexpected tensor: ${module} is not in target_modules (${targets.join(', ')})`);
  return { proj, factor: factor as 'A' | 'B' };
}

/** Validates a parsed `adapter_config.json` and converts it to a `LoraConfig`. */
function parseAdapterConfig(json: unknown): { config: LoraConfig; baseModel: string | null } {
  const fail = (field: string | undefined, detail: string): never => {
    throw new ModelFormatError(ADAPTER_CONFIG_FILE, field, detail);
  };
  if (!isRecord(json)) return fail(undefined, `expected a JSON object, found ${describeJsonValue(json)}`);
  if (json.peft_type !== 'LORA')
    fail('peft_type', `expected "LORA", found ${describeJsonValue(json.peft_type)}; only LoRA adapters are supported`);
  if (json.task_type != null && json.task_type !== 'CAUSAL_LM')
    fail('task_type', `expected "CAUSAL_LM", found ${describeJsonValue(json.task_type)}`);
  const number = (field: string): number => {
    const v = json[field];
    return typeof v === 'number' ? v : fail(field, `expected a number, found ${describeJsonValue(v)}`);
  };
  const targets = json.target_modules;
  if (!Array.isArray(targets)) {
    fail('target_modules', `expected a list of module names (a regular expression is not supported), found ${describeJsonValue(targets)}`);
  }
  const config: LoraConfig = {
    r: number('r'),
    alpha: number('lora_alpha'),
    dropout: json.lora_dropout === undefined ? 0 : number('lora_dropout'),
    targets: targets as Projection[],
  };
  const issue = loraConfigIssue(config);
  if (issue !== null) fail(PEFT_FIELD[issue.field], issue.detail);

  if ((json.fan_in_fan_out ?? false) !== false)
    fail('fan_in_fan_out', `expected false (Llama's projections are nn.Linear), found ${describeJsonValue(json.fan_in_fan_out)}`);
  if ((json.bias ?? 'none') !== 'none')
    fail('bias', `expected "none", found ${describeJsonValue(json.bias)}; LoRA bias terms are not supported`);
  const unsupported: Array<[string, string, boolean]> = [
    ['use_rslora', 'rank-stabilized LoRA', json.use_rslora === true],
    ['use_dora', 'DoRA', json.use_dora === true],
    ['rank_pattern', 'per-module ranks', isRecord(json.rank_pattern) && Object.keys(json.rank_pattern).length > 0],
    ['alpha_pattern', 'per-module alphas', isRecord(json.alpha_pattern) && Object.keys(json.alpha_pattern).length > 0],
    ['layers_to_transform', 'adapting only some layers', json.layers_to_transform != null],
    ['modules_to_save', 'fully trained extra modules', Array.isArray(json.modules_to_save) && json.modules_to_save.length > 0],
  ];
  for (const [field, what, present] of unsupported) {
    if (present) fail(field, `not supported: ${what} (${field}: ${describeJsonValue(json[field])})`);
  }
  const base = json.base_model_name_or_path ?? null;
  if (base !== null && typeof base !== 'string')
    fail('base_model_name_or_path', `expected a string or null, found ${describeJsonValue(base)}`);
  return { config, baseModel: base as string | null };
}

/** `[64, 128]` */
function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
