/**
 * The trainer worker's calls (`TrainerApi`, workers/protocol.ts) as a class that runs wherever its
 * dependencies are given: in the Worker (workers/trainer.worker.ts: WebGPU from `navigator.gpu`,
 * IndexedDB caches, the demo tokenizer fetched from the app, comlink transfers) and in Node for
 * tests (Dawn, in-memory caches). A thin host: the recipes of training, evaluation, generation and
 * scoring are the session's (src/session/); this class holds the loaded model, queues the calls,
 * turns requests into session calls and events into callbacks, and errors into their wire form.
 *
 * Calls run one at a time in arrival order. A failed call rejects with an `Error` named by the
 * error's code and carrying only its user-facing message (see `TrainerApi`).
 */
import { TextTokenizer } from '../src/data/tokenizer.ts';
import { formatBytes } from '../src/engine/buffers.ts';
import type { Engine } from '../src/engine/engine.ts';
import { adapterName, describeAdapter } from '../src/engine/gpu.ts';
import { GpuLlama } from '../src/engine/llama.ts';
import type { TuningCache } from '../src/engine/tune.ts';
import { DeviceLostError, NlftError } from '../src/errors.ts';
import type { DatasetScores } from '../src/nlft/method.ts';
import { GGUF_ADAPTER_FILE, ggufLoraAdapter } from '../src/export/gguf.ts';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, type PeftAdapterFiles, peftAdapterFiles, readPeftAdapter } from '../src/export/peft.ts';
import { DEMO_MODEL_OPTIONS, makeTinyLlama } from '../src/model/demo.ts';
import { PickedFilesSource } from '../src/model/files-source.ts';
import { HttpFolderSource } from '../src/model/http-source.ts';
import { DEFAULT_HUB_URL, type FileCache, HubSource, parseHubId } from '../src/model/hub.ts';
import type { LoraConfig } from '../src/model/lora.ts';
import { isQuantFormat, QUANT_FORMATS, type QuantFormat } from '../src/model/quant.ts';
import { baseModelBytes } from '../src/model/size.ts';
import type { FileSource } from '../src/model/source.ts';
import { type LlamaWeights, parameterCount } from '../src/model/weights.ts';
import { parseDataset } from '../src/data/dataset.ts';
import type { DatasetSummary } from '../src/data/summary.ts';
import { type NlftTemplates, parseTemplates } from '../src/nlft/templates.ts';
import { readJsonFile } from '../src/model/loader.ts';
import { generateText, recordsSummary, runEvaluation, scoreResponse } from '../src/session/jobs.ts';
import { type PrepareOutcome, type PrepareRequest, runPreparation } from '../src/session/prepare.ts';
import { describeTuning, openModel, tuneEngine } from '../src/session/model.ts';
import type { DatasetFile, EvalOutcome, EvalRequest, TrainEvent, TrainOutcome, TrainRequest } from '../src/session/requests.ts';
import { scoreWithScorer } from '../src/session/scorer.ts';
import { type ScoreDatasetRequest, type ScoredDataset, type ScorerWeights, scoreDataset } from '../src/session/scoring.ts';
import { planTraining, runTraining } from '../src/session/train.ts';
import {
  type AdapterInfo,
  type AdapterInUse,
  CHECKPOINT_SECONDS,
  type DeviceLostCallback,
  type EvalItemCallback,
  type GenerateRequest,
  type GenerateResult,
  INTERNAL_ERROR,
  type MemoryInfo,
  type ModelInfo,
  type ModelSpec,
  type PreparedItemCallback,
  type ProgressCallback,
  type ScoreRequest,
  type TextCallback,
  type TokenScores,
  type TrainerApi,
  type TrainEventCallback,
  type UseAdapterRequest,
} from './protocol.ts';

const DEMO_MODEL_NAME = `stress model (seed ${DEMO_MODEL_OPTIONS.seed})`;
/** `base_model_name_or_path` of adapters trained on the stress model (it exists only in this app). */
export const DEMO_MODEL_ID = `nlft-studio/demo-llama-seed-${DEMO_MODEL_OPTIONS.seed}`;

