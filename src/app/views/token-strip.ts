/**
 * The token strip: each response token as a span coloured by its probability, with its id and
 * log-probability in the tooltip (and in `data-id` / `data-logp` for tests and tools).
 */
import type { TokenScores } from '../../../workers/protocol.ts';
import { h } from '../dom.ts';

/** The colour scale spans p from 10^-LOG10_FLOOR (red) to 1 (green). */
const LOG10_FLOOR = 6;

/** Background colour of a token with natural-log probability `logp`. */
function tokenColour(logp: number): string {
  const t = Math.min(1, Math.max(0, 1 + logp / Math.LN10 / LOG10_FLOOR));
  return `hsl(${Math.round(4 + 126 * t)} 72% ${Math.round(80 + 6 * t)}%)`;
}

/** Token text as shown: a newline is drawn as ↵ before the line break it makes. */
export function visibleText(text: string): string {
  return text.replace(/\n/g, '↵\n');
}

/** The spans of the response tokens, in order. */
export function renderTokenStrip(scores: TokenScores): HTMLElement {
  const strip = h('div', { class: 'token-strip', testid: 'token-strip' });
  scores.ids.forEach((id, i) => {
    const logp = scores.logprobs[i];
    const span = h(
      'span',
      {
        class: 'token',
        'data-id': id,
        'data-logp': logp,
        title: `id ${id} · log p ${logp.toFixed(3)} · p ${Math.exp(logp).toPrecision(3)}`,
      },
      visibleText(scores.texts[i]),
    );
    span.style.backgroundColor = tokenColour(logp);
    strip.append(span);
  });
  return strip;
}

/** A small legend of the colour scale. */
export function renderLegend(): HTMLElement {
  const stops = Array.from({ length: LOG10_FLOOR + 1 }, (_, k) => tokenColour(-k * Math.LN10)).reverse();
  const bar = h('span', { class: 'legend-bar' });
  bar.style.background = `linear-gradient(to right, ${stops.join(', ')})`;
  return h('p', { class: 'legend' }, h('span', {}, 'p ≤ 10', h('sup', {}, `−${LOG10_FLOOR}`)), bar, h('span', {}, 'p = 1'));
}
