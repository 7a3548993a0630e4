/**
 * `nlft score`: the NLFT weighting of every record without training — per record its polarity,
 * the three views' prompt ids, the response ids and texts, and per token pb, pc, pj, class,
 * coefficient and term kind, with the record's loss, and its cached view scores (docs/method.md §3.1);
 * plus the dataset-level saliency summary. `--from` re-classifies a dump's cached scores without a model.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { adapterName } from '../../engine/gpu.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { classifyScores, type SaliencyEntry, type SaliencySummary, saliencySummary, towardsWarning } from '../../nlft/method.ts';
import { readScoreDump, SCORES_FORMAT, storeScores } from '../../nlft/scores.ts';
import { UsageError } from '../../errors.ts';
import { scoreParsed } from '../../session/scoring.ts';
import { createTunedEngine } from '../engine.ts';
import { parse, quantOption, rawOption, required } from './args.ts';
import { checkOption, DEFAULT_MAX_LEN } from '../../session/options.ts';
import { adapterOption, loadModelWithTokenizer, readDatasetFile } from './inputs.ts';
import { NLFT_FLAGS, saliencyOptions, scoreBatchOption, templatesOption } from './nlft-options.ts';

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
  const warning = towardsWarning(s);
  if (warning)
    out(`warning    ${warning.replace('negatives: anchor', '--negatives anchor').replace('skip)', '--negatives-without-saliency skip)')}`);
  out(
    `           mean coefficient: correct ${mean(s.meanCoefficient.correct)}, cluster ${mean(s.meanCoefficient.cluster)}, ` +
      `unlikely ${mean(s.meanCoefficient.unlikely)}, plain ${mean(s.meanCoefficient.plain)}`,
  );
}

/** Flags that need a model; `--from` re-applies the rules to a dump without one. */
const MODEL_FLAGS = ['model', 'data', 'adapter', 'quant', 'max-len', 'templates', 'score-batch-tokens'];

export async function scoreCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    data: { type: 'string' },
    out: { type: 'string' },
    from: { type: 'string' },
    quant: { type: 'string' },
    'max-len': { type: 'string' },
    ...NLFT_FLAGS,
  });
  if (values.from !== undefined) return rescoreDump(values, out);
  const modelDir = required(values, 'model');
  const dataFile = required(values, 'data');
  const outFile = required(values, 'out');
  const quant = quantOption(values.quant);
  const maxLen = rawOption(values, 'max-len') ?? DEFAULT_MAX_LEN;
  checkOption('maxLen', maxLen);
  const sal = saliencyOptions(values);
  const passTokens = scoreBatchOption(values);
  const templates = await templatesOption(values);
  const opened = await loadModelWithTokenizer(modelDir, 'scoring', out);
  const { model, tok } = opened;
  const records = await readDatasetFile(dataFile, true);
  const peft = await adapterOption(values, model.config);
  const { engine, note } = await createTunedEngine(model.config, quant);
  try {
    out(`kernels    ${note}`);
    const llama = GpuLlama.create(engine.ops, model.weights, quant, peft?.lora);
    const scoring = { llama, tok, name: modelDir, lora: peft?.config ?? null, tokenizerJson: model.tokenizerJson };
    const request = { data: { name: path.basename(dataFile) }, templates, maxLen: maxLen as number, scoreBatchTokens: passTokens };
    // No stop signal is given, so the job runs to the end (it resolves null only when stopped).
    const { samples, scored } = (await scoreParsed(engine, scoring, { ...request, anchors: sal.negatives === 'anchor' }, records, null))!;
    const { scores, truncated, passTokens: maxTokens } = scored;
    const { entries } = classifyScores(samples, scores, sal, (id) => tok.tokenText(id));
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
      scoresFormat: SCORES_FORMAT,
      hiddenSize: scores.hiddenSize,
      records: entries.map((e, i) => ({
        ...e,
        views: { base: samples[i].promptIds, standard: samples[i].standardIds, judge: samples[i].judgeIds },
        responseIds: samples[i].responseIds,
        scores: storeScores(scores.records[i]),
      })),
    };
    await writeFile(outFile, `${JSON.stringify(dump, null, 1)}\n`);
    printSummary(summary, out);
    out(
      `scored ${entries.length} records (${truncated} truncated to --max-len ${maxLen}), mean NLFT ` +
        `loss ${meanLoss(entries).toFixed(4)}; wrote ${outFile} (${quant}, ${adapterName(engine.ctx.adapter)})`,
    );
  } finally {
    engine.destroy();
  }
}

const meanLoss = (entries: readonly SaliencyEntry[]) => entries.reduce((a, e) => a + e.loss, 0) / entries.length;

/**
 * `nlft score --from dump.json [NLFT options] [--out new.json]`: the dump's cached scores classified
 * under the options (defaults where absent, as a fresh `nlft score` takes them) on the CPU, no model
 * or GPU; prints the summary, and with `--out` writes the dump again with the new classes.
 */
async function rescoreDump(values: Record<string, unknown>, out: (line: string) => void): Promise<void> {
  const from = required(values, 'from');
  const unused = MODEL_FLAGS.filter((f) => values[f] !== undefined);
  if (unused.length)
    throw new UsageError(
      `--from re-applies the rules to the scores in ${from} without a model; leave out ${unused.map((f) => `--${f}`).join(', ')}`,
    );
  const sal = saliencyOptions(values);
  let text: string;
  try {
    text = await readFile(from, 'utf8');
  } catch {
    throw new UsageError(`--from ${from}: cannot read the file`);
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${path.basename(from)}: not valid JSON: ${(e as Error).message}`);
  }
  const dump = readScoreDump(json, path.basename(from));
  const t0 = performance.now();
  const { entries } = classifyScores(dump.records, dump.scores, sal, dump.tokenText);
  const ms = performance.now() - t0;
  const summary = saliencySummary(entries, sal.negativesWithoutSaliency, sal.negatives);
  printSummary(summary, out);
  const outFile = typeof values.out === 'string' ? values.out : null;
  if (outFile) {
    const records = (json.records as Record<string, unknown>[]).map((r, i) => ({
      ...r,
      ...entries[i],
      views: r.views,
      responseIds: r.responseIds,
      scores: r.scores,
    }));
    await writeFile(outFile, `${JSON.stringify({ ...json, options: sal, summary, records }, null, 1)}\n`);
  }
  out(
    `re-classified ${entries.length} records from ${from} in ${ms.toFixed(1)} ms (no model, no GPU), mean NLFT loss ` +
      `${meanLoss(entries).toFixed(4)}${outFile ? `; wrote ${outFile}` : ''}`,
  );
}
