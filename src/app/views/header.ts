/** The page header: app name, the GPU adapter line, and a banner for failures and warnings. */
import type { AdapterInfo } from '../../../workers/protocol.ts';
import { errorLine, h } from '../dom.ts';

/** A button the banner offers with its message (e.g. continuing a run on a new GPU device). */
export interface BannerAction {
  label: string;
  /** Runs on click, the button disabled until it settles. */
  run(): Promise<void>;
}

/** The header's element and what the app tells it. */
export interface HeaderView {
  el: HTMLElement;
  /** Shows the adapter the worker acquired. */
  setAdapter(info: AdapterInfo): void;
  /** Shows why there is no GPU in place of the adapter. */
  setNoAdapter(message: string): void;
  /**
   * Shows a banner under the header: a failure that stops the app (device lost, worker crashed) or
   * a warning, with a button for `action` when there is something to do about it.
   */
  showBanner(message: string, action?: BannerAction): void;
  /** Takes the banner away. */
  hideBanner(): void;
}

/** Builds the header, showing "Looking for a GPU…" until `setAdapter` or `setNoAdapter`. */
export function createHeader(): HeaderView {
  const adapter = h('p', { class: 'adapter', testid: 'adapter', 'data-state': 'pending' }, 'Looking for a GPU…');
  const message = errorLine('app-error');
  const button = h('button', { type: 'button', class: 'primary', testid: 'app-error-action', hidden: true });
  const banner = h('div', { class: 'banner', hidden: true }, message.el, button);
  let action: BannerAction | null = null;
  button.addEventListener('click', async () => {
    if (!action) return;
    button.disabled = true;
    try {
      await action.run();
    } finally {
      button.disabled = false;
    }
  });
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
    banner,
  );
  const show = (text: string | null, next: BannerAction | null) => {
    message.show(text);
    banner.hidden = text === null;
    action = next;
    button.hidden = next === null;
    button.textContent = next?.label ?? '';
  };
  return {
    el,
    setAdapter(info) {
      adapter.textContent = `GPU: ${info.name}`;
      adapter.title = info.details;
      adapter.dataset.state = 'ready';
    },
    setNoAdapter(text) {
      adapter.textContent = text;
      adapter.dataset.state = 'error';
    },
    showBanner: (text, next) => show(text, next ?? null),
    hideBanner: () => show(null, null),
  };
}
