/**
 * The trainer worker: a dedicated module Worker that owns the GPU device and runs every GPU job
 * (model download and upload, scoring, training, adapter export), so the page stays responsive. It implements
 * `TrainerApi` (src/worker/protocol.ts) and is exposed with comlink.
 *
 * Calls run one at a time in arrival order. A failed call rejects with an `Error` named by the
 * error's code and carrying only its user-facing message (see `TrainerApi`).
 */
import * as Comlink from 'comlink';
import { createEngine, type Engine } from '../src/engine/engine.ts';
import { adapterName, describeAdapter } from '../src/engine/gpu.ts';
import { bundledKernelSources } from '../src/engine/kernel-files-vite.ts';
import { GpuLlama } from '../src/engine/llama.ts';
import { tuningFor, type TuningCache } from '../src/engine/tune.ts';
import type { LlamaConfig } from '../src/model/config.ts';
import { openFileCache, openTuningCache } from '../src/storage/db.ts';
import { formatBytes } from '../src/engine/buffers.ts';
import { DEFAULT_HUB_URL, HubSource, NO_FILE_CACHE, parseHubId, type FileCache } from '../src/model/hub.ts';
import { PickedFilesSource } from '../src/model/files-source.ts';
import { loadModelFolder } from '../src/model/loader.ts';
import type { FileSource } from '../src/model/source.ts';
import { parseDataset } from '../src/data/dataset.ts';
import { estimateTrainBytes, scoreBatchTokens } from '../src/engine/memory.ts';
import { ADAPTER_WEIGHTS_FILE, peftAdapterFiles, type PeftAdapterFiles } from '../src/export/peft.ts';
import { initLora, validateLoraConfig, type LoraConfig } from '../src/model/lora.ts';
import { DEFAULT_SCORE_BATCH_TOKENS } from '../src/nlft/method.ts';
import { checkSaliencyOptions } from '../src/nlft/saliency.ts';
import { parseTemplates } from '../src/nlft/templates.ts';
import { methodSamples, prepareRun } from '../src/session/train.ts';
import { checkpointBytes, CHECKPOINT_FILE, readCheckpoint } from '../src/train/checkpoint.ts';
import type { Checkpoint } from '../src/train/trainer.ts';
import { promptInput, scoringInput } from '../src/data/prompt.ts';
import { generate } from '../src/engine/generate.ts';
import { evaluate, summarize } from '../src/eval/accuracy.ts';
import { TextTokenizer } from '../src/data/tokenizer.ts';
import { GpuUnavailableError, ModelFormatError, NlftError } from '../src/errors.ts';
import { DEMO_MODEL_OPTIONS, makeTinyLlama } from '../src/model/demo.ts';
import { isQuantFormat, QUANT_FORMATS, type QuantFormat } from '../src/model/quant.ts';
import { baseModelBytes } from '../src/model/size.ts';
import { parameterCount, type LlamaWeights } from '../src/model/weights.ts';
import {
  CHECKPOINT_SECONDS,
  INTERNAL_ERROR,
  type AdapterInfo,
  type DeviceLostCallback,
  type EvalItemCallback,
  type GenerateRequest,
  type GenerateResult,
  type TextCallback,
  type MemoryInfo,
  type ModelInfo,
  type ModelSpec,
  type ProgressCallback,
  type ScoreRequest,
  type TokenScores,
  type TrainerApi,
  type TrainEventCallback,
} from './protocol.ts';
import type { EvalOutcome, EvalRequest, TrainOutcome, TrainRequest } from '../src/session/requests.ts';

const TOKENIZER_DIR = `${import.meta.env.BASE_URL}tokenizers/smollm2/`;
const DEMO_MODEL_NAME = `Demo Llama (random weights, seed ${DEMO_MODEL_OPTIONS.seed})`;
/** `base_model_name_or_path` of adapters trained on the demo model (it exists only in this app). */
const DEMO_MODEL_ID = `nlft-studio/demo-llama-seed-${DEMO_MODEL_OPTIONS.seed}`;

/** Used when IndexedDB cannot be opened (private mode): tuning is measured at every load. */
const NO_TUNING_CACHE: TuningCache = { get: async () => undefined, set: async () => undefined };

/** The stop signal and pause gate of a running `train`. */
interface RunControl {
  abort: AbortController;
  pause: { promise: Promise<void>; resume: () => void } | null;
}

