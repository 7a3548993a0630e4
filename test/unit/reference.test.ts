/**
 * Checks that make the two references trustworthy: the tfjs Llama forward (`llama-tf.ts`) and the
 * plain-TypeScript kernel references (`cpu-ops.ts`) agree with each other on seeded tiny models,
 * and each satisfies properties that hold for HF `LlamaForCausalLM` (normalised log-probs,
 * causality, GQA = MHA with duplicated kv heads, llama3 rope scaling, LoRA algebra).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import type { LlamaConfig } from '../../src/model/config.ts';
import type { LayerWeights, LlamaWeights } from '../../src/model/weights.ts';
import {
  addRef,
  attentionRef,
  embeddingRef,
  lmHeadRef,
  loraRef,
  matmulRef,
  rmsnormRef,
  ropeInvFreq,
  ropeRef,
  swigluRef,
} from '../reference/cpu-ops.ts';
import {
  applyRopeTf,
  disposeLlamaTensors,
  gradientsRegistered,
  initReferenceBackend,
  linearTf,
  llamaLogitsTf,
  projectionShape,
  referenceForward,
  referenceInvFreq,
  referenceLogProbs,
  tokenLogProbsTf,
  weightsToTensors,
  type LoraDict,
  type LoraFactors,
  type ProjectionName,
} from '../reference/llama-tf.ts';

// ---------------------------------------------------------------------------------------------
// Seeded tiny models (local generator: no dependency on src/util/rng.ts).

/** mulberry32: a small seeded PRNG returning floats in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n uniform values in [-a, a). */
function uniform(rand: () => number, n: number, a: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rand() - 1) * a;
  return out;
}

function makeConfig(over: Partial<LlamaConfig>): LlamaConfig {
  return {
    modelType: 'llama',
    vocabSize: 37,
    hiddenSize: 24,
    intermediateSize: 40,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 256,
    tieWordEmbeddings: true,
    bosTokenId: null,
    eosTokenId: null,
    ...over,
  };
}

/** A llama3 scaling whose three frequency bands are all populated for D=8, theta=1e4. */
const SMALL_LLAMA3 = {
  ropeType: 'llama3',
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 64,
} as const;

/** Per-frequency divisors for head size 8, as a Llama 3.1 GGUF's rope_freqs holds them (1 for high frequencies). */
const ROPE_FREQ_FACTORS = [1, 1.75, 5.5, 8];

function randomWeights(config: LlamaConfig, seed: number): LlamaWeights {
  const rand = mulberry32(seed);
  const { vocabSize: V, hiddenSize: C, intermediateSize: F, numHeads: H, numKvHeads: KVH, headDim: D } = config;
  const lin = (out: number, inp: number) => uniform(rand, out * inp, 1.5 / Math.sqrt(inp));
  const norm = (n: number) => {
    const w = uniform(rand, n, 0.2);
    for (let i = 0; i < n; i++) w[i]! += 1;
    return w;
  };
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    layers.push({
      inputNorm: norm(C),
      q: lin(H * D, C),
      k: lin(KVH * D, C),
      v: lin(KVH * D, C),
      o: lin(C, H * D),
      postNorm: norm(C),
      gate: lin(F, C),
      up: lin(F, C),
      down: lin(C, F),
    });
  }
  const embed = uniform(rand, V * C, 1);
  return {
    config,
    embed,
    layers,
    finalNorm: norm(C),
    lmHead: config.tieWordEmbeddings ? null : uniform(rand, V * C, 1),
  };
}

function randomIds(n: number, V: number, seed: number): number[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => Math.floor(rand() * V));
}

