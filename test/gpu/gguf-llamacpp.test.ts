/**
 * Real llama.cpp as the oracle (node-llama-cpp's prebuilt CPU binary, nothing mocked): a seeded
 * tiny Llama written as a GGUF model (F32) gives in llama.cpp the next-token log-probs our engine
 * gives on the same ids, and the LoRA adapter `ggufLoraAdapter` exports, loaded on top of it the
 * way `llama-cli --lora` loads it, reproduces our engine with that adapter on all seven
 * projections. Without llama.cpp's q/k row order in B the adapter does not (the check can fail).
 *
 * Tolerance: 1e-5 absolute + 1e-5 relative per log-prob (log-probs here are −8 to −15; the largest
 * difference seen is 4e-6). Both sides compute in f32: llama.cpp's CPU matmul of F32 weights runs
 * in f32, and the contexts are made with an F32 KV cache and without flash attention. llama.cpp's
 * default KV cache stores K and V as f16, which alone moves these log-probs by up to 4e-3; what
 * remains with F32 is the order of f32 sums.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type ControlledEvaluateInputItem, getLlama, type Llama, type LlamaModel, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { generate } from '../../src/engine/generate.ts';
import { GpuLlama } from '../../src/engine/llama.ts';
import { ggufLoraAdapter } from '../../src/export/gguf.ts';
import { makeTinyLlama } from '../../src/model/demo.ts';
import { ggufRopeRowSource } from '../../src/model/gguf-format.ts';
import type { LoraConfig, LoraSet } from '../../src/model/lora.ts';
import { projectionShapes } from '../../src/model/size.ts';
import { loadModelFolder } from '../../src/model/loader.ts';
import type { QuantFormat } from '../../src/model/quant.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { PROJECTIONS } from '../../src/model/weights.ts';
import type { LlamaWeights } from '../../src/model/weights.ts';
import { fillNormal, Rng } from '../../src/util/rng.ts';
import {
  type GgufFixtureType,
  type GgufRawTensors,
  type GgufRawType,
  kQuantTinyLlama,
  randomQuantBlocks,
  rawBlockBytes,
  tinyLlamaGguf,
} from '../fixtures/gguf-llama.ts';
import { makeTmpDir, SMOLLM2_TOKENIZER_DIR, SMOLLM2_VOCAB } from '../fixtures/tiny-llama.ts';
import { maxViolation, testGpu, type TestGpu } from '../helpers/gpu.ts';

const RTOL = 1e-5;
const ATOL = 1e-5;

let g: TestGpu;
let tmp: string;
let llama: Llama;
let model: LlamaModel;
let weights: LlamaWeights;
const T = 24;
let ids: number[];
let targets: number[];

beforeAll(async () => {
  g = await testGpu();
  tmp = await makeTmpDir('gguf-llamacpp');
  // GQA (4 query heads over 2 KV heads of 16), untied lm-head, in the SmolLM2 vocabulary the GGUF tokenizer needs.
  weights = makeTinyLlama({
    seed: 31,
    vocabSize: SMOLLM2_VOCAB,
    hiddenSize: 64,
    intermediateSize: 96,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    tie: false,
  });
  const modelPath = path.join(tmp, 'model.gguf');
  await writeFile(modelPath, tinyLlamaGguf(weights, SMOLLM2_TOKENIZER_DIR));
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  model = await llama.loadModel({ modelPath });
  const rng = new Rng(8);
  const all = Array.from({ length: T + 1 }, () => rng.int(SMOLLM2_VOCAB));
  ids = all.slice(0, T);
  targets = all.slice(1);
});

afterAll(async () => {
  await model?.dispose();
  await llama?.dispose();
  g?.destroy();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** llama.cpp contexts in f32 throughout: an F32 KV cache, no flash attention. */
const F32_CONTEXT = {
  contextSize: 64,
  batchSize: 64,
  sequences: 1,
  flashAttention: false,
  experimentalKvCacheKeyType: 'F32',
  experimentalKvCacheValueType: 'F32',
} as const;

