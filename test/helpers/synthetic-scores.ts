/**
 * Test and bench helper: a scored dataset made of seeded random numbers, in the shape the scoring
 * job hands the explorer (`ScoredDataset`, src/session/scoring.ts) — every other record negative,
 * with an anchor of its own scores — for re-classification tests and `npm run bench -- reclassify`.
 */
import { DEFAULT_TEMPLATES } from '../../src/nlft/templates.ts';
import type { ScoredDataset } from '../../src/session/scoring.ts';
import { Rng } from '../../src/util/rng.ts';

/** `records` records of `tokens` response tokens with hidden size `hiddenSize`; negatives have an anchor of `tokens / 2` tokens. */
export function syntheticScoredDataset(records: number, tokens: number, hiddenSize: number, seed: number): ScoredDataset {
  const rng = new Rng(seed);
  const probs = (n: number) => Float32Array.from({ length: n }, () => 0.0005 + 0.999 * rng.next());
  const ids = (n: number) => Array.from({ length: n }, () => rng.int(400));
  const scored: ScoredDataset = {
    dataset: 'synthetic.json',
    model: `random scores, seed ${seed}`,
    scorer: null,
    templates: DEFAULT_TEMPLATES,
    maxLen: 512,
    truncated: 0,
    passTokens: 2048,
    anchors: true,
    records: [],
    tokenTexts: Object.fromEntries(Array.from({ length: 400 }, (_, id) => [id, `t${id}`])),
    scores: { hiddenSize, records: [] },
    scoredAt: new Date(0).toISOString(),
  };
  for (let i = 0; i < records; i++) {
    const negative = i % 2 === 1;
    const anchorIds = negative ? ids(Math.max(1, tokens >> 1)) : null;
    scored.records.push({
      id: `rec-${i + 1}`,
      index: i + 1,
      polarity: negative ? 'negative' : 'positive',
      responseIds: ids(tokens),
      anchor: anchorIds && { id: `rec-${i + 1}`, index: i + 1, promptIds: [], responseIds: anchorIds, truncatedBy: 0 },
    });
    const pb = probs(tokens);
    const anchorP = anchorIds ? probs(anchorIds.length) : null;
    scored.scores.records.push({
      logpb: pb.map(Math.log),
      log1mpb: pb.map((p) => Math.log1p(-p)),
      logpc: probs(tokens).map(Math.log),
      logpj: negative ? probs(tokens).map(Math.log) : null,
      hb: Float32Array.from({ length: tokens * hiddenSize }, () => rng.normal()),
      anchor: anchorP && { logp: anchorP.map(Math.log), log1mq: anchorP.map((p) => Math.log1p(-p)) },
    });
  }
  return scored;
}
