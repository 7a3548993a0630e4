/**
 * NLFT test inputs shared by the engine tests (test/gpu/nlft*.test.ts): a seeded tiny model, four
 * synthetic records (random token ids for the three views' prompts and the shared response), and
 * the tfjs reference's log p of a response under a prompt.
 */
import { TINY_SHAPE } from '../fixtures/tiny-llama.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import type { LlamaWeights } from '../../src/model/weights.ts';
import type { NlftSample } from '../../src/nlft/method.ts';
import { viewSequence } from '../../src/nlft/views.ts';
import { Rng } from '../../src/util/rng.ts';
import { referenceLogProbs } from '../reference/llama-tf.ts';

/** Vocabulary of `nlftTestModel`. */
export const NLFT_TEST_VOCAB = 256;

/** A seeded tiny Llama (2 layers, hidden 32, GQA, tied) for the NLFT tests. */
export function nlftTestModel(seed: number): LlamaWeights {
  return makeTinyLlama({
    seed,
    ...TINY_SHAPE,
    vocabSize: NLFT_TEST_VOCAB,
  });
}

/**
 * Records 1, 2 positive; 3, 4 negative (with a judge view and an anchor: random ids standing for the
 * standard answer under the base prompt); view ids drawn from `seed`, anchor ids from `seed + 1`.
 */
export function syntheticNlftSamples(seed: number): NlftSample[] {
  const rng = new Rng(seed);
  const ids = (n: number) => Array.from({ length: n }, () => rng.int(NLFT_TEST_VOCAB));
  const anchorRng = new Rng(seed + 1);
  const anchorIds = (n: number) => Array.from({ length: n }, () => anchorRng.int(NLFT_TEST_VOCAB));
  return [0, 1, 2, 3]
    .map(
      (i): NlftSample => ({
        id: `r${i + 1}`,
        index: i + 1,
        polarity: i < 2 ? 'positive' : 'negative',
        promptIds: ids(8 + i),
        standardIds: ids(12 + i),
        judgeIds: i < 2 ? null : ids(10 + i),
        responseIds: ids(14 + 2 * i),
        truncatedBy: 0,
      }),
    )
    .map((s) => ({
      ...s,
      anchor:
        s.polarity === 'negative'
          ? { id: s.id, index: s.index, promptIds: s.promptIds, responseIds: anchorIds(9 + s.index), truncatedBy: 0 }
          : null,
    }));
}

/** log p of the response under a prompt, from the tfjs reference. */
export function referenceResponseLogp(
  weights: LlamaWeights,
  prompt: number[],
  response: number[],
  lora: Parameters<typeof referenceLogProbs>[3],
): Float64Array {
  const seq = viewSequence(prompt, response);
  const full = seq.ids.map(() => -1);
  seq.rows.forEach((r, i) => (full[r] = seq.targets[i]));
  return Float64Array.from(referenceLogProbs(weights, seq.ids, full, lora).filter((v) => !Number.isNaN(v)));
}