/** log p(targets[i] | ids[0..i]) for every i, from llama.cpp's raw logits (optionally with a LoRA file). */
async function llamaCppLogProbs(loraPath?: string, on: LlamaModel = model): Promise<number[]> {
  const context = await on.createContext({
    ...F32_CONTEXT,
    ...(loraPath === undefined ? {} : { lora: { adapters: [{ filePath: loraPath }] } }),
  });
  try {
    const input: ControlledEvaluateInputItem[] = ids.map((id) => [id as Token, { generateNext: { logits: true } }]);
    const out = await context.getSequence().controlledEvaluate(input);
    return out.map((r, i) => {
      const logits = r?.next?.logits;
      if (logits === undefined || logits.size !== SMOLLM2_VOCAB) throw new Error(`llama.cpp gave no full logits at position ${i}`);
      let max = -Infinity;
      for (const v of logits.values()) max = Math.max(max, v);
      let sum = 0;
      for (const v of logits.values()) sum += Math.exp(v - max);
      const target = logits.get(targets[i] as Token);
      if (target === undefined) throw new Error(`llama.cpp gave no logit for token ${targets[i]}`);
      return target - max - Math.log(sum);
    });
  } finally {
    await context.dispose();
  }
}

/** Our engine's log-probs (f32 weights unless told) for the same ids and targets. */
async function engineLogProbs(lora?: LoraSet, from: LlamaWeights = weights, quant: QuantFormat = 'f32'): Promise<Float32Array> {
  const gpuModel = GpuLlama.create(g.ops, from, quant, lora);
  try {
    return (
      await gpuModel.score(
        ids,
        ids.map((_, i) => i),
        targets,
      )
    ).logp;
  } finally {
    gpuModel.destroy();
  }
}

describe('GGUF for llama.cpp, checked against llama.cpp itself', () => {
  it('the model written as GGUF gives in llama.cpp the log-probs our engine gives', async () => {
    const [ours, theirs] = [await engineLogProbs(), await llamaCppLogProbs()];
    expect(maxViolation(theirs, ours, RTOL, ATOL)).toBeLessThanOrEqual(1);
  });

  it('an exported LoRA on all seven projections reproduces our engine in llama.cpp; B of q/k in HF row order does not', async () => {
    const config: LoraConfig = { r: 8, alpha: 12, dropout: 0, targets: [...PROJECTIONS] };
    const shapes = projectionShapes(weights.config);
    const rng = new Rng(21);
    const lora: LoraSet = weights.layers.map(() =>
      Object.fromEntries(
        PROJECTIONS.map((p) => {
          const [out, inFeatures] = shapes[p];
          const A = fillNormal(new Float32Array(config.r * inFeatures), 0.3, rng);
          const B = fillNormal(new Float32Array(out * config.r), 0.3, rng);
          return [p, { A, B, r: config.r, scale: config.alpha / config.r }];
        }),
      ),
    );
    const adapterPath = path.join(tmp, 'adapter.gguf');
    await writeFile(adapterPath, ggufLoraAdapter(lora, config, weights.config));

    const ours = await engineLogProbs(lora);
    const base = await engineLogProbs();
    expect(maxViolation(ours, base, RTOL, ATOL)).toBeGreaterThan(1000); // the adapter really acts
    expect(maxViolation(await llamaCppLogProbs(adapterPath), ours, RTOL, ATOL)).toBeLessThanOrEqual(1);

    // The same adapter with B of q_proj/k_proj pre-scattered so that the export's permutation
    // leaves it in Hugging Face's row order: llama.cpp then applies the wrong rows.
    const heads = { q_proj: weights.config.numHeads, k_proj: weights.config.numKvHeads } as const;
    const unpermuted: LoraSet = lora.map((layer) => {
      const copy = { ...layer };
      for (const p of ['q_proj', 'k_proj'] as const) {
        const f = layer[p];
        if (f === undefined) continue;
        const source = ggufRopeRowSource(f.B.length / f.r, heads[p]);
        const B = new Float32Array(f.B.length);
        source.forEach((from, row) => B.set(f.B.subarray(row * f.r, (row + 1) * f.r), from * f.r));
        copy[p] = { ...f, B };
      }
      return copy;
    });
    const wrongPath = path.join(tmp, 'adapter-hf-rows.gguf');
    await writeFile(wrongPath, ggufLoraAdapter(unpermuted, config, weights.config));
    expect(maxViolation(await llamaCppLogProbs(wrongPath), ours, RTOL, ATOL)).toBeGreaterThan(1000);
  });
});

