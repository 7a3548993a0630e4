import { defineConfig } from 'vite';

// The app: index.html at the repo root, src/app/main.ts on the page, workers/trainer.worker.ts as
// a module Worker. Kernels are bundled as text (src/engine/kernel-files-vite.ts); the tokenizer
// and the sample dataset are served from public/.
export default defineConfig({
  root: '.',
  server: { port: 5173 },
  worker: { format: 'es' },
});
