/**
 * The training session's CPU side: one rule per option with the same message whether the value came
 * from a CLI flag or a request field, alpha's default, the memory-budget decision (fit, switch to
 * recomputing layers, refuse with the numbers), and the resume of a checkpoint written by the
 * previous version (its dropout in the training config).
 */
import { TINY_SHAPE, SMOLLM2_VOCAB } from '../fixtures/tiny-llama.ts';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { estimateTrainBytes } from '../../src/engine/memory.ts';
import { UsageError } from '../../src/errors.ts';
import { tinyLlamaConfig } from '../../src/model/demo.ts';
import { DEFAULT_SALIENCY } from '../../src/nlft/saliency.ts';
import { DEFAULT_TEMPLATES } from '../../src/nlft/templates.ts';
import { trainRequestOf } from '../../src/node/cli/train.ts';
import { checkTrainRequest } from '../../src/session/options.ts';
import type { TrainRequest } from '../../src/session/requests.ts';
import { DEFAULT_TRAIN_PASS_TOKENS, planMemory, planTraining } from '../../src/session/train.ts';
import { checkpointBytes } from '../../src/train/checkpoint.ts';
import { DEFAULT_TRAIN } from '../../src/train/trainer.ts';

const dir = new URL('../../public/tokenizers/smollm2/', import.meta.url);
const tok = TextTokenizer.fromJson(
  JSON.parse(readFileSync(new URL('tokenizer.json', dir), 'utf8')),
  JSON.parse(readFileSync(new URL('tokenizer_config.json', dir), 'utf8')),
);
const CONFIG = tinyLlamaConfig({
  seed: 0,
  ...TINY_SHAPE,
  vocabSize: SMOLLM2_VOCAB,
});
const GSM = new TextEncoder().encode(
  '{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\\n#### 5"}\n{"question": "What is 7 - 4?", "answer": "7 - 4 = 3\\n#### 3"}\n',
);

/** A request as the app's form sends it. */
function appRequest(
  over: { train?: Partial<TrainRequest['train']>; lora?: Partial<TrainRequest['lora']>; maxLen?: number } = {},
): TrainRequest {
  return {
    method: 'sft',
    train: { ...DEFAULT_TRAIN, ...over.train },
    lora: { r: 16, alpha: 16, dropout: 0.05, targets: ['gate_proj', 'up_proj', 'down_proj'], ...over.lora },
    maxLen: over.maxLen ?? 512,
    saliency: { ...DEFAULT_SALIENCY },
    templates: DEFAULT_TEMPLATES,
    data: { name: 'gsm.jsonl', bytes: GSM },
  };
}

const INPUTS = { templates: DEFAULT_TEMPLATES, data: { name: 'gsm.jsonl', bytes: GSM } };