/** What the host needs from where it runs. */
export interface TrainerHostDeps {
  /** The engine on this platform's GPU (throws `GpuUnavailableError` with what is missing). */
  createEngine(): Promise<Engine>;
  /** Where measured kernel tiles are kept. */
  tuningCache(): Promise<TuningCache>;
  /** Where Hub downloads are kept. */
  fileCache(): Promise<FileCache>;
  /** One of the demo tokenizer's JSON files (`tokenizer.json`, `tokenizer_config.json`), parsed. */
  demoTokenizerFile(file: string): Promise<unknown>;
  /** Marks `buffers` of a value to be moved, not copied, to the page (comlink's `transfer`; identity elsewhere). */
  transfer<T>(value: T, buffers: ArrayBuffer[]): T;
  /** Drops the page's end of a callback once the host is done with it. */
  release(callback: object): void;
  /** Logs an unexpected failure (a bug) with its stack, for developers. */
  logBug(e: unknown): void;
}

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
  /** Its parsed `tokenizer.json` (a scorer's vocabulary is checked against it). */
  tokenizerJson: unknown;
}

/** A model's f32 weights and tokenizer as read, before any upload. */
interface ModelFiles {
  weights: LlamaWeights;
  tokenizer: TextTokenizer;
  tokenizerJson: unknown;
  /** The name to show. */
  name: string;
  /** What adapters trained on it record as their base model. */
  id: string;
  /** The view texts of its `templates.json`, if any, or why they were not taken. */
  templates: ModelTemplates;
}

/** A model folder's `templates.json`: its texts, or why they were not taken. */
type ModelTemplates = Pick<ModelInfo, 'templates' | 'templatesProblem'>;

/** The name of the NLFT view texts file a model folder may hold beside its weights (the CLI's `--templates` format). */
const MODEL_TEMPLATES_FILE = 'templates.json';

/**
 * The view texts of the `templates.json` in `source`, if it has one. A file that is unreadable or
 * not a templates file is not taken, and the reason (naming the file and field) is kept for the
 * page; an unreachable server counts as no file (a Hub model loads offline from the cache).
 */
async function readModelTemplates(source: FileSource): Promise<ModelTemplates> {
  try {
    if ((await source.size(MODEL_TEMPLATES_FILE)) === null) return { templates: null, templatesProblem: null };
    const templates: NlftTemplates = parseTemplates(
      await readJsonFile(source, MODEL_TEMPLATES_FILE),
      `${source.label}/${MODEL_TEMPLATES_FILE}`,
    );
    return { templates, templatesProblem: null };
  } catch (e) {
    if (!(e instanceof NlftError) || e.code === 'fetch') return { templates: null, templatesProblem: null };
    return { templates: null, templatesProblem: e.message };
  }
}

/** The worker's state and the calls of `TrainerApi`; helpers are `#private`, out of comlink's reach. */
export class TrainerHost implements TrainerApi {
  readonly #deps: TrainerHostDeps;
  #engine: Engine | null = null;
  #adapter: AdapterInfo | null = null;
  #tokenizer: TextTokenizer | null = null;
  #demoWeights: LlamaWeights | null = null;
  #demoTokenizer: TextTokenizer | null = null;
  #model: LoadedModel | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  /** The running `train`'s stop signal and pause gate. */
  #run: RunControl | null = null;
  /** The adapters' settings of the last run that trained (for the export and evaluation labels). */
  #trained: LoraConfig | null = null;
  /** Ends the running `evaluate`. */
  #evalAbort: AbortController | null = null;
  /** Ends the running `scoreDataset`. */
  #scoreAbort: AbortController | null = null;
  /** Ends the running `prepare`. */
  #prepareAbort: AbortController | null = null;
  /** The demo tokenizer's parsed `tokenizer.json` (fetched once). */
  #demoTokenizerJson: unknown = null;

  constructor(deps: TrainerHostDeps) {
    this.#deps = deps;
  }

