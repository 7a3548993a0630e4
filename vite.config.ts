import { defineConfig, type Plugin } from 'vite';

/**
 * The dev server (`npm start`) injects each CSS module as a `<style>` element (for hot reload), so
 * there, and only there, index.html's Content-Security-Policy also allows inline styles; the built
 * app links its CSS as a file and keeps `style-src 'self'` (docs/architecture.md §9).
 */
const devInlineStyles: Plugin = {
  name: 'nlft-dev-inline-styles',
  apply: 'serve',
  transformIndexHtml(html) {
    const strict = "style-src 'self';";
    if (!html.includes(strict)) throw new Error(`index.html: expected the Content-Security-Policy to hold "${strict}"`);
    return html.replace(strict, "style-src 'self' 'unsafe-inline';");
  },
};

// The app: index.html at the repo root, src/app/main.ts on the page, workers/trainer.worker.ts as
// a module Worker. Kernels are bundled as text (src/engine/kernel-files-vite.ts); the tokenizer
// and the sample dataset are served from public/.
export default defineConfig({
  root: '.',
  server: { port: 5173 },
  worker: { format: 'es' },
  plugins: [devInlineStyles],
});