/** A model resident on the GPU. */
interface LoadedModel {
  llama: GpuLlama;
  /** What trained adapters name as their base model (`base_model_name_or_path`). */
  id: string;
  info: Omit<ModelInfo, 'memory'>;
}

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

/**
 * The error as the page receives it: `name` is the `NlftError` code, or `INTERNAL_ERROR` for an
 * unexpected failure (a bug, logged here with its stack for developers).
 */
function wireError(e: unknown): Error {
  const message = e instanceof Error ? e.message : String(e);
  const err = new Error(message);
  if (e instanceof NlftError) {
    err.name = e.code;
  } else {
    console.error('trainer worker:', e);
    err.name = INTERNAL_ERROR;
  }
  return err;
}

/** The error for a browser without usable WebGPU: what is missing, then what to try. */
function noWebGpu(detail: string): GpuUnavailableError {
  return new GpuUnavailableError(
    `WebGPU is not available in this browser: ${detail} Try a recent Chrome or Edge, with the app opened over https or from localhost (on Linux, Chrome may need chrome://flags/#enable-unsafe-webgpu).`,
  );
}

/** Drops the page-side end of a `Comlink.proxy` callback once the worker is done with it. */
function release(callback: object): void {
  (callback as Partial<Comlink.Remote<unknown>>)[Comlink.releaseProxy]?.();
}

/** The worker's state and the calls of `TrainerApi`; helpers are `#private`, out of comlink's reach. */
class TrainerWorker implements TrainerApi {
  #engine: Engine | null = null;
  #adapter: AdapterInfo | null = null;
  #tokenizer: TextTokenizer | null = null;
  #demoWeights: LlamaWeights | null = null;
  #demoTokenizer: TextTokenizer | null = null;
  #fileCache: FileCache | null = null;
  #model: LoadedModel | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #tuningCache: TuningCache | null = null;
  /** The running `train`'s stop signal and pause gate. */
  #run: RunControl | null = null;
  /** The adapters' settings of the last run that trained (for the export). */
  #trained: LoraConfig | null = null;
  /** Ends the running `evaluate`. */
  #evalAbort: AbortController | null = null;

