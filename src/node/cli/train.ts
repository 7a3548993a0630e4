/**
 * `nlft train`: fine-tune LoRA adapters on a dataset and write them in PEFT's format, with
 * metrics.jsonl (one line per optimizer step), run.json (settings, prompt template, environment,
 * timings, peak GPU bytes) and checkpoint.safetensors (to continue with --resume).
 */
import { appendFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { formatBytes } from '../../engine/buffers.ts';
import { adapterName, describeAdapter } from '../../engine/gpu.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { estimateTrainBytes } from '../../engine/memory.ts';
import { UsageError } from '../../errors.ts';
import { peftAdapterFiles } from '../../export/peft.ts';
import { DEFAULT_LORA, initLora, validateLoraConfig, type LoraConfig } from '../../model/lora.ts';
import { PROJECTIONS, type Projection } from '../../model/weights.ts';
import { checkpointBytes, CHECKPOINT_FILE, readCheckpoint } from '../../train/checkpoint.ts';
import { prepareRun, methodSamples } from '../../session/train.ts';
import { DEFAULT_INSTRUCTION } from '../../data/prompt.ts';
import { NLFT_FLAGS, saliencyOptions, scoreBatchOption, templatesOption } from './nlft-options.ts';
import { printSummary } from './score.ts';
import { DEFAULT_TRAIN, type RunEnd, type TrainConfig } from '../../train/trainer.ts';
import { writePeftAdapter } from '../adapter-files.ts';
import { createTunedEngine } from '../engine.ts';
import { FolderSource } from '../fs-source.ts';
import { isPositiveInt, numberOption, parse, quantOption, required } from './args.ts';
import { loadModelWithTokenizer, readDatasetFile } from './inputs.ts';

function options(values: Record<string, unknown>): { train: TrainConfig; lora: LoraConfig; maxLen: number } {
  const num = (name: string, fallback: number, ok: (v: number) => boolean, expected: string) =>
    numberOption(values, name, fallback, ok, expected);
  const targets =
    typeof values.targets === 'string' ? (values.targets.split(',').map((s) => s.trim()) as Projection[]) : [...DEFAULT_LORA.targets];
  const lora: LoraConfig = {
    r: num('rank', DEFAULT_LORA.r, isPositiveInt, 'a positive integer'),
    alpha: num('alpha', DEFAULT_LORA.alpha, (v) => v > 0, 'a positive number'),
    dropout: num('dropout', DEFAULT_LORA.dropout, (v) => v >= 0 && v < 1, 'a number in [0, 1)'),
    targets,
  };
  try {
    validateLoraConfig(lora);
  } catch (e) {
    throw new UsageError(`${(e as Error).message} (valid --targets: ${PROJECTIONS.join(',')})`);
  }
  const steps = values.steps === undefined ? null : num('steps', 1, isPositiveInt, 'a positive integer');
  return {
    lora,
    maxLen: num('max-len', 512, (v) => Number.isInteger(v) && v >= 2, 'an integer of at least 2'),
    train: {
      ...DEFAULT_TRAIN,
      epochs: num('epochs', DEFAULT_TRAIN.epochs, (v) => v > 0, 'a positive number'),
      maxSteps: steps,
      lr: num('lr', DEFAULT_TRAIN.lr, (v) => v > 0, 'a positive number'),
      batch: num('batch', DEFAULT_TRAIN.batch, isPositiveInt, 'a positive integer'),
      seed: num('seed', DEFAULT_TRAIN.seed, (v) => Number.isInteger(v) && v >= 0, 'a non-negative integer'),
      dropout: lora.dropout,
      weightDecay: num('weight-decay', DEFAULT_TRAIN.weightDecay, (v) => v >= 0, 'a non-negative number'),
      warmupFraction: num('warmup', DEFAULT_TRAIN.warmupFraction, (v) => v >= 0 && v <= 1, 'a fraction in [0, 1]'),
      maxGradNorm: num('max-grad-norm', DEFAULT_TRAIN.maxGradNorm, (v) => v >= 0, 'a non-negative number (0 disables clipping)'),
      recompute: values.recompute === true,
    },
  };
}

export async function trainCommand(argv: string[], out: (line: string) => void): Promise<RunEnd> {
  const values = parse(argv, {
    method: { type: 'string' },
    model: { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string' },
    quant: { type: 'string' },
    epochs: { type: 'string' },
    steps: { type: 'string' },
    lr: { type: 'string' },
    rank: { type: 'string' },
    alpha: { type: 'string' },
    dropout: { type: 'string' },
    targets: { type: 'string' },
    'max-len': { type: 'string' },
    batch: { type: 'string' },
    seed: { type: 'string' },
    ...NLFT_FLAGS,
    'weight-decay': { type: 'string' },
    warmup: { type: 'string' },
    'max-grad-norm': { type: 'string' },
    resume: { type: 'string' },
    recompute: { type: 'boolean' },
    'memory-budget': { type: 'string' },
  });
  const method = values.method ?? 'nlft';
  if (method !== 'sft' && method !== 'nlft') throw new UsageError(`--method must be nlft or sft (got "${String(method)}")`);
  const sal = saliencyOptions(values);
  const templates = await templatesOption(values);
  const modelDir = required(values, 'model');
  const dataFile = required(values, 'data');
  const outDir = required(values, 'out');
  const quant = quantOption(values.quant);
  const opts = options(values);
  const { maxLen } = opts;
  let { train, lora } = opts;
  const started = Date.now();

  const { model, tok } = await loadModelWithTokenizer(modelDir, 'training', out);
  const records = await readDatasetFile(dataFile, method === 'nlft');
  const { samples, truncated } = methodSamples(method, records, tok, templates, maxLen);
  out(`data       ${dataFile}: ${records.length} records${truncated ? `, ${truncated} answers truncated to fit --max-len ${maxLen}` : ''}`);

  const resume = typeof values.resume === 'string' ? await readCheckpoint(new FolderSource(values.resume)) : null;
  if (resume) {
    ({ lora } = resume);
    train = resume.checkpoint.config;
    out(`resume     ${values.resume}: step ${resume.checkpoint.state.step}, with the checkpoint's training and LoRA settings`);
  }
  // Memory: estimate the longest sequence's step; within a budget, switch to recompute or refuse with the numbers.
  const budgetMiB =
    values['memory-budget'] === undefined ? null : numberOption(values, 'memory-budget', 0, (v) => v > 0, 'a positive number of MiB');
  const longest = samples.reduce((a, s) => (s.promptIds.length + s.responseIds.length > a.promptIds.length + a.responseIds.length ? s : a));
  const estimate = (recompute: boolean) =>
    estimateTrainBytes(
      model.config,
      quant,
      lora,
      longest.promptIds.length + longest.responseIds.length - 1,
      longest.responseIds.length,
      recompute,
    );
  let est = estimate(train.recompute);
  if (budgetMiB !== null && est.total > budgetMiB * 2 ** 20) {
    const alt = estimate(true);
    if (!train.recompute && alt.total <= budgetMiB * 2 ** 20) {
      train = { ...train, recompute: true };
      out(
        `memory     ${formatBytes(est.total)} needed with all activations kept, over --memory-budget ${budgetMiB} MiB: recomputing layers instead (${formatBytes(alt.total)})`,
      );
      est = alt;
    } else {
      throw new UsageError(
        `a training step needs about ${formatBytes(alt.total)} even with --recompute (model ${formatBytes(alt.model)}, LoRA and optimizer ${formatBytes(alt.lora)}, activations ${formatBytes(alt.activations)} for ${longest.promptIds.length + longest.responseIds.length} tokens), over --memory-budget ${budgetMiB} MiB; try a lower --max-len, --quant q4 or a smaller --rank`,
      );
    }
  }
  out(
    `memory     estimate ${formatBytes(est.total)}: model ${formatBytes(est.model)}, LoRA + AdamW ${formatBytes(est.lora)}, activations ${formatBytes(est.activations)}${train.recompute ? ' (recomputing layers)' : ''}`,
  );
  const { engine, note } = await createTunedEngine(model.config, quant, {
    budgetBytes: budgetMiB === null ? undefined : budgetMiB * 2 ** 20,
  });
  try {
    out(`kernels    ${note}`);
    const llama = GpuLlama.create(engine.ops, model.weights, quant, initLora(model.config, lora, train.seed));
    const modelBytes = engine.buffers.current;
    // NLFT: score the data once before training for the dataset-level saliency summary. The no-grad
    // passes pack several records, within the activation memory a training step needs anyway.
    const scoreTokens = scoreBatchOption(values, model.config, lora, est.activations, engine.ctx.device.limits.maxStorageBufferBindingSize);
    if (method === 'nlft') out(`scoring    ${samples.length} records, no-grad views packed ${scoreTokens} tokens per pass`);
    const { trainer, summary, takeEntries } = await prepareRun(engine, llama, samples, {
      method,
      train,
      saliency: sal,
      tokenText: (id) => tok.tokenText(id),
      scoreBatchTokens: scoreTokens,
    });
    if (summary) printSummary(summary, out);
    if (resume) await trainer.restore(resume.checkpoint);
    await mkdir(outDir, { recursive: true });
    const metricsFile = path.join(outDir, 'metrics.jsonl');
    const saliencyFile = path.join(outDir, 'saliency.jsonl');
    if (!resume) await Promise.all([writeFile(metricsFile, ''), method === 'nlft' ? writeFile(saliencyFile, '') : null]);
    out(
      `model      ${modelDir} (${quant}), LoRA r ${lora.r} alpha ${lora.alpha} on ${lora.targets.join(',')}; ${trainer.totalSteps} steps of batch ${train.batch}`,
    );
    out(`adapter    ${describeAdapter(engine.ctx.adapter)}`);
    const ctl = new AbortController();
    const onSigint = () => ctl.abort();
    process.once('SIGINT', onSigint);
    let peak = 0;
    let lastLoss = NaN;
    const end = await trainer
      .run({
        signal: ctl.signal,
        onStep: async (m) => {
          const entries = takeEntries();
          if (entries.length) await appendFile(saliencyFile, entries.map((e) => `${JSON.stringify(e)}\n`).join(''));
          peak = Math.max(peak, m.peakBytes);
          lastLoss = m.loss;
          await appendFile(metricsFile, `${JSON.stringify(m)}\n`);
          out(
            `step ${String(m.step).padStart(4)}/${m.totalSteps}  loss ${m.loss.toFixed(4)}  lr ${m.lr.toExponential(2)}  grad-norm ${m.gradNorm.toFixed(3)}  ${m.ms.toFixed(0)} ms  ${formatBytes(m.peakBytes)}`,
          );
        },
      })
      .finally(() => process.off('SIGINT', onSigint));
    const params = await llama.lora!.read();
    await writePeftAdapter(outDir, peftAdapterFiles(params, lora, { baseModel: modelDir }));
    await writeFile(path.join(outDir, CHECKPOINT_FILE), checkpointBytes(await trainer.checkpoint(), lora));
    const run = {
      method,
      model: { path: modelDir, quant, config: model.config },
      data: { path: dataFile, records: records.length, truncated, maxLen },
      lora,
      train,
      prompt:
        method === 'nlft'
          ? {
              templates,
              views:
                'chat template of the model per view (system + user, generation prompt); the response is the record output, tokenized separately',
            }
          : {
              template: 'chat template of the model: system = instruction, user = input, generation prompt',
              defaultInstruction: DEFAULT_INSTRUCTION,
              response: 'answer + end-of-sequence token',
            },
      nlft: method === 'nlft' ? { options: sal, summary, scoreBatchTokens: scoreTokens } : null,
      environment: { adapter: engine.ctx.adapter, node: process.version, platform: `${process.platform}-${process.arch}` },
      result: { ...end, totalSteps: trainer.totalSteps, lastLoss },
      timings: { startedAt: new Date(started).toISOString(), seconds: (Date.now() - started) / 1000 },
      memory: { peakBytes: peak, modelBytes },
    };
    await writeFile(path.join(outDir, 'run.json'), `${JSON.stringify(run, null, 2)}\n`);
    trainer.destroy();
    const what =
      end.status === 'non-finite' ? `stopped: ${end.message}` : end.status === 'done' ? 'trained' : 'cancelled (continue with --resume)';
    out(
      `${what}: ${end.steps}/${trainer.totalSteps} steps, last loss ${lastLoss.toFixed(4)}, peak ${formatBytes(peak)}; wrote ${outDir} (${adapterName(engine.ctx.adapter)})`,
    );
    if (end.status === 'non-finite') process.exitCode = 1;
    return end;
  } finally {
    engine.destroy();
  }
}
