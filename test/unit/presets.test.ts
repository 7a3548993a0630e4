/** The named NLFT settings: each is recognised from its own choices, any other mix is custom, the default is the small-model one. */
import { expect, it } from 'vitest';
import { DEFAULT_PRESET, NLFT_PRESETS, presetOf } from '../../src/session/presets.ts';
import { checkOption } from '../../src/session/options.ts';

it('every preset is recognised from its choices and holds values the option rules accept', () => {
  expect(new Set(NLFT_PRESETS.map((p) => p.id)).size).toBe(NLFT_PRESETS.length);
  for (const p of NLFT_PRESETS) {
    expect(presetOf(p.choices)).toBe(p);
    expect(() => checkOption('saliency', p.choices.saliencyMode)).not.toThrow();
    expect(() => checkOption('negatives', p.choices.negatives)).not.toThrow();
    expect(() => checkOption('negativesWithoutSaliency', p.choices.negativesWithoutSaliency)).not.toThrow();
  }
  expect(DEFAULT_PRESET.id).toBe('small-model');
  expect(presetOf({ ...DEFAULT_PRESET.choices, saliencyMode: 'dynamic' })).toBeNull();
  expect(presetOf({ ...DEFAULT_PRESET.choices, sftOnNegatives: true })).toBeNull();
  expect(presetOf({ negatives: 'authors', negativesWithoutSaliency: 'skip', sftOnNegatives: false, saliencyMode: 'static' })).toBeNull();
});