/**
 * Quantized GGUF models (oracle group 3): the same seeded model written as Q8_0 and as Q4_0 (as
 * ggml's reference quantizers write them), loaded by our engine from the file and by llama.cpp
 * from the same file. Q8_0 runs on our q8 weights and Q4_0 on our q4 weights, which hold the
 * file's own codes and f16 scales (`storedBlocks`, see test/unit/gguf-reader.test.ts); only the
 * vocabulary table of a q4 model is 8-bit and so re-quantized from the Q4_0 values.
 *
 * Tolerance: llama.cpp's CPU matmul with Q8_0 or Q4_0 weights quantizes the activations to Q8_0
 * blocks of 32 first (ggml-cpu's `vec_dot_type` of both types), a relative error of up to 1/254
 * of each block's largest activation, that our engine (f32 activations) does not make; log-probs
 * here then differ by up to QUANT_ATOL (seen: 0.064 for Q8_0, 0.087 for Q4_0 with its 8-bit table, on log-probs of
 * −8 to −15; a wrong row or nibble order moves them by more than 1).
 */
const QUANT_ATOL = 0.1;

describe('quantized GGUF models, our engine against llama.cpp on the same file', () => {
  /** Writes the model as `type`, loads it with our loader and with llama.cpp. */
  async function both(type: GgufFixtureType): Promise<{ ours: LlamaWeights; theirs: LlamaModel }> {
    const name = `model-${type}.gguf`;
    await writeFile(path.join(tmp, name), tinyLlamaGguf(weights, SMOLLM2_TOKENIZER_DIR, type));
    const ours = (await loadModelFolder(new FolderSource(tmp, name))).weights;
    return { ours, theirs: await llama.loadModel({ modelPath: path.join(tmp, name) }) };
  }

  it('the F32 GGUF loaded by our engine gives exactly the log-probs of the model it was written from', async () => {
    const { ours, theirs } = await both('F32');
    await theirs.dispose();
    expect([...(await engineLogProbs(undefined, ours))]).toEqual([...(await engineLogProbs())]);
  });

  for (const [type, quant] of [
    ['Q8_0', 'q8'],
    ['Q4_0', 'q4'],
  ] as const) {
    it(`${type}: our engine (${quant}) on the file matches llama.cpp on the same file`, async () => {
      const { ours, theirs } = await both(type);
      try {
        const mine = await engineLogProbs(undefined, ours, quant);
        const reference = await llamaCppLogProbs(undefined, theirs);
        const f32 = await engineLogProbs();
        const worst = Math.max(...reference.map((v, i) => Math.abs(v - mine[i])));
        const effect = Math.max(...f32.map((v, i) => Math.abs(v - mine[i])));
        console.log(
          `${type}: largest |log-prob difference| to llama.cpp ${worst.toExponential(2)}, to the F32 model ${effect.toExponential(2)}`,
        );
        expect(worst).toBeLessThanOrEqual(QUANT_ATOL);
        // Q4_0's weight error moves the log-probs far more than the tolerance (so a wrong nibble or row
        // order could not pass); Q8_0's is of the size of llama.cpp's own Q8 activations (both 1/254).
        if (type === 'Q4_0') expect(effect).toBeGreaterThan(3 * worst);
      } finally {
        await theirs.dispose();
      }
    });
  }
});

