/**
 * A scorer model (docs/method.md §3.2): another model with the same tokenizer (e.g. a larger one of
 * the same family) scores the base, standard and judge views of every record once, before training;
 * its probabilities and hidden states decide the classes and coefficients, while the trained
 * model's own log-probs carry the loss terms (static saliency). Within the memory budget: the
 * scorer is uploaded, scores, and is freed before the host uploads the trained model.
 */
import type { Engine } from '../engine/engine.ts';
import { GpuLlama } from '../engine/llama.ts';
import { NlftError } from '../errors.ts';
import type { QuantFormat } from '../model/quant.ts';
import { type DatasetScores, type NlftSample, scoreRecords } from '../nlft/method.ts';
import type { TrainSample } from '../data/prompt.ts';
import { isRecord } from '../util/json.ts';
import type { OpenedModel } from './model.ts';
import { scorePassTokens, type TrainHost, type TrainPlan } from './train.ts';

/** The tokens of a `tokenizer.json` by id: its model's vocabulary (BPE/WordPiece map or Unigram list) and its added tokens. */
export function vocabularyOf(tokenizerJson: unknown): (string | undefined)[] {
  const tokens: (string | undefined)[] = [];
  if (!isRecord(tokenizerJson)) return tokens;
  const vocab = isRecord(tokenizerJson.model) ? tokenizerJson.model.vocab : undefined;
  if (Array.isArray(vocab)) vocab.forEach((entry, id) => (tokens[id] = Array.isArray(entry) ? String(entry[0]) : undefined));
  else if (isRecord(vocab)) for (const [token, id] of Object.entries(vocab)) if (Number.isInteger(id)) tokens[id as number] = token;
  const added = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
  for (const a of added) if (isRecord(a) && Number.isInteger(a.id) && typeof a.content === 'string') tokens[a.id as number] = a.content;
  return tokens;
}

/** Where two vocabularies differ, in words (the first differing id and both tokens, or the sizes), or null when equal. */
export function vocabularyDifference(model: readonly (string | undefined)[], scorer: readonly (string | undefined)[]): string | null {
  const n = Math.min(model.length, scorer.length);
  const shown = (t: string | undefined) => (t === undefined ? 'no token' : JSON.stringify(t));
  for (let id = 0; id < n; id++) {
    if (model[id] !== scorer[id]) return `token ${id} is ${shown(model[id])} in the model and ${shown(scorer[id])} in the scorer`;
  }
  if (model.length !== scorer.length) return `the model has ${model.length} tokens, the scorer ${scorer.length}`;
  return null;
}

/**
 * Refuses a scorer whose tokenizer differs from the trained model's: the views' token ids must
 * mean the same to both.
 *
 * @throws NlftError ('scorer') naming the scorer and where the vocabularies differ
 */
export function checkScorerVocabulary(
  model: { model: Pick<OpenedModel['model'], 'tokenizerJson'> },
  scorer: { model: Pick<OpenedModel['model'], 'tokenizerJson'> },
  scorerId: string,
): void {
  const diff = vocabularyDifference(vocabularyOf(model.model.tokenizerJson), vocabularyOf(scorer.model.tokenizerJson));
  if (diff) {
    throw new NlftError(
      `scorer ${scorerId}: its tokenizer differs from the trained model's (${diff}); a scorer must have the same vocabulary`,
      'scorer',
    );
  }
}

/**
 * Scores every record of an NLFT plan with the scorer (all three views, packed passes sized as the
 * training run's, `scoring` events to the host) and frees the scorer's GPU buffers; the result goes
 * to `runTraining` as its static saliency scores.
 *
 * @throws NlftError ('scorer') for a scorer whose tokenizer differs from the model's
 */
export async function scoreWithScorer(
  engine: Engine,
  model: { model: Pick<OpenedModel['model'], 'tokenizerJson'> },
  scorer: { model: Pick<OpenedModel['model'], 'config' | 'weights' | 'tokenizerJson'>; id: string; quant: QuantFormat },
  plan: TrainPlan,
  host: Pick<TrainHost, 'onEvent'>,
): Promise<DatasetScores> {
  checkScorerVocabulary(model, scorer, scorer.id);
  const samples = plan.samples as readonly TrainSample[] as readonly NlftSample[];
  const passTokens = scorePassTokens(
    scorer.model.config,
    null,
    plan.scoreBatchTokens,
    plan.memory.estimate.activations,
    engine.ctx.device.limits.maxStorageBufferBindingSize,
  );
  const llama = GpuLlama.create(engine.ops, scorer.model.weights, scorer.quant);
  try {
    await host.onEvent({ type: 'scoring', done: 0, total: samples.length, passTokens });
    return await scoreRecords(llama, samples, {
      maxTokens: passTokens,
      anchors: plan.saliency.negatives === 'anchor',
      onProgress: (done) => void host.onEvent({ type: 'scoring', done, total: samples.length }),
    });
  } finally {
    llama.destroy();
  }
}
