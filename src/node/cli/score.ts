/**
 * `nlft score`: the NLFT weighting of every record without training — per record its polarity,
 * the three views' prompt ids, the response ids and texts, and per token pb, pc, pj, class,
 * coefficient and term kind, with the record's loss; plus the dataset-level saliency summary.
 */
import { writeFile } from 'node:fs/promises';
import { adapterName } from '../../engine/gpu.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { nlftSamples, saliencySummary, scoreSamples, type SaliencySummary } from '../../nlft/method.ts';
import { scorePassTokens } from '../../session/train.ts';
import { createTunedEngine } from '../engine.ts';
import { parse, quantOption, rawOption, required } from './args.ts';
import { checkOption, DEFAULT_MAX_LEN } from '../../session/options.ts';
import { adapterOption, loadModelWithTokenizer, readDatasetFile } from './inputs.ts';
import { NLFT_FLAGS, saliencyOptions, scoreBatchOption, templatesOption } from './nlft-options.ts';

/** Activation memory packed scoring passes may take by default (beyond the model). */
const SCORE_ACTIVATION_BYTES = 256 * 2 ** 20;

/** Print the summary in a few lines. */
export function printSummary(s: SaliencySummary, out: (line: string) => void): void {
  const mean = (v: number | null) => (v === null ? '-' : v.toFixed(3));
  out(`saliency   ${s.records} records: ${s.positives} positive, ${s.negatives} negative; ${s.sixPercentRule} negatives hit the 6% rule`);
  const fate =
    s.negativesRule === 'anchor' && s.negativesWithoutSaliency === 'train'
      ? 'their response gets no term; they train their standard answer, --negatives anchor'
      : s.negativesWithoutSaliency === 'train'
        ? "trained towards their response with weights sqrt(pc), the authors' rule; --negatives-without-saliency skip leaves them out"
        : 'skipped';
  out(`           ${s.negativesWithoutUnlikely} negatives have no unlikely token (${fate})`);
  if (s.negativesRule === 'anchor') out(`           ${s.anchored} negatives train their standard answer (anchor)`);
  out(
    `           mean coefficient: correct ${mean(s.meanCoefficient.correct)}, cluster ${mean(s.meanCoefficient.cluster)}, ` +
      `unlikely ${mean(s.meanCoefficient.unlikely)}, plain ${mean(s.meanCoefficient.plain)}`,
  );
}

export async function scoreCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string' },
    quant: { type: 'string' },
    'max-len': { type: 'string' },
    ...NLFT_FLAGS,
  });
  const modelDir = required(values, 'model');
  const dataFile = required(values, 'data');
  const outFile = required(values, 'out');
  const quant = quantOption(values.quant);
  const maxLen = rawOption(values, 'max-len') ?? DEFAULT_MAX_LEN;
  checkOption('maxLen', maxLen);
  const sal = saliencyOptions(values);
  const passTokens = scoreBatchOption(values);
  const templates = await templatesOption(values);
  const { model, tok } = await loadModelWithTokenizer(modelDir, 'scoring', out);
  const records = await readDatasetFile(dataFile, true);
  const { samples, truncated } = nlftSamples(records, tok, templates, maxLen as number);
  const peft = await adapterOption(values, model.config);
  const { engine, note } = await createTunedEngine(model.config, quant);
  try {
    out(`kernels    ${note}`);
    const llama = GpuLlama.create(engine.ops, model.weights, quant, peft?.lora);
    const maxTokens = scorePassTokens(
      model.config,
      peft?.config ?? null,
      passTokens,
      SCORE_ACTIVATION_BYTES,
      engine.ctx.device.limits.maxStorageBufferBindingSize,
    );
    const entries = await scoreSamples(llama, samples, sal, (id) => tok.tokenText(id), { maxTokens });
    const summary = saliencySummary(entries, sal.negativesWithoutSaliency, sal.negatives);
    const dump = {
      model: modelDir,
      adapter: typeof values.adapter === 'string' ? values.adapter : null,
      quant,
      options: sal,
      templates,
      truncated,
      summary,
      scoreBatchTokens: maxTokens,
      records: entries.map((e, i) => ({
        ...e,
        views: { base: samples[i].promptIds, standard: samples[i].standardIds, judge: samples[i].judgeIds },
        responseIds: samples[i].responseIds,
      })),
    };
    await writeFile(outFile, `${JSON.stringify(dump, null, 1)}\n`);
    printSummary(summary, out);
    const loss = entries.reduce((a, e) => a + e.loss, 0) / entries.length;
    out(
      `scored ${entries.length} records (${truncated} truncated to --max-len ${maxLen}), mean NLFT ` +
        `loss ${loss.toFixed(4)}; wrote ${outFile} (${quant}, ${adapterName(engine.ctx.adapter)})`,
    );
  } finally {
    engine.destroy();
  }
}
