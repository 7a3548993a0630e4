/**
 * The Compare view's bar chart: one horizontal SVG bar per column, numbered as the grid's columns,
 * its length the accuracy, labelled with what was evaluated and its counts ("36/200", beside the
 * bar's end, or inside it past the middle); a column of several seeds shows their mean as the bar
 * and each seed's accuracy as a dot under it. Drawn at about the panel's width, so text keeps its size.
 */
import { h } from '../dom.ts';
import { type CompareColumn, columnAccuracy } from './compare-data.ts';
import { svg } from './loss-chart.ts';

const W = 440;
const ROW = 58;
const LEFT = 8;
const BAR_W = W - 2 * LEFT;
const BAR_H = 14;
/** The bar's top within its row, under the two lines of its label. */
const BAR_Y = 30;

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
/** Text cut to `max` characters with an ellipsis. */
const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** What the bar's end says: the counts (and the mean over seeds). */
function barText(c: CompareColumn): string {
  const counts = c.runs.map((r) => `${r.correct}/${r.total}`).join(', ');
  return c.runs.length === 1 ? `${counts} = ${pct(columnAccuracy(c))}` : `mean ${pct(columnAccuracy(c))} · ${counts}`;
}

/** The chart of `columns` as a figure (`data-bars` counts the bars; each bar's group has `data-testid=compare-bar`). */
export function compareChart(columns: readonly CompareColumn[]): HTMLElement {
  const height = ROW * columns.length + 18;
  const plot = svg('svg', { viewBox: `0 0 ${W} ${height}`, class: 'compare-svg', role: 'img' });
  const x = (acc: number) => LEFT + acc * BAR_W;
  const axis = { stroke: '#aab3c0', 'stroke-width': 1 };
  plot.append(
    svg('line', { x1: LEFT, y1: 4, x2: LEFT, y2: height - 16, ...axis }),
    svg('line', { x1: x(1), y1: 4, x2: x(1), y2: height - 16, ...axis, 'stroke-dasharray': '3 3' }),
    svg('text', { x: LEFT, y: height - 4, class: 'axis' }, '0%'),
    svg('text', { x: x(1), y: height - 4, class: 'axis', 'text-anchor': 'end' }, '100%'),
  );
  columns.forEach((c, i) => {
    const top = 4 + i * ROW;
    const acc = columnAccuracy(c);
    const text = barText(c);
    const g = svg('g', { 'data-testid': 'compare-bar', 'data-counts': text });
    const title = svg('title', {}, `${i + 1}. ${c.title}${c.detail ? ` — ${c.detail}` : ''}: ${text}`);
    g.append(
      title,
      svg('text', { x: LEFT, y: top + 11, class: 'bar-label' }, cut(`${i + 1}. ${c.title}`, 64)),
      svg('text', { x: LEFT + 12, y: top + 24, class: 'bar-detail' }, cut(c.detail, 80)),
      svg('rect', { x: LEFT, y: top + BAR_Y, width: BAR_W, height: BAR_H, fill: '#eef1f5' }),
      svg('rect', { x: LEFT, y: top + BAR_Y, width: (acc * BAR_W).toFixed(1), height: BAR_H, fill: i === 0 ? '#7c8da3' : '#1f6f8b' }),
      acc > 0.5
        ? svg('text', { x: x(acc) - 6, y: top + BAR_Y + 11, class: 'bar-count inside', 'text-anchor': 'end' }, text)
        : svg('text', { x: x(acc) + 6, y: top + BAR_Y + 11, class: 'bar-count' }, text),
    );
    if (c.runs.length > 1)
      for (const r of c.runs)
        g.append(
          svg('circle', {
            cx: x(r.correct / r.total).toFixed(1),
            cy: top + BAR_Y + BAR_H + 5,
            r: 3,
            fill: '#fff',
            stroke: '#13212e',
            'stroke-width': 1.5,
            'data-seed': r.seed ?? '',
          }),
        );
    plot.append(g);
  });
  plot.setAttribute('aria-label', columns.map((c, i) => `${i + 1}. ${c.title}: ${barText(c)}`).join('; '));
  return h('figure', { class: 'compare-chart', testid: 'compare-chart', 'data-bars': columns.length }, plot);
}
