/** The NLFT options shared by `nlft score` and `nlft train --method nlft` (nlft.md: every constant a flag). */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { UsageError } from '../../errors.ts';
import { DEFAULT_SALIENCY, type SaliencyOptions } from '../../nlft/saliency.ts';
import { DEFAULT_TEMPLATES, parseTemplates, type NlftTemplates } from '../../nlft/templates.ts';
import { scoreBatchTokens } from '../../engine/memory.ts';
import type { LlamaConfig } from '../../model/config.ts';
import type { LoraConfig } from '../../model/lora.ts';
import { DEFAULT_SCORE_BATCH_TOKENS } from '../../nlft/method.ts';
import { isPositiveInt, numberOption, type Options } from './args.ts';

export const NLFT_FLAGS: Options = {
  lambda: { type: 'string' },
  'tau-c': { type: 'string' },
  rho: { type: 'string' },
  theta: { type: 'string' },
  delta: { type: 'string' },
  'pj-min': { type: 'string' },
  'unlikely-fraction-max': { type: 'string' },
  'cluster-criterion': { type: 'string' },
  'sft-on-negatives': { type: 'boolean' },
  'negatives-without-saliency': { type: 'string' },
  templates: { type: 'string' },
  'score-batch-tokens': { type: 'string' },
};

export const NLFT_USAGE = `[--lambda 10] [--tau-c 0.95] [--rho 1.5] [--theta 1.5] [--delta 0.4] [--pj-min 0.01]
            [--unlikely-fraction-max 0.06] [--cluster-criterion distance|similarity] [--sft-on-negatives]
            [--negatives-without-saliency train|skip] [--templates FILE] [--score-batch-tokens N]`;

/**
 * Tokens per packed no-grad scoring pass: --score-batch-tokens, or DEFAULT_SCORE_BATCH_TOKENS
 * within `activationBytes`; either way within the device's per-buffer binding limit.
 */
export function scoreBatchOption(
  values: Record<string, unknown>,
  c: LlamaConfig,
  lora: LoraConfig | null,
  activationBytes: number,
  maxBindingBytes: number,
): number {
  const fitting = (bytes: number) => scoreBatchTokens(c, lora, bytes, maxBindingBytes);
  if (values['score-batch-tokens'] === undefined) return Math.min(DEFAULT_SCORE_BATCH_TOKENS, fitting(activationBytes));
  return Math.min(numberOption(values, 'score-batch-tokens', 1, isPositiveInt, 'a positive integer'), fitting(Infinity));
}

export function saliencyOptions(values: Record<string, unknown>): SaliencyOptions {
  const d = DEFAULT_SALIENCY;
  const num = (name: string, fallback: number, ok: (v: number) => boolean, expected: string) =>
    numberOption(values, name, fallback, ok, expected);
  const positive = (v: number) => v > 0;
  const fraction = (v: number) => v >= 0 && v <= 1;
  const criterion = values['cluster-criterion'] ?? d.clusterCriterion;
  if (criterion !== 'distance' && criterion !== 'similarity')
    throw new UsageError(`--cluster-criterion must be distance or similarity (got "${String(criterion)}")`);
  const without = values['negatives-without-saliency'] ?? d.negativesWithoutSaliency;
  if (without !== 'train' && without !== 'skip')
    throw new UsageError(`--negatives-without-saliency must be train or skip (got "${String(without)}")`);
  return {
    lambda: num('lambda', d.lambda, positive, 'a positive number'),
    tauC: num('tau-c', d.tauC, (v) => v > 0 && v < 1, 'a number in (0, 1)'),
    rho: num('rho', d.rho, positive, 'a positive number'),
    theta: num('theta', d.theta, Number.isFinite, 'a number'),
    delta: num('delta', d.delta, fraction, 'a number in [0, 1]'),
    pjMin: num('pj-min', d.pjMin, fraction, 'a probability in [0, 1]'),
    unlikelyFractionMax: num('unlikely-fraction-max', d.unlikelyFractionMax, fraction, 'a fraction in [0, 1]'),
    clusterCriterion: criterion,
    sftOnNegatives: values['sft-on-negatives'] === true,
    negativesWithoutSaliency: without,
  };
}

export async function templatesOption(values: Record<string, unknown>): Promise<NlftTemplates> {
  const file = values.templates;
  if (typeof file !== 'string') return DEFAULT_TEMPLATES;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new UsageError(`cannot read the templates file ${file}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${path.basename(file)}: not valid JSON: ${(e as Error).message}`);
  }
  return parseTemplates(json, path.basename(file));
}
