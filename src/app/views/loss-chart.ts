/**
 * The loss chart: one point per optimizer step (each batch's mean loss), a smoothed line (an
 * exponential moving average, debiased so that its first points are not pulled towards zero) and
 * each epoch's mean loss as a level across its steps, scaled to the losses so far, with the range
 * on the axes and a legend. `data-steps` counts the points, `data-epochs` the epoch levels.
 */
import type { StepMetrics } from '../../train/trainer.ts';
import { h } from '../dom.ts';

const SVG = 'http://www.w3.org/2000/svg';
const W = 480;
const H = 160;
const PAD = { left: 48, right: 12, top: 22, bottom: 24 };

/** Weight of the newest loss in the smoothed line. */
export const EMA_ALPHA = 0.2;

const COLORS = { step: '#9bb7c7', ema: '#1f6f8b', epoch: '#c2571a' };

/** The debiased exponential moving average of `values` with weight `alpha` for the newest (Adam's bias correction). */
export function smoothLosses(values: readonly number[], alpha: number): number[] {
  let avg = 0;
  let weight = 0;
  return values.map((v) => {
    avg = (1 - alpha) * avg + alpha * v;
    weight = (1 - alpha) * weight + alpha;
    return avg / weight;
  });
}

/** Each epoch's mean loss over the steps it has so far, with its first and last step. */
export function epochMeans(metrics: readonly StepMetrics[]): { epoch: number; first: number; last: number; mean: number }[] {
  const out: { epoch: number; first: number; last: number; sum: number; n: number }[] = [];
  for (const m of metrics) {
    const cur = out.at(-1);
    if (cur && cur.epoch === m.epoch) {
      cur.last = m.step;
      cur.sum += m.loss;
      cur.n++;
    } else out.push({ epoch: m.epoch, first: m.step, last: m.step, sum: m.loss, n: 1 });
  }
  return out.map(({ epoch, first, last, sum, n }) => ({ epoch, first, last, mean: sum / n }));
}

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
  const el = h('figure', { class: 'loss-chart', testid: 'loss-chart', 'data-steps': 0, 'data-epochs': 0 }, empty, plot);
  return {
    el,
    render(metrics, totalSteps) {
      el.dataset.steps = String(metrics.length);
      const epochs = epochMeans(metrics);
      el.dataset.epochs = String(epochs.length);
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
          stroke: COLORS.step,
          'stroke-width': 1,
        }),
      );
      for (const m of metrics) plot.append(svg('circle', { cx: x(m.step).toFixed(1), cy: y(m.loss).toFixed(1), r: 2, fill: COLORS.step }));
      const ema = smoothLosses(losses, EMA_ALPHA);
      plot.append(
        svg('polyline', {
          points: metrics.map((m, i) => `${x(m.step).toFixed(1)},${y(ema[i]).toFixed(1)}`).join(' '),
          fill: 'none',
          stroke: COLORS.ema,
          'stroke-width': 2,
          'data-series': 'ema',
        }),
      );
      for (const e of epochs) {
        const half = (x(2) - x(1)) / 2;
        const level = svg('line', {
          x1: Math.max(PAD.left, x(e.first) - half).toFixed(1),
          x2: Math.min(W - PAD.right, x(e.last) + half).toFixed(1),
          y1: y(e.mean).toFixed(1),
          y2: y(e.mean).toFixed(1),
          stroke: COLORS.epoch,
          'stroke-width': 2,
          'stroke-dasharray': '5 3',
          'data-series': 'epoch',
        });
        level.append(svg('title', {}, `epoch ${e.epoch}: mean loss ${label(e.mean)} over steps ${e.first}–${e.last}`));
        plot.append(level);
      }
      const legend: [string, string, number][] = [
        [COLORS.step, 'batch loss', 0],
        [COLORS.ema, `smoothed (EMA, α = ${EMA_ALPHA})`, 96],
        [COLORS.epoch, 'epoch mean', 270],
      ];
      for (const [color, text, at] of legend) {
        const lx = PAD.left + at;
        plot.append(
          svg('line', { x1: lx, x2: lx + 16, y1: 10, y2: 10, stroke: color, 'stroke-width': 2 }),
          svg('text', { x: lx + 20, y: 14, class: 'axis legend' }, text),
        );
      }
      const means = epochs.map((e) => `epoch ${e.epoch} mean ${label(e.mean)}`).join(', ');
      plot.setAttribute('aria-label', `Loss over ${metrics.length} steps: from ${label(losses[0])} to ${label(losses.at(-1)!)}; ${means}`);
    },
  };
}
