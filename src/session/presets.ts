/**
 * The NLFT settings offered by name (docs/method.md §7.2): the one the toy-math comparison chose as
 * the app's default for small models, and the authors' rules, kept one click away. A preset names
 * how negatives train and when the saliency is computed; the constants (λ, τc, ρ, …) keep whatever
 * values the form holds.
 */
import type { SaliencyOptions } from '../nlft/saliency.ts';
import type { SaliencyMode } from './options.ts';

/** The options a preset decides. */
export type PresetChoices = Pick<SaliencyOptions, 'negatives' | 'negativesWithoutSaliency' | 'sftOnNegatives'> & {
  saliencyMode: SaliencyMode;
};

export interface NlftPreset {
  id: 'small-model' | 'authors';
  /** The menu text. */
  label: string;
  /** One sentence on what it does and why, for the form's hint. */
  description: string;
  choices: PresetChoices;
}

/** The presets, the default first. */
export const NLFT_PRESETS: readonly NlftPreset[] = Object.freeze([
  {
    id: 'small-model',
    label: 'Small models (default)',
    description:
      'Anchored negatives, saliency once: a wrong answer trains its standard answer, and unlikelihood only on the tokens its judgment marks; saliency is ' +
      'scored once before training, so a step costs about what an SFT step costs. Chosen from the toy-math comparison ' +
      '(README): as accurate as the authors’ rules there, at an SFT-like step cost, never training towards a wrong answer.',
    choices: { negatives: 'anchor', negativesWithoutSaliency: 'train', sftOnNegatives: false, saliencyMode: 'static' },
  },
  {
    id: 'authors',
    label: 'The authors’ NLFT (paper)',
    description:
      'The paper as written: saliency re-scored every step; a wrong answer without an unlikely token is trained towards ' +
      'its own response with weights √pc.',
    choices: { negatives: 'authors', negativesWithoutSaliency: 'train', sftOnNegatives: false, saliencyMode: 'dynamic' },
  },
]);

/** The app's default preset. */
export const DEFAULT_PRESET: NlftPreset = NLFT_PRESETS[0];

/** The preset whose choices these are, or null when they match none (a custom setting). */
export function presetOf(choices: PresetChoices): NlftPreset | null {
  return (
    NLFT_PRESETS.find(
      (p) =>
        p.choices.negatives === choices.negatives &&
        p.choices.negativesWithoutSaliency === choices.negativesWithoutSaliency &&
        p.choices.sftOnNegatives === choices.sftOnNegatives &&
        p.choices.saliencyMode === choices.saliencyMode,
    ) ?? null
  );
}