/** The message a check throws (and that it is a usage error). */
function messageOf(check: () => unknown): string {
  try {
    check();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error('expected the check to throw');
}

describe('option rules', () => {
  it.each([
    [{ rank: '6' }, appRequest({ lora: { r: 6 } }), 'rank: expected a positive multiple of 4 (the GPU kernels need it), found 6'],
    [
      { rank: 'big' },
      appRequest({ lora: { r: 'big' as unknown as number } }),
      'rank: expected a positive multiple of 4 (the GPU kernels need it), found "big"',
    ],
    [{ lr: 'fast' }, appRequest({ train: { lr: 'fast' as unknown as number } }), 'lr: expected a positive number, found "fast"'],
    [{ batch: '0' }, appRequest({ train: { batch: 0 } }), 'batch: expected a positive integer, found 0'],
    [{ warmup: '1.5' }, appRequest({ train: { warmupFraction: 1.5 } }), 'warmup: expected a fraction in [0, 1], found 1.5'],
    [{ dropout: '1' }, appRequest({ lora: { dropout: 1 } }), 'dropout: expected a number in [0, 1), found 1'],
    [{ 'max-len': '1' }, appRequest({ maxLen: 1 }), 'maxLen: expected an integer of at least 2, found 1'],
    [{ targets: 'lm_head' }, appRequest({ lora: { targets: ['lm_head' as 'q_proj'] } }), 'targets: unknown projection "lm_head"'],
  ])('%j gives the same message from the CLI and from a request', (flags, request, message) => {
    const fromCli = messageOf(() => trainRequestOf({ method: 'sft', ...flags }, INPUTS));
    expect(fromCli).toContain(message);
    expect(messageOf(() => checkTrainRequest(request))).toBe(fromCli);
  });

  it('alpha defaults to the rank, in the CLI and in a request without one', () => {
    expect(checkTrainRequest(appRequest({ lora: { r: 8, alpha: undefined } })).lora.alpha).toBe(8);
    expect(checkTrainRequest(appRequest({ lora: { r: 16, alpha: null } })).lora.alpha).toBe(16);
    expect(checkTrainRequest(trainRequestOf({ rank: '8' }, INPUTS)).lora.alpha).toBe(8);
    expect(checkTrainRequest(trainRequestOf({ rank: '8', alpha: '32' }, INPUTS)).lora.alpha).toBe(32);
  });

  it('the CLI defaults make the default request', () => {
    const r = trainRequestOf({}, INPUTS);
    expect(r.train).toEqual(DEFAULT_TRAIN);
    expect(r.lora).toEqual({ r: 16, alpha: null, dropout: 0.05, targets: ['gate_proj', 'up_proj', 'down_proj'] });
    expect(r.maxLen).toBe(512);
    expect(r.method).toBe('nlft');
  });
});

describe('memory budget', () => {
  const lora = { r: 8, alpha: 8, dropout: 0, targets: ['q_proj' as const] };
  const samples = [
    { id: 'a', index: 1, promptIds: [1, 2, 3], responseIds: [4, 5], truncatedBy: 0 },
    { id: 'b', index: 2, promptIds: Array(50).fill(1), responseIds: Array(20).fill(2), truncatedBy: 0 },
  ];
  const kept = estimateTrainBytes(CONFIG, 'q8', lora, 69, 20, false);
  const recomputed = estimateTrainBytes(CONFIG, 'q8', lora, 69, 20, true);

  it('sizes the step on the longest sample: its tokens fed and its response rows', () => {
    expect(planMemory(CONFIG, 'q8', lora, samples, false, null)).toEqual({
      estimate: kept,
      recompute: false,
      kept: null,
      budgetBytes: null,
      passTokens: DEFAULT_TRAIN_PASS_TOKENS,
    });
  });

  it('packed: sizes the step on the batch longest samples in one pass; a budget caps the pass at the tokens it allows', () => {
    expect(planMemory(CONFIG, 'q8', lora, samples, false, null, 2).estimate).toEqual(estimateTrainBytes(CONFIG, 'q8', lora, 73, 22, false));
    const perToken = estimateTrainBytes(CONFIG, 'q8', lora, 1, 1, false);
    const budget = perToken.model + perToken.lora + 70.5 * perToken.activations; // room for 70 tokens, each scored
    const capped = planMemory(CONFIG, 'q8', lora, samples, false, budget / 2 ** 20, 2);
    expect(capped.passTokens).toBe(70);
    expect(capped.recompute).toBe(false);
    expect(capped.estimate).toEqual(estimateTrainBytes(CONFIG, 'q8', lora, 70, 22, false));
    expect(capped.estimate.total).toBeLessThanOrEqual(budget);
  });

  it('switches to recomputing layers when only that fits', () => {
    expect(recomputed.total).toBeLessThan(kept.total);
    const budget = (kept.total - 1) / 2 ** 20;
    expect(planMemory(CONFIG, 'q8', lora, samples, false, budget)).toEqual({
      estimate: recomputed,
      recompute: true,
      kept,
      budgetBytes: kept.total - 1,
      passTokens: 69, // the longest sample: a packed pass holds no more than it
    });
  });

  it('refuses a run over the budget even recomputing, with the needed and allowed sizes', () => {
    const message = messageOf(() => planMemory(CONFIG, 'q8', lora, samples, false, 0.5));
    expect(message).toMatch(
      /^a training step needs about [\d.]+ MiB even recomputing layers \(model .*, activations .* for 70 tokens\), over the memory budget of 0.5 MiB;/,
    );
  });
});

describe('resume', () => {
  it('a checkpoint of the previous version (dropout in its training config) resumes with that dropout', async () => {
    const n = 4;
    const old = checkpointBytes(
      {
        config: { ...DEFAULT_TRAIN, seed: 9, dropout: 0.2 } as typeof DEFAULT_TRAIN,
        state: { step: 3 },
        params: new Float32Array(n).fill(1),
        m: new Float32Array(n),
        v: new Float32Array(n),
      },
      { r: 8, alpha: 16, dropout: 0.05, targets: ['q_proj'] },
    );
    const plan = await planTraining({ ...appRequest(), resume: { checkpoint: old } }, { config: CONFIG, quant: 'q8', id: 'm' }, tok);
    expect(plan.lora).toEqual({ r: 8, alpha: 16, dropout: 0.2, targets: ['q_proj'] });
    expect(plan.train).toEqual({ ...DEFAULT_TRAIN, seed: 9 });
    expect(plan.resume?.state.step).toBe(3);
    expect(plan.resume?.params).toEqual(new Float32Array(n).fill(1));
  });

  it('a run continues only on the model it trained', async () => {
    const ck = checkpointBytes(
      { config: DEFAULT_TRAIN, state: { step: 1 }, params: new Float32Array(4), m: new Float32Array(4), v: new Float32Array(4) },
      { r: 8, alpha: 8, dropout: 0, targets: ['q_proj'] },
    );
    const request = { ...appRequest(), resume: { checkpoint: ck, model: { id: 'other', quant: 'q8' as const } } };
    await expect(planTraining(request, { config: CONFIG, quant: 'q8', id: 'm' }, tok)).rejects.toThrow(
      'This run trained other with q8 weights; load that model (now m, q8) to continue it.',
    );
  });
});
