/**
 * The trainer worker: a dedicated module Worker that owns the GPU device and runs every GPU job
 * (model download and upload, scoring, training, evaluation, generation, adapter export), so the
 * page stays responsive. It exposes a `TrainerHost` (workers/trainer-host.ts) with comlink, given
 * the browser's WebGPU, the IndexedDB caches and the app's copy of the demo tokenizer.
 *
 * Every request the worker sends passes the host gate (src/util/net.ts, docs/architecture.md §9):
 * it is the worker's `fetch`, so no module can go around it, and a call may reach, while it runs,
 * only the app's own origin and the hosts its request names as entered by the person (a Hub URL,
 * a judge endpoint). The page's Content-Security-Policy does not reach a dedicated worker.
 */
import * as Comlink from 'comlink';
import { createEngine } from '../src/engine/engine.ts';
import { bundledKernelSources } from '../src/engine/kernel-files-vite.ts';
import type { TuningCache } from '../src/engine/tune.ts';
import { GpuUnavailableError, NlftError } from '../src/errors.ts';
import { type FileCache, hubHosts, NO_FILE_CACHE } from '../src/model/hub.ts';
import type { QuantFormat } from '../src/model/quant.ts';
import type { TrainRequest } from '../src/session/requests.ts';
import { openFileCache, openTuningCache } from '../src/storage/db.ts';
import { type HostChoice, hostGate } from '../src/util/net.ts';
import type {
  ModelSpec,
  PreparedItemCallback,
  PrepareRequest,
  ProgressCallback,
  ScoreDatasetRequest,
  TrainEventCallback,
} from './protocol.ts';
import { TrainerHost } from './trainer-host.ts';

const gate = hostGate();
self.fetch = gate.fetch;

const TOKENIZER_DIR = `${import.meta.env.BASE_URL}tokenizers/smollm2/`;

/** Used when IndexedDB cannot be opened (private mode): tuning is measured at every load. */
const NO_TUNING_CACHE: TuningCache = { get: async () => undefined, set: async () => undefined };

/** Fetches and parses one of the demo tokenizer's JSON files. */
async function fetchTokenizerFile(file: string): Promise<unknown> {
  const url = new URL(TOKENIZER_DIR + file, self.location.href).href;
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new NlftError(`Could not fetch ${url}: ${(e as Error).message}`, 'fetch');
  }
  if (!res.ok) throw new NlftError(`Could not fetch ${url}: HTTP ${res.status}`, 'fetch');
  try {
    return await res.json();
  } catch (e) {
    throw new NlftError(`${url} is not valid JSON: ${(e as Error).message}`, 'fetch');
  }
}

/** The error for a browser without usable WebGPU: what is missing, then what to try. */
function noWebGpu(detail: string): GpuUnavailableError {
  return new GpuUnavailableError(
    `WebGPU is not available in this browser: ${detail} Try a recent Chrome or Edge, with the app opened ` +
      `over https or from localhost (on Linux, Chrome may need chrome://flags/#enable-unsafe-webgpu).`,
  );
}

/** Opened once, on first use. */
let tuningCache: Promise<TuningCache> | null = null;
let fileCache: Promise<FileCache> | null = null;

/** The hosts a model spec names: a Hub model's Hub (the demo's folder is the app's own, picked files need none). */
function modelHosts(spec: ModelSpec | null): HostChoice[] {
  return spec?.kind === 'hub' ? hubHosts(spec.baseUrl) : [];
}

/** The host that lets each call reach, while it runs, the hosts its request names. */
class GatedTrainerHost extends TrainerHost {
  override loadModel(spec: ModelSpec, quant: QuantFormat, onProgress: ProgressCallback, options?: { measureKernels?: boolean }) {
    return gate.during(modelHosts(spec), () => super.loadModel(spec, quant, onProgress, options));
  }

  override scoreDataset(request: ScoreDatasetRequest, scorer: ModelSpec | null, onProgress: ProgressCallback) {
    return gate.during(modelHosts(scorer), () => super.scoreDataset(request, scorer, onProgress));
  }

  override train(request: TrainRequest, onEvent: TrainEventCallback, scorer: ModelSpec | null = null) {
    return gate.during(modelHosts(scorer), () => super.train(request, onEvent, scorer));
  }

  override prepare(request: PrepareRequest, onItem: PreparedItemCallback) {
    const judge = request.judge.kind === 'chat' ? [{ url: request.judge.url, chosenAs: 'the judge endpoint' }] : [];
    return gate.during(judge, () => super.prepare(request, onItem));
  }
}

const host = new GatedTrainerHost({
  async createEngine() {
    if (!navigator.gpu) throw noWebGpu('it has no navigator.gpu.');
    try {
      return await createEngine(navigator.gpu, bundledKernelSources());
    } catch (e) {
      throw e instanceof GpuUnavailableError ? noWebGpu(e.message) : e;
    }
  },
  tuningCache: () => (tuningCache ??= openTuningCache().catch(() => NO_TUNING_CACHE)),
  fileCache: () => (fileCache ??= openFileCache().catch(() => NO_FILE_CACHE)),
  demoTokenizerFile: fetchTokenizerFile,
  transfer: (value, buffers) => Comlink.transfer(value, buffers),
  release: (callback) => (callback as Partial<Comlink.Remote<unknown>>)[Comlink.releaseProxy]?.(),
  logBug: (e) => console.error('trainer worker:', e),
});

Comlink.expose(host);