  /**
   * Runs `job` after every earlier call has settled; its error is rethrown in wire form. A job that
   * failed because the device was lost (a GPU call refused after a GPU process crash) says so, not
   * what the refused call printed.
   */
  #serial<T>(job: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(job).catch(async (e: unknown) => {
      const loss = e instanceof DeviceLostError ? null : await this.#engine?.ctx.lossSoFar();
      throw this.#wireError(loss ?? e);
    });
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /**
   * The error as the page receives it: `name` is the `NlftError` code, or `INTERNAL_ERROR` for an
   * unexpected failure (logged with its stack).
   */
  #wireError(e: unknown): Error {
    const err = new Error(e instanceof Error ? e.message : String(e));
    if (e instanceof NlftError) {
      err.name = e.code;
    } else {
      this.#deps.logBug(e);
      err.name = INTERNAL_ERROR;
    }
    return err;
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
      if (this.#adapter && !(await this.#engine?.ctx.lossSoFar())) {
        this.#deps.release(onDeviceLost);
        return this.#adapter;
      }
      // The first call, or the device was lost: a new device. The model on the lost one is gone (load it again).
      this.#model = null;
      this.#trained = null;
      let engine: Engine;
      try {
        engine = await this.#deps.createEngine();
      } catch (e) {
        this.#deps.release(onDeviceLost);
        throw e;
      }
      void engine.ctx.lost.then((err) => onDeviceLost(err.message));
      this.#engine = engine;
      const summary = engine.ctx.adapter;
      this.#adapter = { name: adapterName(summary), details: describeAdapter(summary), summary };
      return this.#adapter;
    });
  }

  loadModel(
    spec: ModelSpec,
    quant: QuantFormat,
    onProgress: ProgressCallback,
    options: { measureKernels?: boolean } = {},
  ): Promise<ModelInfo> {
    return this.#serial(async () => {
      try {
        if (!isQuantFormat(quant)) throw new NlftError(`Unknown weight format "${quant}" (expected ${QUANT_FORMATS.join(', ')})`, 'usage');
        const engine = this.#live();
        const { weights, tokenizer, tokenizerJson, name, id, templates } = await this.#weightsOf(spec, onProgress);
        const config = weights.config;
        const stage = options.measureKernels ? 'Measuring kernel speed on this GPU' : 'Measuring kernel speed on this GPU (first use only)';
        const tuned = await tuneEngine(engine, await this.#deps.tuningCache(), config, quant, {
          onProgress: (f) => onProgress({ stage, fraction: 0.55 + 0.1 * f }),
          measure: options.measureKernels,
        });
        const kernels = describeTuning(tuned.tuning, tuned.source);

        onProgress({ stage: `Quantizing (${quant}) and uploading to the GPU`, fraction: 0.65 });
        this.#unloadModel();
        const llama = GpuLlama.create(engine.ops, weights, quant);
        this.#tokenizer = tokenizer;
        this.#model = {
          llama,
          id,
          tokenizerJson,
          info: {
            name,
            quant,
            parameters: parameterCount(config),
            layers: config.numLayers,
            hiddenSize: config.hiddenSize,
            vocabSize: config.vocabSize,
            weightBytes: baseModelBytes(config, quant),
            kernels,
            ...templates,
          },
        };
        engine.buffers.resetPeak();

        onProgress({ stage: 'Compiling the kernels', fraction: 0.85 });
        const bos = config.bosTokenId ?? 0;
        await llama.responseLogProbs([bos], [bos]);
        onProgress({ stage: 'Ready', fraction: 1 });
        return { ...this.#model.info, memory: this.#memoryInfo() };
      } finally {
        this.#deps.release(onProgress);
      }
    });
  }

  /** The f32 weights and tokenizer of a model, with a name to show and the id adapters record as their base. */
  async #weightsOf(spec: ModelSpec, onProgress: ProgressCallback): Promise<ModelFiles> {
    if (spec.kind === 'stress') {
      onProgress({ stage: 'Generating the demo weights', fraction: 0.05 });
      this.#demoWeights ??= makeTinyLlama(DEMO_MODEL_OPTIONS);
      onProgress({ stage: 'Loading the tokenizer', fraction: 0.35 });
      this.#demoTokenizerJson ??= await this.#deps.demoTokenizerFile('tokenizer.json');
      this.#demoTokenizer ??= TextTokenizer.fromJson(this.#demoTokenizerJson, await this.#deps.demoTokenizerFile('tokenizer_config.json'));
      const tokenizerJson = this.#demoTokenizerJson;
      const templates = { templates: null, templatesProblem: null };
      return {
        weights: this.#demoWeights,
        tokenizer: this.#demoTokenizer,
        tokenizerJson,
        name: DEMO_MODEL_NAME,
        id: DEMO_MODEL_ID,
        templates,
      };
    }
    let source: FileSource;
    let id: string;
    if (spec.kind === 'hub') {
      const ref = parseHubId(spec.id.trim());
      if (!ref) throw new NlftError(`"${spec.id}" is not a Hub model id: expected org/name or org/name@revision`, 'usage');
      const onDownload = (file: string, loaded: number, total: number | null) =>
        onProgress({
          stage: `Downloading ${file}: ${formatBytes(loaded)}${total === null ? '' : ` of ${formatBytes(total)}`}`,
          fraction: 0.05 + 0.2 * (total ? loaded / total : 0),
        });
      const cache = await this.#deps.fileCache();
      source = new HubSource(ref, { baseUrl: spec.baseUrl.trim() || DEFAULT_HUB_URL, cache, onDownload });
      id = ref.revision === 'main' ? ref.repo : `${ref.repo}@${ref.revision}`;
    } else if (spec.kind === 'url') {
      source = new HttpFolderSource(spec.url, spec.name);
      id = spec.name;
    } else {
      source = new PickedFilesSource(spec.files, spec.label);
      id = spec.label;
    }
    onProgress({ stage: `Reading ${source.label}`, fraction: 0.05 });
    const { model, tok } = await openModel(source, 'the app', (done, total) =>
      onProgress({ stage: 'Reading the weights', fraction: 0.25 + 0.3 * (total ? done / total : 1) }),
    );
    const templates = await readModelTemplates(source);
    return { weights: model.weights, tokenizer: tok, tokenizerJson: model.tokenizerJson, name: source.label, id, templates };
  }

  /**
   * A scorer's weights read for one job (docs/method.md §3.2), in the loaded model's weight format;
   * its loading stages go to `onProgress` within [0, `upTo`].
   */
  async #scorerOf(spec: ModelSpec, quant: QuantFormat, onProgress: ProgressCallback, upTo: number): Promise<ScorerWeights> {
    const files = await this.#weightsOf(spec, (p) => onProgress({ stage: `Scorer: ${p.stage}`, fraction: p.fraction * upTo }));
    return { id: files.id, weights: files.weights, quant, tokenizerJson: files.tokenizerJson };
  }

  /** Frees the GPU buffers of the loaded model, if any. */
  #unloadModel(): void {
    if (!this.#model || !this.#engine) return;
    this.#model.llama.destroy();
    this.#model = null;
    this.#trained = null;
  }

  async summarizeData(data: DatasetFile, maxLen: number): Promise<DatasetSummary> {
    const tok = this.#tokenizer;
    if (!tok) throw this.#wireError(new NlftError('No model is loaded yet.', 'not-ready'));
    try {
      return recordsSummary(parseDataset(data.bytes, data.name).records, tok, maxLen);
    } catch (e) {
      throw this.#wireError(e);
    }
  }

  logprobs(request: ScoreRequest): Promise<TokenScores> {
    return this.#serial(async () => {
      const { model, tok } = this.#loaded();
      const start = performance.now();
      const scores = await scoreResponse(model.llama, tok, request);
      return { ...scores, millis: performance.now() - start };
    });
  }

  memory(): Promise<MemoryInfo> {
    return this.#serial(async () => this.#memoryInfo());
  }

  evaluate(request: EvalRequest, onItem: EvalItemCallback): Promise<EvalOutcome> {
    return this.#serial(async () => {
      try {
        const { model, tok } = this.#loaded();
        const abort = new AbortController();
        this.#evalAbort = abort;
        return await runEvaluation(
          { llama: model.llama, tok, name: model.info.name, quant: model.info.quant, trained: this.#trained },
          request,
          { signal: abort.signal, check: this.#live().ctx.check, onItem },
        );
      } finally {
        this.#evalAbort = null;
        this.#deps.release(onItem);
      }
    });
  }

  async stopEvaluation(): Promise<void> {
    this.#evalAbort?.abort();
  }

  prepare(request: PrepareRequest, onItem: PreparedItemCallback): Promise<PrepareOutcome> {
    return this.#serial(async () => {
      try {
        const { model, tok } = this.#loaded();
        const abort = new AbortController();
        this.#prepareAbort = abort;
        return await runPreparation({ llama: model.llama, tok, name: `${model.info.name}, ${model.info.quant}` }, request, {
          signal: abort.signal,
          onItem,
        });
      } finally {
        this.#prepareAbort = null;
        this.#deps.release(onItem);
      }
    });
  }

  async stopPreparation(): Promise<void> {
    this.#prepareAbort?.abort();
  }

  generate(request: GenerateRequest, onText: TextCallback): Promise<GenerateResult> {
    return this.#serial(async () => {
      try {
        const { model, tok } = this.#loaded();
        const start = performance.now();
        const r = await generateText(model.llama, tok, request, onText);
        return { ...r, millis: performance.now() - start };
      } finally {
        this.#deps.release(onText);
      }
    });
  }

  scoreDataset(request: ScoreDatasetRequest, scorer: ModelSpec | null, onProgress: ProgressCallback): Promise<ScoredDataset | null> {
    return this.#serial(async () => {
      const abort = new AbortController();
      this.#scoreAbort = abort;
      const { llama } = this.#model ?? {};
      const adapters = llama?.lora ?? null;
      try {
        const { engine, model, tok } = this.#loaded();
        const loadShare = scorer ? 0.3 : 0;
        const scorerWeights = scorer ? await this.#scorerOf(scorer, model.info.quant, onProgress, loadShare) : null;
        const stage = `Scoring the records under the three views${scorerWeights ? ` with the scorer ${scorerWeights.id}` : ''}`;
        model.llama.lora = null; // scored as training starts: the base model (fresh adapters add nothing)
        const job = await scoreDataset(
          engine,
          { llama: model.llama, tok, name: model.info.name, lora: null, tokenizerJson: model.tokenizerJson },
          request,
          scorerWeights,
          {
            signal: abort.signal,
            onProgress: (done, total) =>
              onProgress({ stage: `${stage}: ${done}/${total}`, fraction: loadShare + (1 - loadShare) * (done / total) }),
          },
        );
        if (!job) return null;
        const arrays = job.scored.scores.records.flatMap((r) => [
          r.logpb,
          r.log1mpb,
          r.logpc,
          r.logpj,
          r.hb,
          r.anchor?.logp,
          r.anchor?.log1mq,
        ]);
        return this.#deps.transfer(
          job.scored,
          arrays.flatMap((a) => (a ? [a.buffer as ArrayBuffer] : [])),
        );
      } finally {
        if (llama) llama.lora = adapters;
        this.#scoreAbort = null;
        this.#deps.release(onProgress);
      }
    });
  }

  async stopScoring(): Promise<void> {
    this.#scoreAbort?.abort();
  }

  train(request: TrainRequest, onEvent: TrainEventCallback, scorer: ModelSpec | null = null): Promise<TrainOutcome> {
    return this.#serial(async () => {
      try {
        const { engine, model, tok } = this.#loaded();
        const runModel = { id: model.id, quant: model.info.quant };
        const plan = await planTraining(request, { config: model.llama.config, ...runModel }, tok);
        if (plan.scorer && !scorer)
          throw new NlftError(
            `scorer ${plan.scorer}: its files are not at hand; choose it again in the Saliency explorer's scorer slot, then train`,
            'scorer',
          );
        this.#trained = null;
        const run: RunControl = { abort: new AbortController(), pause: null };
        this.#run = run;
        const send = (ev: TrainEvent) => {
          onEvent(ev.type === 'checkpoint' ? this.#deps.transfer(ev, [ev.bytes.buffer as ArrayBuffer]) : ev);
        };
        // A scorer scores first and is freed before training (docs/method.md §3.2).
        let scored: DatasetScores | null = null;
        if (plan.scorer && scorer) {
          const weights = await this.#scorerOf(scorer, runModel.quant, () => undefined, 1);
          const files = { config: weights.weights.config, weights: weights.weights, tokenizerJson: weights.tokenizerJson };
          const opened = { model: files, id: plan.scorer, quant: runModel.quant };
          scored = await scoreWithScorer(engine, { model: { tokenizerJson: model.tokenizerJson } }, opened, plan, { onEvent: send });
        }
        const { end, totalSteps } = await runTraining(
          engine,
          model.llama,
          tok,
          plan,
          {
            onEvent: send,
            model: runModel,
            signal: run.abort.signal,
            pauseGate: () => run.pause?.promise ?? null,
            checkpointSeconds: CHECKPOINT_SECONDS,
          },
          scored,
        );
        if (end.steps > 0) this.#trained = plan.lora;
        return { status: end.status, steps: end.steps, totalSteps, message: end.status === 'non-finite' ? end.message : null };
      } finally {
        this.#run = null;
        this.#deps.release(onEvent);
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
      const files = peftAdapterFiles(await lora.read(), this.#trained, { baseModel: this.#model!.id, model: this.#model!.llama.config });
      const gguf = files[GGUF_ADAPTER_FILE];
      return this.#deps.transfer(files, [files[ADAPTER_WEIGHTS_FILE].buffer as ArrayBuffer, ...(gguf ? [gguf.buffer as ArrayBuffer] : [])]);
    });
  }

  useAdapter(request: UseAdapterRequest | null): Promise<AdapterInUse | null> {
    return this.#serial(async () => {
      const { model } = this.#loaded();
      if (!request) {
        model.llama.setLora(null);
        this.#trained = null;
        return null;
      }
      const files = ([ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] as const).map((name) => new File([request.files[name] as BlobPart], name));
      const peft = await readPeftAdapter(new PickedFilesSource(files, request.label), model.llama.config);
      model.llama.setLora(peft.lora);
      this.#trained = peft.config;
      const gguf = ggufLoraAdapter(peft.lora, peft.config, model.llama.config);
      return this.#deps.transfer({ lora: peft.config, baseModel: peft.baseModel, model: model.id, gguf }, [gguf.buffer as ArrayBuffer]);
    });
  }
}
