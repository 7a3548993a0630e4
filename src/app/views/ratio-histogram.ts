/**
 * The explorer's histogram (SVG): how much the judge view raises each response token of the
 * negatives, pj/pb on a log axis, with ρ marked — a token can be unlikely only right of the line
 * (docs/method.md §3, negative record). `data-tokens` and `data-above` count the tokens in all and
 * right of ρ.
 */
import type { DatasetScores, ScoredRecord } from '../../nlft/method.ts';
import { h } from '../dom.ts';
import { svg } from './loss-chart.ts';

const W = 480;
const H = 160;
const PAD = { left: 36, right: 12, top: 20, bottom: 30 };
/** log10(pj/pb) from −SPAN to +SPAN; values beyond fall into the end bins. */
const SPAN = 3;
const BINS = 30;

/** log10(pj/pb) of every response token of the negatives. */
export function judgeRatios(records: readonly ScoredRecord[], scores: DatasetScores): number[] {
  return records.flatMap((r, i) => {
    const { logpj, logpb } = scores.records[i];
    return r.polarity === 'negative' && logpj ? Array.from(logpb, (b, t) => (logpj[t] - b) / Math.LN10) : [];
  });
}

/** The histogram of `ratios` (log10 pj/pb) with ρ marked. */
export function renderRatioHistogram(ratios: readonly number[], rho: number): HTMLElement {
  const counts = new Array<number>(BINS).fill(0);
  const bin = (v: number) => Math.min(BINS - 1, Math.max(0, Math.floor(((v + SPAN) / (2 * SPAN)) * BINS)));
  for (const v of ratios) counts[bin(v)]++;
  const above = ratios.filter((v) => v > Math.log10(rho)).length;
  const top = Math.max(1, ...counts);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (v: number) => PAD.left + ((Math.min(SPAN, Math.max(-SPAN, v)) + SPAN) / (2 * SPAN)) * plotW;
  const plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'ratio-svg', role: 'img' });
  const axis = { stroke: '#aab3c0', 'stroke-width': 1 };
  plot.append(
    svg('line', { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, ...axis }),
    svg('text', { x: PAD.left - 4, y: PAD.top + 8, 'text-anchor': 'end', class: 'axis' }, String(top)),
    svg('text', { x: PAD.left - 4, y: H - PAD.bottom, 'text-anchor': 'end', class: 'axis' }, '0'),
  );
  for (const e of [-SPAN, -2, -1, 0, 1, 2, SPAN]) {
    const label = e === 0 ? '1' : `1e${e}`;
    plot.append(svg('text', { x: x(e), y: H - PAD.bottom + 12, 'text-anchor': 'middle', class: 'axis' }, label));
  }
  plot.append(svg('text', { x: W / 2, y: H - 4, 'text-anchor': 'middle', class: 'axis' }, 'pj / pb of the negatives’ response tokens'));
  counts.forEach((n, i) => {
    if (n === 0) return;
    const bh = (n / top) * plotH;
    const bx = PAD.left + (i / BINS) * plotW;
    const bar = svg('rect', { x: bx + 0.5, y: H - PAD.bottom - bh, width: plotW / BINS - 1, height: bh, class: 'ratio-bar' });
    bar.append(svg('title', {}, `${n} tokens`));
    plot.append(bar);
  });
  const rx = x(Math.log10(rho));
  plot.append(
    svg('line', { x1: rx, y1: PAD.top, x2: rx, y2: H - PAD.bottom, class: 'ratio-rho' }),
    svg('text', { x: rx, y: PAD.top - 6, 'text-anchor': 'middle', class: 'axis rho-label' }, `ρ = ${rho}`),
  );
  plot.setAttribute('aria-label', `pj/pb of ${ratios.length} negative tokens; ${above} above ρ = ${rho}`);
  return h(
    'figure',
    { class: 'ratio-chart', testid: 'explorer-histogram', 'data-tokens': ratios.length, 'data-above': above },
    plot,
    h(
      'figcaption',
      { class: 'hint' },
      `${above} of ${ratios.length} negative tokens have pj/pb above ρ; an unlikely token also needs pj/pc above ρ and pj above the pj minimum.`,
    ),
  );
}
