/**
 * The NLFT options of a run, as a collapsible form in the Train panel: every constant of docs/method.md
 * §3–§4 with the spec's default, the two safeguards, how negatives train (the authors' rule or anchored), and the three views' prompt texts
 * (placeholders `{instruction}`, `{input}`, `{answer}`, `{judgment}`), all sent with the run and
 * stored with it. The worker validates them (messages name the option or template field).
 */
import { DEFAULT_SALIENCY, type SaliencyOptions } from '../../nlft/saliency.ts';
import { DEFAULT_TEMPLATES, type NlftTemplates } from '../../nlft/templates.ts';
import { h } from '../dom.ts';

type NumberOption = 'lambda' | 'tauC' | 'rho' | 'theta' | 'delta' | 'pjMin' | 'unlikelyFractionMax' | 'anchorWeight';

const NUMBERS: Array<[NumberOption, string]> = [
  ['lambda', 'λ (loss scale)'],
  ['tauC', 'τc (correct if pc >)'],
  ['rho', 'ρ (unlikely ratio)'],
  ['theta', 'θ (unlikely weight offset)'],
  ['delta', 'δ (cluster threshold)'],
  ['pjMin', 'pj minimum'],
  ['unlikelyFractionMax', 'unlikely fraction max'],
  ['anchorWeight', 'anchor weight (negatives: anchor)'],
];

const TEMPLATE_FIELDS: Array<[string, string, (t: NlftTemplates) => string]> = [
  ['baseSystem', 'Base view: system text (records without an instruction)', (t) => t.baseSystem],
  ['standard.system', 'Standard view: system', (t) => t.standard.system],
  ['standard.user', 'Standard view: user', (t) => t.standard.user],
  ['judge.system', 'Judge view: system', (t) => t.judge.system],
  ['judge.user', 'Judge view: user', (t) => t.judge.user],
];

export interface NlftOptionsForm {
  el: HTMLElement;
  /** The options as typed; a field that is not a number is named in the error. */
  read(): { saliency: SaliencyOptions; templates: NlftTemplates };
  fill(saliency: SaliencyOptions, templates: NlftTemplates): void;
  setDisabled(disabled: boolean): void;
}

/** Where the form is shown: the Train panel's (the default) or another panel's copy. */
export interface NlftOptionsFormOptions {
  /** Put before every control's id and test id, so that two forms can share a page (e.g. 'explorer-'). */
  prefix?: string;
  /** Show the prompt templates (default true); hidden, they are still filled and read. */
  templates?: boolean;
  /** The summary line of the collapsible form. */
  title?: string;
  /** Called after "Reset to the defaults" (typing fires the usual input and change events). */
  onReset?: () => void;
}

