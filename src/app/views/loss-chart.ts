/**
 * The loss chart: one point per optimizer step, drawn as an SVG polyline scaled to the losses so
 * far, with the first and last loss and the range on the axes. `data-steps` counts the points.
 */
import type { StepMetrics } from '../../train/trainer.ts';
import { h } from '../dom.ts';

const SVG = 'http://www.w3.org/2000/svg';
const W = 480;
const H = 160;
const PAD = { left: 48, right: 12, top: 10, bottom: 24 };

/** An SVG element with its attributes and text (also used by the Compare chart and the explorer's histogram). */
export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
  text?: string,
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Short number for an axis label. */
function label(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

export interface LossChart {
  el: HTMLElement;
  /** Redraw with these steps (in step order); an empty list shows the empty state. */
  render(metrics: readonly StepMetrics[], totalSteps: number): void;
}

export function createLossChart(): LossChart {
  const plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'loss-svg', role: 'img', hidden: '' });
  const empty = h('p', { class: 'hint' }, 'The loss of every optimizer step appears here while training runs.');
  const el = h('figure', { class: 'loss-chart', testid: 'loss-chart', 'data-steps': 0 }, empty, plot);
  return {
    el,
    render(metrics, totalSteps) {
      el.dataset.steps = String(metrics.length);
      empty.hidden = metrics.length > 0;
      plot.toggleAttribute('hidden', metrics.length === 0);
      plot.replaceChildren();
      if (metrics.length === 0) return;
      const losses = metrics.map((m) => m.loss);
      let lo = Math.min(...losses);
      let hi = Math.max(...losses);
      if (hi - lo < 1e-9) [lo, hi] = [lo - 0.5, hi + 0.5];
      const span = Math.max(totalSteps, metrics.at(-1)!.step, 2) - 1;
      const x = (step: number) => PAD.left + ((step - 1) / span) * (W - PAD.left - PAD.right);
      const y = (loss: number) => PAD.top + ((hi - loss) / (hi - lo)) * (H - PAD.top - PAD.bottom);
      const axis = { stroke: '#aab3c0', 'stroke-width': 1 };
      plot.append(
        svg('line', { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, ...axis }),
        svg('line', { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, ...axis }),
        svg('text', { x: PAD.left - 6, y: PAD.top + 8, 'text-anchor': 'end', class: 'axis' }, label(hi)),
        svg('text', { x: PAD.left - 6, y: H - PAD.bottom, 'text-anchor': 'end', class: 'axis' }, label(lo)),
        svg('text', { x: PAD.left, y: H - 6, class: 'axis' }, 'step 1'),
        svg(
          'text',
          { x: W - PAD.right, y: H - 6, 'text-anchor': 'end', class: 'axis' },
          `step ${Math.max(totalSteps, metrics.at(-1)!.step)}`,
        ),
        svg('polyline', {
          points: metrics.map((m) => `${x(m.step).toFixed(1)},${y(m.loss).toFixed(1)}`).join(' '),
          fill: 'none',
          stroke: '#1f6f8b',
          'stroke-width': 2,
        }),
      );
      for (const m of metrics) plot.append(svg('circle', { cx: x(m.step).toFixed(1), cy: y(m.loss).toFixed(1), r: 2.5, fill: '#1f6f8b' }));
      plot.setAttribute('aria-label', `Loss over ${metrics.length} steps: from ${label(losses[0])} to ${label(losses.at(-1)!)}`);
    },
  };
}
