/** Small DOM helpers: the app builds its elements with `h` and wires events by hand. */

/** Attribute values: strings and numbers are set, `true` sets an empty attribute, false/null/undefined skip it. */
export type Attrs = Record<string, string | number | boolean | null | undefined>;

/** A child: a node, a text, or nothing (skipped). */
export type Child = Node | string | null | undefined | false;

/**
 * Creates an element. `attrs.testid` becomes `data-testid`; every other key is an attribute name.
 * @example h('button', { class: 'primary', testid: 'score' }, 'Score')
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    el.setAttribute(key === 'testid' ? 'data-testid' : key, value === true ? '' : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

/** A titled panel section; append its body content to `body`. */
export function panel(title: string, testid: string): { el: HTMLElement; body: HTMLDivElement } {
  const body = h('div', { class: 'panel-body' });
  const el = h('section', { class: 'panel', testid, 'aria-label': title }, h('h2', {}, title), body);
  return { el, body };
}

/** A line for errors: hidden while empty. */
export function errorLine(testid: string): { el: HTMLParagraphElement; show(message: string | null): void } {
  const el = h('p', { class: 'error', testid, role: 'alert', hidden: true });
  return {
    el,
    show(message) {
      el.textContent = message ?? '';
      el.hidden = !message;
    },
  };
}

/** "1,234,567"-style integers. */
export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}