/**
 * Block-quantized GGUF models: every projection matrix of a seeded model (hidden size and FFN width
 * 256, whole K-quant super-blocks) as blocks of seeded random bytes of one type (`randomQuantBlocks`;
 * the tied vocabulary table F32): the K-quants Q2_K to Q6_K and the 32-value Q4_1, Q5_0 and Q5_1, loaded by our engine with f32 weights — the exact decode — and by llama.cpp from the same file.
 *
 * Tolerance: llama.cpp's CPU matmul quantizes the activations to 8 bits for these weights (Q8_K for
 * the K-quants, Q8_0/Q8_1 for the others: ggml-cpu's `vec_dot_type`), an error our f32 activations
 * do not make; the log-probs here then differ by up to KQUANT_ATOL (seen: 0.084 for Q4_K, 0.098 for
 * Q6_K, the others in each run's log; Q4_0 with Q8_0 activations gave 0.087 above). A decode with
 * one field moved (`miswired`) moves them by several times that: by 20 for Q4_K's d and dmin
 * swapped, 4.9 for Q6_K's neighbouring scales. Our q8 re-quantization of the decoded weights (the
 * extra error of a q8 run) moved ours by 0.060 (Q4_K) and 0.074 (Q6_K), logged with each run.
 */
const KQUANT_ATOL = 0.15;

describe('block-quantized GGUF models, our exact decode against llama.cpp on the same file', () => {
  /**
   * The same blocks with one field moved, as a wrong decoder would read them: the scale and the
   * offset swapped (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K); Q5_0's fifth bits of elements 0–15 and 16–31
   * swapped; Q3_K's hmask halves swapped; the scales of Q6_K sub-blocks 2i and 2i + 1 swapped.
   */
  const miswired = (raw: GgufRawTensors): GgufRawTensors =>
    new Map(
      [...raw].map(([name, { type, blocks }]) => {
        const wrong = blocks.slice();
        const blockBytes = rawBlockBytes(type);
        for (let at = 0; at < wrong.length; at += blockBytes) {
          const scaleAt = type === 'Q2_K' ? at + 80 : at; // where d and its offset sit
          const pairs =
            type === 'Q6_K'
              ? Array.from({ length: 8 }, (_, i) => [at + 192 + 2 * i, at + 193 + 2 * i])
              : type === 'Q5_0'
                ? [
                    [at + 2, at + 4],
                    [at + 3, at + 5],
                  ]
                : type === 'Q3_K'
                  ? Array.from({ length: 16 }, (_, i) => [at + i, at + 16 + i])
                  : [
                      [scaleAt, scaleAt + 2],
                      [scaleAt + 1, scaleAt + 3],
                    ];
          for (const [a, b] of pairs) [wrong[a], wrong[b]] = [blocks[b], blocks[a]];
        }
        return [name, { type, blocks: wrong }];
      }),
    );

  const seeds: Record<GgufRawType, number> = { Q4_K: 41, Q6_K: 42, Q5_K: 43, Q4_1: 44, Q5_0: 45, Q5_1: 46, Q2_K: 47, Q3_K: 48 };
  for (const type of ['Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q4_1', 'Q5_0', 'Q5_1'] as const) {
    it(`${type}: our engine on the decoded file matches llama.cpp on it; a miswired decode does not`, async () => {
      const w = kQuantTinyLlama(17);
      const raw = randomQuantBlocks(w.config, () => type, new Rng(seeds[type]));
      const name = `model-${type}.gguf`;
      const wrongName = `model-${type}-miswired.gguf`;
      await writeFile(path.join(tmp, name), tinyLlamaGguf(w, SMOLLM2_TOKENIZER_DIR, 'F32', raw));
      await writeFile(path.join(tmp, wrongName), tinyLlamaGguf(w, SMOLLM2_TOKENIZER_DIR, 'F32', miswired(raw)));
      const ours = (await loadModelFolder(new FolderSource(tmp, name))).weights;
      const wrong = (await loadModelFolder(new FolderSource(tmp, wrongName))).weights;
      const theirs = await llama.loadModel({ modelPath: path.join(tmp, name) });
      try {
        const reference = await llamaCppLogProbs(undefined, theirs);
        const diff = (a: ArrayLike<number>) => Math.max(...reference.map((v, i) => Math.abs(v - a[i])));
        const mine = await engineLogProbs(undefined, ours);
        const worst = diff(mine);
        const miswiredWorst = diff(await engineLogProbs(undefined, wrong));
        const q8 = await engineLogProbs(undefined, ours, 'q8');
        const q8Effect = Math.max(...q8.map((v, i) => Math.abs(v - mine[i])));
        console.log(
          `${type}: largest |log-prob difference| to llama.cpp ${worst.toExponential(2)} (miswired decode ${miswiredWorst.toExponential(2)}); our q8 re-quantization moves ours by ${q8Effect.toExponential(2)}`,
        );
        expect(worst).toBeLessThanOrEqual(KQUANT_ATOL);
        expect(miswiredWorst).toBeGreaterThan(3 * KQUANT_ATOL);
      } finally {
        await theirs.dispose();
      }
    });
  }
});