const ALL_PROJECTIONS: ProjectionName[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** LoRA on every projection of every layer; B is zero when `zeroB`. */
function randomLora(config: LlamaConfig, r: number, seed: number, zeroB: boolean): LoraDict {
  const rand = mulberry32(seed);
  const dict: LoraDict = [];
  for (let i = 0; i < config.numLayers; i++) {
    const layer: Partial<Record<ProjectionName, LoraFactors>> = {};
    for (const name of ALL_PROJECTIONS) {
      const [nOut, nIn] = projectionShape(config, name);
      layer[name] = {
        A: uniform(rand, r * nIn, 1 / Math.sqrt(nIn)),
        B: zeroB ? new Float32Array(nOut * r) : uniform(rand, nOut * r, 0.5),
        r,
        scale: 2 / r,
      };
    }
    dict.push(layer);
  }
  return dict;
}

// ---------------------------------------------------------------------------------------------
// The cpu-ops composition: an independent implementation of the whole forward pass.

function cpuForward(w: LlamaWeights, ids: number[], lora?: LoraDict): { hidden: Float32Array; logits: Float32Array } {
  const cfg = w.config;
  const { vocabSize: V, hiddenSize: C, intermediateSize: F, numHeads: H, numKvHeads: KVH, headDim: D, rmsNormEps: eps } = cfg;
  const T = ids.length;
  const invFreq = ropeInvFreq(D, cfg.ropeTheta, cfg.ropeScaling, cfg.ropeFreqFactors);
  let h = embeddingRef(w.embed, V, C, ids); // (T,C)
  w.layers.forEach((l, i) => {
    // x (T,K), W (N,K) -> (T,N), plus the LoRA delta when present
    const proj = (name: ProjectionName, x: Float32Array, W: Float32Array, N: number, K: number): Float32Array => {
      const y = matmulRef(x, W, T, N, K);
      const f = lora?.[i]?.[name];
      return f ? addRef(y, loraRef(x, f.A, f.B, T, K, N, f.r, f.scale)) : y;
    };
    const x = rmsnormRef(h, l.inputNorm, T, C, eps).out;
    const q = ropeRef(proj('q_proj', x, l.q, H * D, C), T, H, D, invFreq);
    const k = ropeRef(proj('k_proj', x, l.k, KVH * D, C), T, KVH, D, invFreq);
    const v = proj('v_proj', x, l.v, KVH * D, C);
    const a = attentionRef(q, k, v, T, H, KVH, D).out; // (T, H*D)
    h = addRef(h, proj('o_proj', a, l.o, C, H * D));
    const x2 = rmsnormRef(h, l.postNorm, T, C, eps).out;
    const act = swigluRef(proj('gate_proj', x2, l.gate, F, C), proj('up_proj', x2, l.up, F, C)); // (T,F)
    h = addRef(h, proj('down_proj', act, l.down, C, F));
  });
  const hidden = rmsnormRef(h, w.finalNorm, T, C, eps).out;
  const head = cfg.tieWordEmbeddings ? w.embed : w.lmHead!;
  return { hidden, logits: matmulRef(hidden, head, T, V, C) };
}

/** max |a - b| / max |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

beforeAll(async () => {
  await initReferenceBackend();
});

// ---------------------------------------------------------------------------------------------

describe('cpu-ops kernel references', () => {
  it('matmulRef and rmsnormRef on hand-computed values', () => {
    // x (2,2) @ w (3,2)^T
    const out = matmulRef(new Float32Array([1, 2, 3, 4]), new Float32Array([1, 0, 0, 1, 1, 1]), 2, 3, 2);
    expect(Array.from(out)).toEqual([1, 2, 3, 3, 4, 7]);
    const { out: n, rstd } = rmsnormRef(new Float32Array([3, 4]), new Float32Array([1, 2]), 1, 2, 0);
    const r = 1 / Math.sqrt(12.5);
    expect(rstd[0]).toBeCloseTo(r, 7);
    expect(n[0]).toBeCloseTo(3 * r, 6);
    expect(n[1]).toBeCloseTo(8 * r, 6);
  });

  it('embeddingRef gathers rows and rejects bad ids', () => {
    const table = new Float32Array([0, 1, 10, 11, 20, 21]); // (3,2)
    expect(Array.from(embeddingRef(table, 3, 2, [2, 0, 2]))).toEqual([20, 21, 0, 1, 20, 21]);
    expect(() => embeddingRef(table, 3, 2, [3])).toThrow(RangeError);
  });

  it('swigluRef = silu(gate) * up', () => {
    const out = swigluRef(new Float32Array([0, 1, -2]), new Float32Array([5, 2, 3]));
    expect(out[0]).toBe(0);
    expect(out[1]).toBeCloseTo(2 / (1 + Math.exp(-1)), 6);
    expect(out[2]).toBeCloseTo((3 * -2) / (1 + Math.exp(2)), 6);
  });

  it('ropeRef: identity at position 0, norm-preserving, posOffset consistent, equals the tfjs rotation', () => {
    const T = 6;
    const nH = 3;
    const D = 8;
    const inv = ropeInvFreq(D, 10000, null);
    const x = uniform(mulberry32(1), T * nH * D, 1);
    const y = ropeRef(x, T, nH, D, inv);
    expect(maxAbsDiff(y.subarray(0, nH * D), x.subarray(0, nH * D))).toBe(0);
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < nH; h++) {
        for (let i = 0; i < D / 2; i++) {
          const b = t * nH * D + h * D;
          const n0 = Math.hypot(x[b + i]!, x[b + i + D / 2]!);
          const n1 = Math.hypot(y[b + i]!, y[b + i + D / 2]!);
          expect(Math.abs(n0 - n1)).toBeLessThan(1e-6);
        }
      }
    }
    const tail = ropeRef(x.subarray(2 * nH * D), T - 2, nH, D, inv, 2);
    expect(maxAbsDiff(tail, y.subarray(2 * nH * D))).toBeLessThan(1e-6);
    // tfjs: (heads,T,D) layout with cos/sin of cat(freqs, freqs)
    const cfg = makeConfig({ headDim: D });
    const tfOut = tf.tidy(() => {
      const xt = tf.transpose(tf.tensor3d(x, [T, nH, D]), [1, 0, 2]) as tf.Tensor3D;
      const freqs = tf.mul(tf.reshape(tf.range(0, T, 1, 'float32'), [T, 1]), tf.tensor2d(referenceInvFreq(cfg), [1, D / 2]));
      const emb = tf.concat([freqs, freqs], 1) as tf.Tensor2D;
      return tf.transpose(applyRopeTf(xt, tf.cos(emb), tf.sin(emb)), [1, 0, 2]);
    });
    expect(maxAbsDiff(tfOut.dataSync(), y)).toBeLessThan(1e-5);
    tfOut.dispose();
  });

  it('attentionRef: T=1 returns the mapped v head; zero queries average the visible v rows', () => {
    const H = 4;
    const KVH = 2;
    const D = 3;
    const rand = mulberry32(2);
    const q1 = uniform(rand, H * D, 1);
    const k1 = uniform(rand, KVH * D, 1);
    const v1 = uniform(rand, KVH * D, 1);
    const one = attentionRef(q1, k1, v1, 1, H, KVH, D);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / 2);
      expect(maxAbsDiff(one.out.subarray(h * D, h * D + D), v1.subarray(kvh * D, kvh * D + D))).toBe(0);
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q1[h * D + d]! * k1[kvh * D + d]!;
      expect(one.lse[h]).toBeCloseTo(dot / Math.sqrt(D), 6);
    }
    const T = 5;
    const k = uniform(rand, T * KVH * D, 1);
    const v = uniform(rand, T * KVH * D, 1);
    const { out, lse } = attentionRef(new Float32Array(T * H * D), k, v, T, H, KVH, D);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / 2);
      for (let t = 0; t < T; t++) {
        expect(lse[h * T + t]).toBeCloseTo(Math.log(t + 1), 6);
        for (let d = 0; d < D; d++) {
          let mean = 0;
          for (let s = 0; s <= t; s++) mean += v[s * KVH * D + kvh * D + d]! / (t + 1);
          expect(out[t * H * D + h * D + d]).toBeCloseTo(mean, 6);
        }
      }
    }
  });

  it('loraRef and lmHeadRef agree with tfjs ops', () => {
    const rand = mulberry32(3);
    const [T, K, N, r, V] = [5, 7, 9, 3, 11];
    const x = uniform(rand, T * K, 1);
    const A = uniform(rand, r * K, 1);
    const B = uniform(rand, N * r, 1);
    const delta = loraRef(x, A, B, T, K, N, r, 0.75);
    const tfDelta = tf.tidy(() =>
      linearTf(tf.tensor2d(x, [T, K]), tf.zeros([N, K]), { A: tf.tensor2d(A, [r, K]), B: tf.tensor2d(B, [N, r]), scale: 0.75 }),
    );
    expect(relErr(tfDelta.dataSync(), delta)).toBeLessThan(1e-6);
    tfDelta.dispose();

    const w = uniform(rand, V * K, 2);
    const targets = [3, -1, 0, 10, 5];
    const { lse, logp } = lmHeadRef(x, w, T, V, K, targets);
    expect(Number.isNaN(logp[1])).toBe(true);
    const tfLogp = tf.tidy(() => tokenLogProbsTf(tf.matMul(tf.tensor2d(x, [T, K]), tf.tensor2d(w, [V, K]), false, true), targets));
    expect(maxAbsDiff(tfLogp.dataSync(), [logp[0]!, logp[2]!, logp[3]!, logp[4]!])).toBeLessThan(1e-5);
    tfLogp.dispose();
    const logits = matmulRef(x, w, T, V, K);
    for (let t = 0; t < T; t++) {
      let s = 0;
      for (let vi = 0; vi < V; vi++) s += Math.exp(logits[t * V + vi]! - lse[t]!);
      expect(s).toBeCloseTo(1, 5);
    }
  });
});

describe('rope inverse frequencies', () => {
  it('without scaling: 1 / theta^(2i/D), tfjs and cpu-ops agree', () => {
    const cfg = makeConfig({ headDim: 16, ropeTheta: 500000 });
    const inv = ropeInvFreq(16, 500000, null);
    for (let i = 0; i < 8; i++) expect(inv[i]).toBeCloseTo(500000 ** (-(2 * i) / 16), 15);
    expect(relErr(referenceInvFreq(cfg), inv)).toBeLessThan(1e-6);
  });

  it('explicit factors divide each frequency: theta^(-2i/D) / factor[i], tfjs and cpu-ops agree', () => {
    const inv = ropeInvFreq(8, 10000, null, ROPE_FREQ_FACTORS);
    for (let i = 0; i < 4; i++) expect(inv[i]! / (10000 ** (-(2 * i) / 8) / ROPE_FREQ_FACTORS[i]!)).toBeCloseTo(1, 14);
    expect(relErr(referenceInvFreq(makeConfig({ ropeFreqFactors: ROPE_FREQ_FACTORS })), inv)).toBeLessThan(1e-6);
    expect(referenceInvFreq(makeConfig({}))[3]! / inv[3]!).toBeCloseTo(8, 5); // without the factors: 8× faster
  });

  it('llama3 scaling (Llama-3.2 parameters): high frequencies unchanged, low divided by factor, medium between', () => {
    const scaling = { ropeType: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } as const;
    const D = 64;
    const base = ropeInvFreq(D, 500000, null);
    const scaled = ropeInvFreq(D, 500000, scaling);
    const counts = { high: 0, medium: 0, low: 0 };
    for (let i = 0; i < D / 2; i++) {
      const wavelen = (2 * Math.PI) / base[i]!;
      if (wavelen < 8192 / 4) {
        counts.high++;
        expect(scaled[i]).toBe(base[i]);
      } else if (wavelen > 8192 / 1) {
        counts.low++;
        expect(scaled[i]! / (base[i]! / 32)).toBeCloseTo(1, 12);
      } else {
        counts.medium++;
        expect(scaled[i]!).toBeGreaterThanOrEqual(base[i]! / 32);
        expect(scaled[i]!).toBeLessThanOrEqual(base[i]!);
        const smooth = (8192 / wavelen - 1) / (4 - 1);
        expect(scaled[i]! / ((1 - smooth) * (base[i]! / 32) + smooth * base[i]!)).toBeCloseTo(1, 12);
      }
    }
    expect(counts.high).toBeGreaterThan(0);
    expect(counts.medium).toBeGreaterThan(0);
    expect(counts.low).toBeGreaterThan(0);
    // the tfjs (HF op sequence, float32) version agrees
    const cfg = makeConfig({ headDim: D, ropeTheta: 500000, ropeScaling: scaling });
    expect(relErr(referenceInvFreq(cfg), scaled)).toBeLessThan(1e-6);
    // and so it does on the small scaling used by the model tests, where all bands are populated too
    const small = ropeInvFreq(8, 10000, SMALL_LLAMA3);
    const smallBase = ropeInvFreq(8, 10000, null);
    expect(small[0]).toBe(smallBase[0]); // wavelen 6.3 < 16
    expect(small[1]!).toBeLessThan(smallBase[1]!); // wavelen 63: medium
    expect(small[1]!).toBeGreaterThan(smallBase[1]! / 8);
    expect(small[2]! / (smallBase[2]! / 8)).toBeCloseTo(1, 12); // wavelen 628 > 64
    expect(relErr(referenceInvFreq(makeConfig({ ropeScaling: SMALL_LLAMA3 })), small)).toBeLessThan(1e-6);
  });
});

describe('llama-tf forward vs the cpu-ops composition', () => {
  const cases: Array<[string, Partial<LlamaConfig>]> = [
    ['tied, GQA, head_dim != hidden/heads, llama3 scaling', { ropeScaling: SMALL_LLAMA3 }],
    [
      'untied, MHA, no scaling',
      { vocabSize: 29, hiddenSize: 16, intermediateSize: 28, numHeads: 2, numKvHeads: 2, headDim: 8, tieWordEmbeddings: false },
    ],
    [
      'untied, MQA (one kv head), 3 layers, theta 5e5',
      { numLayers: 3, numHeads: 4, numKvHeads: 1, headDim: 6, ropeTheta: 500000, tieWordEmbeddings: false },
    ],
    ['explicit rope frequency factors (a GGUF file’s rope_freqs)', { ropeFreqFactors: ROPE_FREQ_FACTORS }],
  ];
  for (const [name, over] of cases) {
    it(name, () => {
      const cfg = makeConfig(over);
      const w = randomWeights(cfg, 11);
      const ids = randomIds(11, cfg.vocabSize, 12);
      const ref = referenceForward(w, ids);
      const cpu = cpuForward(w, ids);
      expect(ref.hidden.length).toBe(ids.length * cfg.hiddenSize);
      expect(ref.logits.length).toBe(ids.length * cfg.vocabSize);
      expect(relErr(ref.hidden, cpu.hidden)).toBeLessThan(1e-4);
      expect(relErr(ref.logits, cpu.logits)).toBeLessThan(1e-4);
    });
  }

  it('rope scaling changes the result (so the comparison above exercises it)', () => {
    const w = randomWeights(makeConfig({}), 11);
    const ws: LlamaWeights = { ...w, config: makeConfig({ ropeScaling: SMALL_LLAMA3 }) };
    const ids = randomIds(11, 37, 12);
    expect(maxAbsDiff(referenceForward(w, ids).logits, referenceForward(ws, ids).logits)).toBeGreaterThan(1e-3);
  });

  it('leaks no tensors', () => {
    const cfg = makeConfig({});
    const w = randomWeights(cfg, 5);
    const ids = randomIds(6, cfg.vocabSize, 6);
    referenceForward(w, ids, { lora: randomLora(cfg, 2, 7, false) });
    const before = tf.memory().numTensors;
    referenceForward(w, ids, { lora: randomLora(cfg, 2, 7, false) });
    referenceLogProbs(
      w,
      ids,
      ids.map(() => 1),
    );
    referenceInvFreq(cfg);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects out-of-range ids', () => {
    const w = randomWeights(makeConfig({}), 5);
    expect(() => referenceForward(w, [0, 37])).toThrow(RangeError);
    expect(() => referenceForward(w, [])).toThrow(RangeError);
  });
});

describe('log-probs', () => {
  const cfg = makeConfig({ tieWordEmbeddings: false, ropeScaling: SMALL_LLAMA3 });
  const w = randomWeights(cfg, 21);
  const ids = randomIds(7, cfg.vocabSize, 22);
  const T = ids.length;
  const V = cfg.vocabSize;

  it('exp(log p) sums to one over the vocabulary at every position', () => {
    const sums = new Float64Array(T);
    for (let v = 0; v < V; v++) {
      const lp = referenceLogProbs(
        w,
        ids,
        ids.map(() => v),
      );
      for (let t = 0; t < T; t++) sums[t] += Math.exp(lp[t]!);
    }
    for (let t = 0; t < T; t++) expect(Math.abs(sums[t]! - 1)).toBeLessThan(1e-5);
  });

  it('NaN where the target is -1; matches lmHeadRef on the cpu-ops hidden states', () => {
    const targets = [...ids.slice(1), -1];
    targets[2] = -1;
    const lp = referenceLogProbs(w, ids, targets);
    const cpu = cpuForward(w, ids);
    const { logp } = lmHeadRef(cpu.hidden, w.lmHead!, T, V, cfg.hiddenSize, targets);
    for (let t = 0; t < T; t++) {
      if (targets[t]! < 0) {
        expect(Number.isNaN(lp[t])).toBe(true);
        expect(Number.isNaN(logp[t])).toBe(true);
      } else {
        expect(lp[t]!).toBeLessThan(0);
        expect(Math.abs(lp[t]! - logp[t]!)).toBeLessThan(1e-4);
      }
    }
  });
});

describe('causality', () => {
  it('changing tokens after t does not change logits at positions <= t', () => {
    const cfg = makeConfig({ ropeScaling: SMALL_LLAMA3 });
    const w = randomWeights(cfg, 31);
    const V = cfg.vocabSize;
    const ids = randomIds(9, V, 32);
    const base = referenceForward(w, ids).logits;
    for (const t of [0, 3, 7]) {
      const changed = ids.slice();
      for (let s = t + 1; s < ids.length; s++) changed[s] = (changed[s]! + 5) % V;
      const other = referenceForward(w, changed).logits;
      expect(maxAbsDiff(other.subarray(0, (t + 1) * V), base.subarray(0, (t + 1) * V))).toBeLessThan(1e-6);
      expect(maxAbsDiff(other.subarray((t + 1) * V, (t + 2) * V), base.subarray((t + 1) * V, (t + 2) * V))).toBeGreaterThan(1e-3);
    }
  });
});

describe('grouped-query attention', () => {
  it('KVH < H equals the MHA model whose kv heads are duplicated per group', () => {
    const gqaCfg = makeConfig({ numHeads: 6, numKvHeads: 2, headDim: 4, tieWordEmbeddings: false, ropeScaling: SMALL_LLAMA3 });
    const mhaCfg: LlamaConfig = { ...gqaCfg, numKvHeads: 6 };
    const gqa = randomWeights(gqaCfg, 41);
    const D = gqaCfg.headDim;
    const C = gqaCfg.hiddenSize;
    const nRep = 3;
    // kv head j of the MHA model = kv head floor(j / nRep) of the GQA model; rows j*D..(j+1)*D of [KVH*D, C]
    const dup = (m: Float32Array): Float32Array => {
      const out = new Float32Array(6 * D * C);
      for (let j = 0; j < 6; j++) {
        const src = Math.floor(j / nRep);
        out.set(m.subarray(src * D * C, (src + 1) * D * C), j * D * C);
      }
      return out;
    };
    const mha: LlamaWeights = {
      ...gqa,
      config: mhaCfg,
      layers: gqa.layers.map((l) => ({ ...l, k: dup(l.k), v: dup(l.v) })),
    };
    const ids = randomIds(10, gqaCfg.vocabSize, 42);
    const a = referenceForward(gqa, ids).logits;
    const b = referenceForward(mha, ids).logits;
    expect(relErr(a, b)).toBeLessThan(1e-5);
    expect(relErr(cpuForward(mha, ids).logits, a)).toBeLessThan(1e-4);
  });
});

describe('LoRA', () => {
  const cfg = makeConfig({ ropeScaling: SMALL_LLAMA3 });
  const w = randomWeights(cfg, 51);
  const ids = randomIds(8, cfg.vocabSize, 52);

  it('B = 0 equals no LoRA', () => {
    const plain = referenceForward(w, ids);
    const zero = referenceForward(w, ids, { lora: randomLora(cfg, 4, 53, true) });
    expect(maxAbsDiff(zero.logits, plain.logits)).toBe(0);
    expect(maxAbsDiff(zero.hidden, plain.hidden)).toBe(0);
  });

  it('nonzero B matches matmulRef + loraRef in the cpu-ops composition', () => {
    const lora = randomLora(cfg, 4, 54, false);
    const ref = referenceForward(w, ids, { lora });
    const cpu = cpuForward(w, ids, lora);
    expect(relErr(ref.logits, cpu.logits)).toBeLessThan(1e-4);
    expect(maxAbsDiff(ref.logits, referenceForward(w, ids).logits)).toBeGreaterThan(1e-2);
  });

  it('adapters on a subset of layers and projections', () => {
    const full = randomLora(cfg, 3, 55, false);
    const subsets: LoraDict[] = [
      [{ down_proj: full[0]!.down_proj!, q_proj: full[0]!.q_proj! }, {}],
      [{}, { v_proj: full[1]!.v_proj! }],
      [{ o_proj: full[0]!.o_proj! }], // shorter than numLayers: later layers have no adapter
    ];
    for (const lora of subsets) {
      expect(relErr(referenceForward(w, ids, { lora }).logits, cpuForward(w, ids, lora).logits)).toBeLessThan(1e-4);
    }
  });

  it('rejects LoRA factors of the wrong shape', () => {
    const bad: LoraDict = [{ up_proj: { A: new Float32Array(3 * 5), B: new Float32Array(cfg.intermediateSize * 3), r: 3, scale: 1 } }];
    expect(() => referenceForward(w, ids, { lora: bad })).toThrow(RangeError);
  });

  it('tfjs autodiff through llamaLogitsTf: LoRA gradients match finite differences', () => {
    expect(gradientsRegistered).toBe(true);
    const lora = randomLora(cfg, 2, 56, false);
    const targets = [...ids.slice(1), -1];
    const f = lora[1]!.gate_proj!;
    const [nOut] = projectionShape(cfg, 'gate_proj');
    const before = tf.memory().numTensors;
    const wt = weightsToTensors(w);
    // tidy disposes the temporaries and keeps the variables
    const A = tf.tidy(() => tf.variable(tf.tensor2d(f.A, [f.r, cfg.hiddenSize])));
    const B = tf.tidy(() => tf.variable(tf.tensor2d(f.B, [nOut, f.r])));
    const { value, grads } = tf.variableGrads(() => {
      const logp = tokenLogProbsTf(llamaLogitsTf(wt, ids, [{}, { gate_proj: { A, B, scale: f.scale } }]), targets);
      return tf.neg(tf.sum(logp)) as tf.Scalar;
    }, [A, B]);
    const gB = Float32Array.from(grads[B.name]!.dataSync() as Float32Array);
    const gA = Float32Array.from(grads[A.name]!.dataSync() as Float32Array);
    const loss = value.dataSync()[0]!;
    tf.dispose([value, A, B, ...Object.values(grads)]);
    disposeLlamaTensors(wt);
    expect(tf.memory().numTensors).toBe(before);

    const lossOf = (dict: LoraDict): number => {
      const lp = referenceLogProbs(w, ids, targets, { lora: dict });
      let s = 0;
      for (let t = 0; t < lp.length; t++) if (!Number.isNaN(lp[t])) s -= lp[t]!;
      return s;
    };
    const only = (A2: Float32Array, B2: Float32Array): LoraDict => [{}, { gate_proj: { ...f, A: A2, B: B2 } }];
    expect(Math.abs(lossOf(only(f.A, f.B)) - loss)).toBeLessThan(1e-4);
    const eps = 1e-2;
    for (const [g, which] of [
      [gB, 'B'],
      [gA, 'A'],
    ] as const) {
      let idx = 0;
      for (let i = 1; i < g.length; i++) if (Math.abs(g[i]!) > Math.abs(g[idx]!)) idx = i;
      const plus = (which === 'B' ? f.B : f.A).slice();
      const minus = plus.slice();
      plus[idx]! += eps;
      minus[idx]! -= eps;
      const fd =
        which === 'B'
          ? (lossOf(only(f.A, plus)) - lossOf(only(f.A, minus))) / (2 * eps)
          : (lossOf(only(plus, f.B)) - lossOf(only(minus, f.B))) / (2 * eps);
      expect(Math.abs(g[idx]!)).toBeGreaterThan(1e-3);
      expect(Math.abs(fd - g[idx]!)).toBeLessThan(1e-2 * Math.abs(g[idx]!) + 1e-3);
    }
  });
});
