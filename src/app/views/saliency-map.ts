/**
 * The saliency map: one record's response tokens coloured by the class NLFT gave them (correct,
 * cluster, unlikely, plain) and shaded by their coefficient, with pb, pc, pj, coefficient and term
 * kind in each token's tooltip (and in data- attributes for tests and tools).
 */
import type { SaliencyEntry } from '../../nlft/method.ts';
import type { TokenClass } from '../../nlft/saliency.ts';
import { h } from '../dom.ts';
import { visibleText } from './token-strip.ts';

const CLASS_LABEL: Record<TokenClass, string> = {
  correct: 'correct (pc > τc): pushed up',
  cluster: 'cluster around a salient token',
  unlikely: 'unlikely (judge view prefers it): pushed down',
  plain: 'plain',
};

const p3 = (v: number | null) => (v === null ? '–' : v.toPrecision(3));

/** The tokens of one saliency entry. */
export function renderSaliency(e: SaliencyEntry): HTMLElement {
  const max = Math.max(1e-9, ...e.tokens.map((t) => Math.abs(t.coefficient)));
  const strip = h('div', { class: 'token-strip saliency', testid: 'saliency-tokens' });
  for (const t of e.tokens) {
    const span = h(
      'span',
      {
        class: `token sal-${t.class}`,
        'data-class': t.class,
        'data-coefficient': t.coefficient,
        title: `${t.class} · ${t.kind} · coefficient ${t.coefficient.toPrecision(3)} · pb ${p3(t.pb)} · pc ${p3(t.pc)} · pj ${p3(t.pj)}`,
      },
      visibleText(t.text),
    );
    span.style.setProperty('--weight', (0.25 + (0.75 * Math.abs(t.coefficient)) / max).toFixed(3));
    strip.append(span);
  }
  return strip;
}

/** The class legend. */
export function renderSaliencyLegend(): HTMLElement {
  return h(
    'p',
    { class: 'legend' },
    ...(Object.keys(CLASS_LABEL) as TokenClass[]).map((c) =>
      h('span', { class: 'legend-item' }, h('span', { class: `swatch sal-${c}` }), CLASS_LABEL[c]),
    ),
    h('span', {}, '· darker = larger coefficient'),
  );
}

/** One line about the entry: record, polarity, step, loss and what NLFT found. */
export function describeEntry(e: SaliencyEntry): string {
  const n = (c: TokenClass) => e.tokens.filter((t) => t.class === c).length;
  const found =
    e.polarity === 'negative' ? `${n('unlikely')} unlikely, ${n('cluster')} cluster` : `${n('correct')} correct, ${n('cluster')} cluster`;
  const notes = [e.sixPercentRule ? '6% rule: only unlikely tokens train' : '', e.skipped ? 'skipped (no unlikely token)' : '']
    .filter(Boolean)
    .join('; ');
  return `Record ${e.index} (${e.id}, ${e.polarity})${e.step === null ? ' before training' : ` at step ${e.step}`}: loss ${e.loss.toFixed(3)}; ${found} of ${e.tokens.length} tokens${notes ? `; ${notes}` : ''}`;
}
