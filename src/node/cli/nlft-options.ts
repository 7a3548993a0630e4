/** The NLFT options shared by `nlft score` and `nlft train --method nlft` (every constant a flag; the rules are the session's). */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { UsageError } from '../../errors.ts';
import { DEFAULT_SALIENCY, type SaliencyOptions } from '../../nlft/saliency.ts';
import { DEFAULT_TEMPLATES, parseTemplates, type NlftTemplates } from '../../nlft/templates.ts';
import { checkSaliencyOptions } from '../../nlft/saliency.ts';
import { checkOption } from '../../session/options.ts';
import { rawOption, type Options } from './args.ts';

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
  negatives: { type: 'string' },
  'anchor-weight': { type: 'string' },
  templates: { type: 'string' },
  'score-batch-tokens': { type: 'string' },
};

export const NLFT_USAGE = `[--lambda 10] [--tau-c 0.95] [--rho 1.5] [--theta 1.5] [--delta 0.4] [--pj-min 0.01]
            [--unlikely-fraction-max 0.06] [--cluster-criterion distance|similarity] [--sft-on-negatives]
            [--negatives-without-saliency train|skip] [--negatives authors|anchor] [--anchor-weight 1]
            [--templates FILE] [--score-batch-tokens N]`;

/** --score-batch-tokens, or null when absent (checked by the session's rule `scoreBatchTokens`). */
export function scoreBatchOption(values: Record<string, unknown>): number | null {
  const v = rawOption(values, 'score-batch-tokens') ?? null;
  checkOption('scoreBatchTokens', v);
  return v as number | null;
}

/** The NLFT flags as saliency options, defaults where absent, checked by the session's rules. */
export function saliencyOptions(values: Record<string, unknown>): SaliencyOptions {
  const d = DEFAULT_SALIENCY;
  const or = (name: string, fallback: unknown) => rawOption(values, name) ?? fallback;
  const s = {
    lambda: or('lambda', d.lambda),
    tauC: or('tau-c', d.tauC),
    rho: or('rho', d.rho),
    theta: or('theta', d.theta),
    delta: or('delta', d.delta),
    pjMin: or('pj-min', d.pjMin),
    unlikelyFractionMax: or('unlikely-fraction-max', d.unlikelyFractionMax),
    clusterCriterion: or('cluster-criterion', d.clusterCriterion),
    sftOnNegatives: values['sft-on-negatives'] === true,
    negativesWithoutSaliency: or('negatives-without-saliency', d.negativesWithoutSaliency),
    negatives: or('negatives', d.negatives),
    anchorWeight: or('anchor-weight', d.anchorWeight),
  } as SaliencyOptions;
  checkSaliencyOptions(s);
  return s;
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
