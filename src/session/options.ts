/**
 * The rules of a training request's options, one per option, and the one message each gives:
 * `<option>: expected <what>, found <value>`. Both hosts send their input through here unchanged
 * (the CLI turns `--rank 6` into `lora.r = 6`, the app's form into the same field), so a bad value
 * reads the same in a terminal and in the page. Options are named by their neutral names below,
 * not by a host's spelling (`--max-len` on the command line, a labelled field in the app).
 */
import { UsageError } from '../errors.ts';
import { defaultAlpha, type LoraConfig, loraConfigIssue } from '../model/lora.ts';
import { checkSaliencyOptions, SALIENCY_OPTION_RULES } from '../nlft/saliency.ts';
import type { TrainConfig } from '../train/trainer.ts';
import { checkRule, finiteNumber, isBoolean, isNonNegative, isOneOf, isPositive, isPositiveInt, type OptionRule } from '../util/options.ts';
import type { TrainRequest } from './requests.ts';

/** The longest sequence (prompt + response tokens) when none is asked for. */
export const DEFAULT_MAX_LEN = 512;

/** The rules of the training and NLFT options (LoRA's own four come from `loraConfigIssue`). */
export const OPTION_RULES = {
  method: { expected: 'nlft or sft', ok: isOneOf('nlft', 'sft') },
  epochs: { expected: 'a positive number', ok: isPositive },
  steps: { expected: 'a positive integer (or none: all epochs)', ok: (v) => v === null || isPositiveInt(v) },
  lr: { expected: 'a positive number', ok: isPositive },
  batch: { expected: 'a positive integer', ok: isPositiveInt },
  seed: { expected: 'a non-negative integer', ok: finiteNumber((v) => Number.isSafeInteger(v) && v >= 0) },
  weightDecay: { expected: 'a non-negative number', ok: isNonNegative },
  warmup: { expected: 'a fraction in [0, 1]', ok: finiteNumber((v) => v <= 1 && v >= 0) },
  maxGradNorm: { expected: 'a non-negative number (0 disables clipping)', ok: isNonNegative },
  recompute: { expected: 'true or false', ok: isBoolean },
  packing: { expected: 'on or off (true or false)', ok: isBoolean },
  maxLen: { expected: 'an integer of at least 2', ok: finiteNumber((v) => Number.isInteger(v) && v >= 2) },
  memoryBudgetMiB: { expected: 'a positive number of MiB (or none)', ok: (v) => v === null || v === undefined || isPositive(v) },
  scoreBatchTokens: {
    expected: 'a positive integer (or none: sized from memory)',
    ok: (v) => v === null || v === undefined || isPositiveInt(v),
  },
  saliency: {
    expected: 'dynamic or static (or none: dynamic, static with a scorer)',
    ok: (v) => v === null || v === undefined || isOneOf('dynamic', 'static')(v),
  },
  scorer: {
    expected: 'a model folder or Hub id (or none)',
    ok: (v) => v === null || v === undefined || (typeof v === 'string' && v.trim() !== ''),
  },
  ...SALIENCY_OPTION_RULES,
} satisfies Record<string, OptionRule>;

/** When NLFT's saliency is computed (docs/method.md §3.1): re-scored every step, or once before training. */
export type SaliencyMode = 'dynamic' | 'static';

/**
 * The saliency mode a request asks for: as asked, else static with a scorer and dynamic without.
 *
 * @throws UsageError for a bad mode, or dynamic saliency asked for with a scorer
 */
export function saliencyModeOf(req: Pick<TrainRequest, 'saliencyMode' | 'scorer'>): SaliencyMode {
  checkOption('saliency', req.saliencyMode);
  checkOption('scorer', req.scorer);
  if (req.scorer && req.saliencyMode === 'dynamic') {
    const why = 'the scorer decides the saliency once, before training';
    throw new UsageError(`saliency: expected static with a scorer model (${why}), found "dynamic"`);
  }
  return req.saliencyMode ?? (req.scorer ? 'static' : 'dynamic');
}

export type OptionName = keyof typeof OPTION_RULES;

/**
 * Checks one option against its rule.
 *
 * @throws UsageError `<name>: expected <what>, found <value>`
 */
export function checkOption(name: OptionName, value: unknown): void {
  checkRule(name, OPTION_RULES[name], value);
}

/** The neutral names of LoRA's fields (PEFT's `r` is the option `rank`). */
const LORA_OPTION: Record<keyof LoraConfig, string> = { r: 'rank', alpha: 'alpha', dropout: 'dropout', targets: 'targets' };

/**
 * The LoRA config a request asks for, alpha defaulting to `defaultAlpha(r)`, checked.
 *
 * @throws UsageError `rank: expected a positive multiple of 4 (the GPU kernels need it), found 6`, …
 */
export function loraOf(lora: TrainRequest['lora']): LoraConfig {
  const config: LoraConfig = { r: lora.r, alpha: lora.alpha ?? defaultAlpha(lora.r), dropout: lora.dropout, targets: lora.targets };
  const issue = loraConfigIssue(config);
  if (issue) throw new UsageError(`${LORA_OPTION[issue.field]}: ${issue.detail}`);
  return config;
}

/**
 * Checks the training hyper-parameters and returns them in their canonical key order (checkpoints
 * and run records store them as JSON, the same bytes whichever host built them).
 *
 * @throws UsageError naming the first bad one
 */
export function checkTrainConfig(t: TrainConfig): TrainConfig {
  checkOption('epochs', t.epochs);
  checkOption('steps', t.maxSteps);
  checkOption('lr', t.lr);
  checkOption('batch', t.batch);
  checkOption('seed', t.seed);
  checkOption('weightDecay', t.weightDecay);
  checkOption('warmup', t.warmupFraction);
  checkOption('maxGradNorm', t.maxGradNorm);
  checkOption('recompute', t.recompute);
  checkOption('packing', t.packing);
  const { epochs, maxSteps, lr, warmupFraction, batch, seed, weightDecay, maxGradNorm, recompute, packing } = t;
  return { epochs, maxSteps, lr, warmupFraction, batch, seed, weightDecay, maxGradNorm, recompute, packing };
}

/**
 * Checks every option of a training request (a resumed run's training and LoRA settings come from
 * its checkpoint and are checked there) and returns its training and LoRA configs, alpha's default
 * applied, in canonical key order.
 *
 * @throws UsageError naming the first bad option
 */
export function checkTrainRequest(req: TrainRequest): { train: TrainConfig; lora: LoraConfig } {
  checkOption('method', req.method);
  const train = checkTrainConfig(req.train);
  const lora = loraOf(req.lora);
  checkOption('maxLen', req.maxLen);
  checkOption('memoryBudgetMiB', req.memoryBudgetMiB);
  checkOption('scoreBatchTokens', req.scoreBatchTokens);
  checkSaliencyOptions(req.saliency);
  saliencyModeOf(req);
  if (req.method === 'sft' && req.scorer) {
    throw new UsageError(
      `scorer: expected none with the sft method (a scorer decides NLFT's saliency), found ${JSON.stringify(req.scorer)}`,
    );
  }
  return { train, lora };
}