export function createNlftOptionsForm(o: NlftOptionsFormOptions = {}): NlftOptionsForm {
  const p = o.prefix ?? '';
  const numbers = new Map(
    NUMBERS.map(([key, label]) => [
      key,
      { label, input: h('input', { type: 'number', step: 'any', testid: `${p}nlft-${key}`, id: `${p}nlft-${key}` }) },
    ]),
  );
  const criterion = h(
    'select',
    { testid: `${p}nlft-clusterCriterion`, id: `${p}nlft-clusterCriterion` },
    h('option', { value: 'distance' }, "distance (the authors' code)"),
    h('option', { value: 'similarity' }, 'similarity'),
  );
  const without = h(
    'select',
    { testid: `${p}nlft-negativesWithoutSaliency`, id: `${p}nlft-negativesWithoutSaliency` },
    h('option', { value: 'train' }, "train (the authors' rule)"),
    h('option', { value: 'skip' }, 'skip'),
  );
  const negatives = h(
    'select',
    { testid: `${p}nlft-negatives`, id: `${p}nlft-negatives` },
    h('option', { value: 'authors' }, "authors (the authors' rule)"),
    h('option', { value: 'anchor' }, 'anchor: unlikely tokens only, plus the standard answer'),
  );
  const sftNeg = h('input', { type: 'checkbox', testid: `${p}nlft-sftOnNegatives`, id: `${p}nlft-sftOnNegatives` });
  const texts = new Map(
    TEMPLATE_FIELDS.map(([key, label]) => [
      key,
      { label, area: h('textarea', { rows: 3, spellcheck: false, testid: `${p}template-${key}`, id: `${p}template-${key}` }) },
    ]),
  );
  const showTemplates = o.templates ?? true;
  const reset = h('button', { type: 'button', testid: `${p}nlft-reset` }, 'Reset to the defaults');
  const controls: Array<HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement | HTMLButtonElement> = [
    ...[...numbers.values()].map((n) => n.input),
    criterion,
    without,
    negatives,
    sftNeg,
    ...[...texts.values()].map((t) => t.area),
    reset,
  ];

  const el = h(
    'details',
    { class: 'nlft-options', testid: `${p}nlft-options` },
    h('summary', {}, o.title ?? 'NLFT options and prompt templates'),
    h(
      'div',
      { class: 'settings' },
      ...[...numbers.entries()].map(([key, n]) =>
        h('label', { class: 'setting', for: `${p}nlft-${key}` }, h('span', {}, n.label), n.input),
      ),
      h('label', { class: 'setting', for: `${p}nlft-clusterCriterion` }, h('span', {}, 'cluster criterion'), criterion),
      h(
        'label',
        { class: 'setting', for: `${p}nlft-negativesWithoutSaliency` },
        h('span', {}, 'negatives without an unlikely token'),
        without,
      ),
      h('label', { class: 'setting', for: `${p}nlft-negatives` }, h('span', {}, 'negative records train'), negatives),
    ),
    h('label', { class: 'check', for: `${p}nlft-sftOnNegatives` }, sftNeg, 'Add an SFT term on negative records (off by default)'),
    h(
      'div',
      { hidden: !showTemplates },
      ...[...texts.entries()].flatMap(([key, t]) => [h('label', { class: 'field', for: `${p}template-${key}` }, t.label), t.area]),
    ),
    h(
      'p',
      { class: 'actions' },
      reset,
      showTemplates &&
        h(
          'span',
          { class: 'hint' },
          'Placeholders: {instruction}, {input}, {answer}, {judgment} (judge view); {{ and }} are literal braces.',
        ),
    ),
  );

  const readTemplates = (): NlftTemplates => {
    const t = (key: string) => texts.get(key)!.area.value;
    return {
      baseSystem: t('baseSystem'),
      standard: { system: t('standard.system'), user: t('standard.user') },
      judge: { system: t('judge.system'), user: t('judge.user') },
    };
  };
  const form: NlftOptionsForm = {
    el,
    read() {
      const saliency: SaliencyOptions = {
        ...DEFAULT_SALIENCY,
        clusterCriterion: criterion.value as SaliencyOptions['clusterCriterion'],
        negativesWithoutSaliency: without.value as SaliencyOptions['negativesWithoutSaliency'],
        negatives: negatives.value as SaliencyOptions['negatives'],
        sftOnNegatives: sftNeg.checked,
      };
      for (const [key, n] of numbers) {
        const v = Number(n.input.value);
        if (n.input.value.trim() === '' || !Number.isFinite(v))
          throw new Error(`NLFT option ${n.label} must be a number (got "${n.input.value}")`);
        saliency[key] = v;
      }
      return { saliency, templates: readTemplates() };
    },
    fill(saliency, templates) {
      for (const [key, n] of numbers) n.input.value = String(saliency[key]);
      criterion.value = saliency.clusterCriterion;
      without.value = saliency.negativesWithoutSaliency;
      negatives.value = saliency.negatives;
      sftNeg.checked = saliency.sftOnNegatives;
      for (const [key, , get] of TEMPLATE_FIELDS) texts.get(key)!.area.value = get(templates);
    },
    setDisabled(disabled) {
      for (const c of controls) c.disabled = disabled;
    },
  };
  reset.addEventListener('click', () => {
    form.fill(DEFAULT_SALIENCY, showTemplates ? DEFAULT_TEMPLATES : readTemplates());
    o.onReset?.();
  });
  form.fill(DEFAULT_SALIENCY, DEFAULT_TEMPLATES);
  return form;
}
