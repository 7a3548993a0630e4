/**
 * LoRA hyper-parameters and parameters: `y = x Wᵀ + (alpha/r) · dropout(x) Aᵀ Bᵀ` on the
 * targeted projections of every layer, A `[r, in]`, B `[out, r]`, initialised as PEFT does.
 */
import { NlftError } from '../errors.ts';
import { describeJsonValue } from '../util/json.ts';
import { Rng } from '../util/rng.ts';
import type { LlamaConfig } from './config.ts';
import { projectionShapes } from './size.ts';
import { PROJECTIONS, type Projection } from './weights.ts';

/** LoRA factors of one projection: y += scale * (dropout(x) A^T) B^T, A (r,in), B (out,r). */
export interface LoraFactors {
  A: Float32Array;
  B: Float32Array;
  r: number;
  scale: number;
}
/** Per layer, the adapted projections. */
export type LoraSet = Array<Partial<Record<Projection, LoraFactors>>>;

/** LoRA hyper-parameters (PEFT's `r`, `lora_alpha`, `lora_dropout`, `target_modules`). */
export interface LoraConfig {
  /** Rank; a positive multiple of 4 (the GPU kernels need it). */
  r: number;
  /** The LoRA branch is scaled by alpha / r. */
  alpha: number;
  /** Dropout probability on the LoRA branch's input during training, in [0, 1). */
  dropout: number;
  /** The adapted projections, each once. */
  targets: Projection[];
}

/** alpha when none is given: the rank, so the LoRA branch's scale alpha / r is 1 whatever the rank. */
export function defaultAlpha(r: number): number {
  return r;
}

/** NLFT's defaults: rank 16, alpha 16 (`defaultAlpha`), dropout 0.05 on the MLP projections. */
export const DEFAULT_LORA: Readonly<LoraConfig> = Object.freeze({
  r: 16,
  alpha: defaultAlpha(16),
  dropout: 0.05,
  targets: Object.freeze(['gate_proj', 'up_proj', 'down_proj']) as Projection[],
});

/** What is wrong with one field of a `LoraConfig`. */
export interface LoraConfigIssue {
  field: keyof LoraConfig;
  detail: string;
}

/**
 * The first problem of a LoRA config, or null when it is valid. Hosts that read the config
 * from elsewhere (CLI options, `adapter_config.json`) map `field` to their own names.
 */
export function loraConfigIssue(c: LoraConfig): LoraConfigIssue | null {
  if (!Number.isSafeInteger(c.r) || c.r <= 0 || c.r % 4 !== 0) {
    return { field: 'r', detail: `expected a positive multiple of 4 (the GPU kernels need it), found ${shown(c.r)}` };
  }
  if (typeof c.alpha !== 'number' || !Number.isFinite(c.alpha) || c.alpha <= 0) {
    return { field: 'alpha', detail: `expected a positive number, found ${shown(c.alpha)}` };
  }
  if (typeof c.dropout !== 'number' || !(c.dropout >= 0 && c.dropout < 1)) {
    return { field: 'dropout', detail: `expected a number in [0, 1), found ${shown(c.dropout)}` };
  }
  const valid = PROJECTIONS.join(', ');
  if (!Array.isArray(c.targets) || c.targets.length === 0) {
    return { field: 'targets', detail: `expected a non-empty list of projections from ${valid}, found ${shown(c.targets)}` };
  }
  const seen = new Set<string>();
  for (const t of c.targets) {
    if (!(PROJECTIONS as readonly unknown[]).includes(t)) {
      return { field: 'targets', detail: `unknown projection ${shown(t)}; valid names: ${valid}` };
    }
    if (seen.has(t)) return { field: 'targets', detail: `"${t}" is listed twice` };
    seen.add(t);
  }
  return null;
}

/** A found value for messages: numbers as JavaScript prints them (NaN, Infinity), the rest as JSON. */
function shown(v: unknown): string {
  return typeof v === 'number' ? String(v) : describeJsonValue(v);
}

/**
 * Checks a LoRA config.
 *
 * @throws NlftError (`lora-config`) `LoRA config (<field>): <what was expected and found>`
 */
export function validateLoraConfig(c: LoraConfig): void {
  const issue = loraConfigIssue(c);
  if (issue !== null) throw new NlftError(`LoRA config (${issue.field}): ${issue.detail}`, 'lora-config');
}

/**
 * Fresh LoRA parameters as PEFT initialises them by default: A from torch's
 * `kaiming_uniform_(A, a=√5)`, i.e. U(−1/√in, 1/√in); B zeros (so the adapted model starts
 * equal to the base); scale alpha / r. Deterministic for a seed: one generator draws A's
 * values row-major, layer by layer, projections in `PROJECTIONS` order.
 *
 * @throws NlftError when the config is invalid (see `validateLoraConfig`)
 */
export function initLora(modelConfig: LlamaConfig, c: LoraConfig, seed: number): LoraSet {
  validateLoraConfig(c);
  const rng = new Rng(seed);
  const shapes = projectionShapes(modelConfig);
  const targets = PROJECTIONS.filter((p) => c.targets.includes(p));
  const lora: LoraSet = [];
  for (let layer = 0; layer < modelConfig.numLayers; layer++) {
    const factors: LoraSet[number] = {};
    for (const p of targets) {
      const [out, inFeatures] = shapes[p];
      const bound = 1 / Math.sqrt(inFeatures);
      const A = new Float32Array(c.r * inFeatures);
      for (let i = 0; i < A.length; i++) A[i] = rng.uniform(-bound, bound);
      factors[p] = { A, B: new Float32Array(out * c.r), r: c.r, scale: c.alpha / c.r };
    }
    lora.push(factors);
  }
  return lora;
}

/** Number of trainable LoRA parameters: r · (in + out) per targeted projection and layer. */
export function loraParameterCount(modelConfig: LlamaConfig, c: LoraConfig): number {
  const shapes = projectionShapes(modelConfig);
  const perLayer = c.targets.reduce((sum, p) => sum + c.r * (shapes[p][0] + shapes[p][1]), 0);
  return modelConfig.numLayers * perLayer;
}
