/** The page header: app name, the GPU adapter line, and a banner for failures and warnings. */
import type { AdapterInfo } from '../../../workers/protocol.ts';
import { errorLine, h } from '../dom.ts';

/** The header's element and what the app tells it. */
export interface HeaderView {
  el: HTMLElement;
  /** Shows the adapter the worker acquired. */
  setAdapter(info: AdapterInfo): void;
  /** Shows why there is no GPU in place of the adapter. */
  setNoAdapter(message: string): void;
  /** Shows a banner under the header: a failure that stops the app (device lost, worker crashed) or a warning. */
  showBanner(message: string): void;
}

/** Builds the header, showing "Looking for a GPU…" until `setAdapter` or `setNoAdapter`. */
export function createHeader(): HeaderView {
  const adapter = h('p', { class: 'adapter', testid: 'adapter', 'data-state': 'pending' }, 'Looking for a GPU…');
  const banner = errorLine('app-error');
  banner.el.classList.add('banner');
  const el = h(
    'header',
    { class: 'app-header' },
    h(
      'div',
      { class: 'brand' },
      h('img', { src: `${import.meta.env.BASE_URL}favicon.svg`, alt: '', width: 28, height: 28 }),
      h('h1', {}, 'NLFT Studio'),
      h('span', { class: 'tagline' }, 'fine-tune Llama models in this tab, on WebGPU'),
    ),
    adapter,
    banner.el,
  );
  return {
    el,
    setAdapter(info) {
      adapter.textContent = `GPU: ${info.name}`;
      adapter.title = info.details;
      adapter.dataset.state = 'ready';
    },
    setNoAdapter(message) {
      adapter.textContent = message;
      adapter.dataset.state = 'error';
    },
    showBanner: (message) => banner.show(message),
  };
}