  /** Runs `job` after every earlier call has settled; its error is rethrown in wire form. */
  #serial<T>(job: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(job).catch((e: unknown) => {
      throw wireError(e);
    });
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** The engine, checked to still have its device. */
  #live(): Engine {
    if (!this.#engine) throw new NlftError('The GPU is not initialised yet.', 'not-ready');
    this.#engine.ctx.check();
    return this.#engine;
  }

  /** The engine with a model and its tokenizer loaded, or a `not-ready` error. */
  #loaded(): { engine: Engine; model: LoadedModel; tok: TextTokenizer } {
    const engine = this.#live();
    const model = this.#model;
    const tok = this.#tokenizer;
    if (!model || !tok) throw new NlftError('No model is loaded yet.', 'not-ready');
    return { engine, model, tok };
  }

  #memoryInfo(): MemoryInfo {
    const { current, peak } = this.#live().buffers;
    return { currentBytes: current, peakBytes: peak };
  }

  init(onDeviceLost: DeviceLostCallback): Promise<AdapterInfo> {
    return this.#serial(async () => {
      if (this.#adapter) {
        release(onDeviceLost);
        return this.#adapter;
      }
      let engine: Engine;
      try {
        if (!navigator.gpu) throw noWebGpu('it has no navigator.gpu.');
        engine = await createEngine(navigator.gpu, bundledKernelSources());
      } catch (e) {
        release(onDeviceLost);
        throw e instanceof GpuUnavailableError && navigator.gpu ? noWebGpu(e.message) : e;
      }
      void engine.ctx.lost.then((err) => onDeviceLost(err.message));
      this.#engine = engine;
      const summary = engine.ctx.adapter;
      this.#adapter = { name: adapterName(summary), details: describeAdapter(summary), summary };
      return this.#adapter;
    });
  }

  loadModel(spec: ModelSpec, quant: QuantFormat, onProgress: ProgressCallback): Promise<ModelInfo> {
    return this.#serial(async () => {
      try {
        if (!isQuantFormat(quant)) throw new NlftError(`Unknown weight format "${quant}" (expected ${QUANT_FORMATS.join(', ')})`, 'usage');
        const engine = this.#live();
        const { weights, tokenizer, name, id } = await this.#weightsOf(spec, onProgress);
        const config = weights.config;
        const kernels = await this.#tune(engine, config, quant, (f) =>
          onProgress({ stage: 'Measuring kernel speed on this GPU (first use only)', fraction: 0.55 + 0.1 * f }),
        );

        onProgress({ stage: `Quantizing (${quant}) and uploading to the GPU`, fraction: 0.65 });
        this.#unloadModel();
        const llama = GpuLlama.create(engine.ops, weights, quant);
        this.#tokenizer = tokenizer;
        this.#model = {
          llama,
          id,
          info: {
            name,
            quant,
            parameters: parameterCount(config),
            layers: config.numLayers,
            hiddenSize: config.hiddenSize,
            vocabSize: config.vocabSize,
            weightBytes: baseModelBytes(config, quant),
            kernels,
          },
        };
        engine.buffers.resetPeak();

        onProgress({ stage: 'Compiling the kernels', fraction: 0.85 });
        const bos = config.bosTokenId ?? 0;
        await llama.responseLogProbs([bos], [bos]);
        onProgress({ stage: 'Ready', fraction: 1 });
        return { ...this.#model.info, memory: this.#memoryInfo() };
      } finally {
        release(onProgress);
      }
    });
  }

  /** The f32 weights and tokenizer of a model, with a name to show and the id adapters record as their base. */
  async #weightsOf(
    spec: ModelSpec,
    onProgress: ProgressCallback,
  ): Promise<{ weights: LlamaWeights; tokenizer: TextTokenizer; name: string; id: string }> {
    if (spec.kind === 'demo') {
      onProgress({ stage: 'Generating the demo weights', fraction: 0.05 });
      this.#demoWeights ??= makeTinyLlama(DEMO_MODEL_OPTIONS);
      onProgress({ stage: 'Loading the tokenizer', fraction: 0.35 });
      this.#demoTokenizer ??= TextTokenizer.fromJson(
        await fetchTokenizerFile('tokenizer.json'),
        await fetchTokenizerFile('tokenizer_config.json'),
      );
      return { weights: this.#demoWeights, tokenizer: this.#demoTokenizer, name: DEMO_MODEL_NAME, id: DEMO_MODEL_ID };
    }
    let source: FileSource;
    let id: string;
    if (spec.kind === 'hub') {
      const ref = parseHubId(spec.id.trim());
      if (!ref) throw new NlftError(`"${spec.id}" is not a Hub model id: expected org/name or org/name@revision`, 'usage');
      this.#fileCache ??= await openFileCache().catch(() => NO_FILE_CACHE);
      const onDownload = (file: string, loaded: number, total: number | null) =>
        onProgress({
          stage: `Downloading ${file}: ${formatBytes(loaded)}${total === null ? '' : ` of ${formatBytes(total)}`}`,
          fraction: 0.05 + 0.2 * (total ? loaded / total : 0),
        });
      source = new HubSource(ref, { baseUrl: spec.baseUrl.trim() || DEFAULT_HUB_URL, cache: this.#fileCache, onDownload });
      id = ref.revision === 'main' ? ref.repo : `${ref.repo}@${ref.revision}`;
    } else {
      source = new PickedFilesSource(spec.files, spec.label);
      id = spec.label;
    }
    onProgress({ stage: `Reading ${source.label}`, fraction: 0.05 });
    const loaded = await loadModelFolder(source, {
      onProgress: (done, total) => onProgress({ stage: 'Reading the weights', fraction: 0.25 + 0.3 * (total ? done / total : 1) }),
    });
    if (!loaded.tokenizerJson)
      throw new ModelFormatError('tokenizer.json', undefined, `not found in ${source.label}; the app needs the model's tokenizer`);
    return {
      weights: loaded.weights,
      tokenizer: TextTokenizer.fromJson(loaded.tokenizerJson, loaded.tokenizerConfig ?? {}),
      name: source.label,
      id,
    };
  }

  /**
   * Switches the engine to the tile shapes for this adapter and model: cached in IndexedDB, or
   * measured now (first use; a few seconds) and cached. Returns a line for the model facts.
   */
  async #tune(engine: Engine, c: LlamaConfig, quant: QuantFormat, onFraction: (f: number) => void): Promise<string> {
    this.#tuningCache ??= await openTuningCache().catch(() => NO_TUNING_CACHE);
    const { tuning, source } = await tuningFor(
      engine,
      this.#tuningCache,
      { C: c.hiddenSize, F: c.intermediateSize, V: c.vocabSize },
      quant,
      onFraction,
    );
    engine.useTuning(tuning);
    const tile = (t: { TM: number; TN: number }) => `${t.TM}×${t.TN}`;
    return `matmul ${tile(tuning.matmul)}, lm-head ${tile(tuning.lmhead)} (${{ measured: 'measured now', cached: 'measured earlier on this GPU', default: 'defaults' }[source]})`;
  }

  /** Frees the GPU buffers of the loaded model, if any. */
  #unloadModel(): void {
    if (!this.#model || !this.#engine) return;
    this.#model.llama.destroy();
    this.#model = null;
    this.#trained = null;
  }

  logprobs(request: ScoreRequest): Promise<TokenScores> {
    return this.#serial(async () => {
      const { model, tok: tokenizer } = this.#loaded();
      const { promptIds, responseIds: ids } = scoringInput(tokenizer, request.prompt, request.response, { chat: request.chat });
      const start = performance.now();
      const logp = await model.llama.responseLogProbs(promptIds, ids);
      return {
        promptTokens: promptIds.length,
        ids,
        texts: ids.map((id) => tokenizer.tokenText(id)),
        logprobs: Array.from(logp),
        millis: performance.now() - start,
      };
    });
  }

  memory(): Promise<MemoryInfo> {
    return this.#serial(async () => this.#memoryInfo());
  }

  evaluate(request: EvalRequest, onItem: EvalItemCallback): Promise<EvalOutcome> {
    return this.#serial(async () => {
      try {
        const { model, tok } = this.#loaded();
        const records = parseDataset(request.data.bytes, request.data.name).records.slice(0, request.limit);
        const abort = new AbortController();
        this.#evalAbort = abort;
        const items = await evaluate(
          model.llama,
          tok,
          records,
          { maxNewTokens: request.maxNewTokens, temperature: 0, seed: 0, signal: abort.signal },
          (item, done) => onItem(item, done, records.length),
        );
        const t = this.#trained;
        const label = `${model.info.name}, ${model.info.quant}, ${t ? `trained adapter (r ${t.r} on ${t.targets.join(',')})` : 'no adapter'}; ${request.data.name}, greedy, up to ${request.maxNewTokens} tokens`;
        return { label, at: new Date().toISOString(), summary: summarize(items), items, stopped: items.length < records.length };
      } finally {
        this.#evalAbort = null;
        release(onItem);
      }
    });
  }

  async stopEvaluation(): Promise<void> {
    this.#evalAbort?.abort();
  }

  generate(request: GenerateRequest, onText: TextCallback): Promise<GenerateResult> {
    return this.#serial(async () => {
      try {
        const { model, tok } = this.#loaded();
        const { promptIds } = promptInput(tok, request.prompt, { chat: request.chat });
        if (promptIds.length === 0) throw new NlftError('The prompt is empty: type a question first.', 'empty-prompt');
        const stop = new Set(tok.eosTokenIds);
        const ids: number[] = [];
        const start = performance.now();
        const r = await generate(model.llama, promptIds, {
          maxNewTokens: request.maxNewTokens,
          temperature: request.temperature,
          seed: request.seed,
          stopIds: tok.eosTokenIds,
          onToken: (id) => {
            if (stop.has(id)) return;
            ids.push(id);
            onText(tok.decode(ids));
          },
        });
        return { text: tok.decode(ids), tokens: r.ids.length, reason: r.reason, millis: performance.now() - start };
      } finally {
        release(onText);
      }
    });
  }

  train(request: TrainRequest, onEvent: TrainEventCallback): Promise<TrainOutcome> {
    return this.#serial(async () => {
      try {
        const { engine, model, tok } = this.#loaded();
        const { method, maxLen, saliency } = request;
        let { train, lora } = request;
        let resumeFrom: Checkpoint | null = null;
        if (request.resume) {
          const want = request.resume.model;
          if (want.id !== model.id || want.quant !== model.info.quant) {
            throw new NlftError(
              `This run trained ${want.id} with ${want.quant} weights; load that model (now ${model.id}, ${model.info.quant}) to continue it.`,
              'usage',
            );
          }
          const saved = await readCheckpoint(
            new PickedFilesSource([new File([request.resume.checkpoint as BlobPart], CHECKPOINT_FILE)], 'the saved run'),
          );
          ({ lora } = saved);
          train = saved.checkpoint.config;
          resumeFrom = saved.checkpoint;
        }
        validateLoraConfig(lora);
        checkSaliencyOptions(saliency);
        const templates = parseTemplates(request.templates, 'NLFT templates');
        const records = parseDataset(request.data.bytes, request.data.name, { requireOutput: method === 'nlft' }).records;
        const { samples, truncated } = methodSamples(method, records, tok, templates, maxLen);
        const longest = Math.max(...samples.map((s) => s.promptIds.length + s.responseIds.length));
        const c = model.llama.config;
        const activations = estimateTrainBytes(c, model.info.quant, lora, longest - 1, longest, train.recompute).activations;
        const packTokens = Math.min(
          DEFAULT_SCORE_BATCH_TOKENS,
          scoreBatchTokens(c, lora, activations, engine.ctx.device.limits.maxStorageBufferBindingSize),
        );
        model.llama.setLora(initLora(c, lora, train.seed));
        this.#trained = null;
        engine.buffers.resetPeak();
        const run: RunControl = { abort: new AbortController(), pause: null };
        this.#run = run;
        const { trainer, summary, takeEntries } = await prepareRun(engine, model.llama, samples, {
          method,
          train,
          saliency,
          tokenText: (id) => tok.tokenText(id),
          scoreBatchTokens: packTokens,
          onScoring: (done, total) => onEvent({ type: 'scoring', done, total }),
        });
        try {
          if (resumeFrom) await trainer.restore(resumeFrom);
          const fromStep = trainer.state.step;
          onEvent({
            type: 'started',
            totalSteps: trainer.totalSteps,
            records: records.length,
            truncated,
            summary,
            model: { id: model.id, quant: model.info.quant },
            fromStep,
          });
          let lastCheckpoint = performance.now();
          const checkpoint = async () => {
            const bytes = checkpointBytes(await trainer.checkpoint(), lora);
            onEvent(Comlink.transfer({ type: 'checkpoint', step: trainer.state.step, bytes }, [bytes.buffer as ArrayBuffer]));
            lastCheckpoint = performance.now();
          };
          const end = await trainer.run({
            signal: run.abort.signal,
            async paused() {
              if (!run.pause) return;
              await checkpoint(); // a paused tab may be closed
              onEvent({ type: 'paused', step: trainer.state.step });
              await run.pause.promise;
            },
            async onStep(metrics) {
              onEvent({ type: 'step', metrics, entries: takeEntries() });
              if (performance.now() - lastCheckpoint > CHECKPOINT_SECONDS * 1000) await checkpoint();
            },
          });
          if (end.steps > fromStep) await checkpoint();
          if (end.steps > 0) this.#trained = lora;
          return {
            status: end.status,
            steps: end.steps,
            totalSteps: trainer.totalSteps,
            message: end.status === 'non-finite' ? end.message : null,
          };
        } finally {
          trainer.destroy();
        }
      } finally {
        this.#run = null;
        release(onEvent);
      }
    });
  }

  async setPaused(paused: boolean): Promise<void> {
    const run = this.#run;
    if (!run) return;
    if (paused && !run.pause) {
      let resume = () => {};
      const promise = new Promise<void>((r) => (resume = r));
      run.pause = { promise, resume };
    } else if (!paused && run.pause) {
      run.pause.resume();
      run.pause = null;
    }
  }

  async stopTraining(): Promise<void> {
    const run = this.#run;
    if (!run) return;
    run.abort.abort();
    await this.setPaused(false);
  }

  exportAdapter(): Promise<PeftAdapterFiles> {
    return this.#serial(async () => {
      this.#live();
      const lora = this.#model?.llama.lora;
      if (!this.#trained || !lora)
        throw new NlftError('No trained adapter to export: train first (a new model load drops the adapter).', 'not-ready');
      const files = peftAdapterFiles(await lora.read(), this.#trained, { baseModel: this.#model!.id });
      return Comlink.transfer(files, [files[ADAPTER_WEIGHTS_FILE].buffer as ArrayBuffer]);
    });
  }
}

Comlink.expose(new TrainerWorker());