/**
 * Llama 3.1/3.2 GGUF files keep their llama3 rope scaling as a `rope_freqs` tensor (one divisor
 * per frequency), which llama.cpp hands to ggml's rope as `freq_factors`. The same seeded model
 * with seeded factors in [1, 8] (the first 1, as in Llama 3.1's), loaded by our engine from the
 * file and by llama.cpp from the same file, must give the same log-probs (same tolerance as the F32
 * model above); our engine without the factors must not (so the check can fail).
 */
describe('GGUF files with rope_freqs (Llama 3.1/3.2), our engine against llama.cpp on the same file', () => {
  it('gives llama.cpp’s log-probs and greedy next tokens; without the factors it does not', async () => {
    const rng = new Rng(77);
    const ropeFreqFactors = Array.from({ length: weights.config.headDim / 2 }, (_, i) => (i === 0 ? 1 : Math.fround(rng.uniform(1, 8))));
    const scaled: LlamaWeights = { ...weights, config: { ...weights.config, ropeFreqFactors } };
    const name = 'model-rope-freqs.gguf';
    await writeFile(path.join(tmp, name), tinyLlamaGguf(scaled, SMOLLM2_TOKENIZER_DIR));
    const ours = (await loadModelFolder(new FolderSource(tmp, name))).weights;
    expect(ours.config.ropeFreqFactors).toEqual(ropeFreqFactors);
    const theirs = await llama.loadModel({ modelPath: path.join(tmp, name) });
    try {
      const reference = await llamaCppLogProbs(undefined, theirs);
      const mine = await engineLogProbs(undefined, ours);
      const worst = Math.max(...reference.map((v, i) => Math.abs(v - mine[i])));
      console.log(`rope_freqs: largest |log-prob difference| to llama.cpp ${worst.toExponential(2)}`);
      expect(maxViolation(reference, mine, RTOL, ATOL)).toBeLessThanOrEqual(1);
      const withoutFactors = await engineLogProbs(undefined, weights);
      expect(maxViolation(reference, withoutFactors, RTOL, ATOL)).toBeGreaterThan(1000);
      // greedy generation (our decode path: KV cache, one row per step) gives llama.cpp's greedy tokens
      const prompt = ids.slice(0, 8);
      const gpuModel = GpuLlama.create(g.ops, ours, 'f32');
      let mineGreedy: number[];
      try {
        mineGreedy = (await generate(gpuModel, prompt, { maxNewTokens: 8, temperature: 0, seed: 0, stopIds: [] })).ids;
      } finally {
        gpuModel.destroy();
      }
      const context = await theirs.createContext(F32_CONTEXT);
      try {
        const theirGreedy: number[] = [];
        for await (const token of context.getSequence().evaluate(prompt as Token[], { temperature: 0 })) {
          theirGreedy.push(token);
          if (theirGreedy.length === 8) break;
        }
        expect(mineGreedy).toEqual(theirGreedy);
      } finally {
        await context.dispose();
      }
    } finally {
      await theirs.dispose();
    }
  });
});
