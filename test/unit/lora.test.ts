import { describe, expect, it } from 'vitest';
import { NlftError } from '../../src/errors.ts';
import { tinyLlamaConfig } from '../../src/model/demo.ts';
import { DEFAULT_LORA, initLora, loraParameterCount, validateLoraConfig, type LoraConfig } from '../../src/model/lora.ts';
import { PROJECTIONS, type Projection } from '../../src/model/weights.ts';

/** hidden 32, ffn 48, 4 heads of 8 with 2 KV heads: q/o 32x32, k/v 16x32, gate/up 48x32, down 32x48. */
const MODEL = tinyLlamaConfig({
  seed: 0,
  vocabSize: 50,
  hiddenSize: 32,
  intermediateSize: 48,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  tie: true,
});
const ALL: LoraConfig = { r: 8, alpha: 32, dropout: 0, targets: [...PROJECTIONS] };
const SHAPES: Record<Projection, [number, number]> = {
  q_proj: [32, 32],
  k_proj: [16, 32],
  v_proj: [16, 32],
  o_proj: [32, 32],
  gate_proj: [48, 32],
  up_proj: [48, 32],
  down_proj: [32, 48],
};

/** The error `fn` throws (the test fails when it throws nothing). */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, none was thrown');
}

describe('DEFAULT_LORA', () => {
  it("is NLFT's default: r 16, alpha 16, dropout 0.05 on the MLP projections", () => {
    expect(DEFAULT_LORA).toEqual({ r: 16, alpha: 16, dropout: 0.05, targets: ['gate_proj', 'up_proj', 'down_proj'] });
    expect(() => validateLoraConfig(DEFAULT_LORA)).not.toThrow();
  });
});

describe('initLora', () => {
  it('gives every layer A [r, in] and B [out, r] for each target only, B zero, scale alpha / r', () => {
    const lora = initLora(MODEL, ALL, 1);
    expect(lora).toHaveLength(3);
    for (const layer of lora) {
      expect(Object.keys(layer)).toEqual([...PROJECTIONS]);
      for (const p of PROJECTIONS) {
        const [out, inF] = SHAPES[p];
        const f = layer[p]!;
        expect(f.r).toBe(8);
        expect(f.scale).toBe(4);
        expect(f.A).toBeInstanceOf(Float32Array);
        expect(f.A.length).toBe(8 * inF);
        expect(f.B.length).toBe(out * 8);
        expect(f.B.every((v) => v === 0)).toBe(true);
        const bound = 1 / Math.sqrt(inF);
        expect(f.A.every((v) => Math.abs(v) <= bound)).toBe(true);
        expect(new Set(f.A).size).toBe(f.A.length); // all distinct: no zero-filled or repeated stretch
      }
    }
    const mlp = initLora(MODEL, DEFAULT_LORA, 1);
    for (const layer of mlp) expect(Object.keys(layer).sort()).toEqual(['down_proj', 'gate_proj', 'up_proj']);
    expect(mlp[0].down_proj!.A.length).toBe(16 * 48);
    expect(mlp[0].down_proj!.scale).toBe(1);
  });

  it('draws A uniformly in ±1/sqrt(fan_in): mean ~0, variance ~bound²/3, flat histogram', () => {
    const big = tinyLlamaConfig({
      seed: 0,
      vocabSize: 50,
      hiddenSize: 256,
      intermediateSize: 1024,
      numLayers: 1,
      numHeads: 4,
      numKvHeads: 4,
      tie: true,
    });
    const A = initLora(big, { r: 64, alpha: 64, dropout: 0, targets: ['down_proj'] }, 7)[0].down_proj!.A;
    expect(A.length).toBe(64 * 1024);
    const bound = 1 / 32; // 1 / sqrt(1024)
    let sum = 0;
    let sq = 0;
    let min = Infinity;
    let max = -Infinity;
    const bins = new Array<number>(10).fill(0);
    for (const v of A) {
      sum += v;
      sq += v * v;
      min = Math.min(min, v);
      max = Math.max(max, v);
      bins[Math.min(9, Math.floor(((v + bound) / (2 * bound)) * 10))]++;
    }
    const n = A.length;
    const mean = sum / n;
    const variance = sq / n - mean * mean;
    // Standard error of the mean is bound / sqrt(3n) ≈ 7e-5; of the variance about 0.4% relative.
    expect(Math.abs(mean)).toBeLessThan(5e-4);
    expect(variance / ((bound * bound) / 3)).toBeGreaterThan(0.98);
    expect(variance / ((bound * bound) / 3)).toBeLessThan(1.02);
    expect(min).toBeGreaterThanOrEqual(-bound);
    expect(min).toBeLessThan(-0.999 * bound);
    expect(max).toBeLessThanOrEqual(bound);
    expect(max).toBeGreaterThan(0.999 * bound);
    for (const count of bins) expect(Math.abs(count - n / 10) / (n / 10)).toBeLessThan(0.05);
  });

  it('is deterministic for a seed and differs between seeds', () => {
    const a = initLora(MODEL, ALL, 42);
    const b = initLora(MODEL, ALL, 42);
    const c = initLora(MODEL, ALL, 43);
    for (let i = 0; i < 3; i++) {
      for (const p of PROJECTIONS) {
        expect(b[i][p]!.A).toEqual(a[i][p]!.A);
        expect(c[i][p]!.A).not.toEqual(a[i][p]!.A);
      }
    }
    // Layers and projections get fresh draws, not copies of one another.
    expect(a[1].q_proj!.A).not.toEqual(a[0].q_proj!.A);
    expect(a[0].o_proj!.A).not.toEqual(a[0].q_proj!.A);
  });

  it('draws layer by layer in PROJECTIONS order, whatever the order of the targets', () => {
    const listed = initLora(MODEL, { ...ALL, targets: ['down_proj', 'q_proj'] }, 5);
    const sorted = initLora(MODEL, { ...ALL, targets: ['q_proj', 'down_proj'] }, 5);
    expect(listed).toEqual(sorted);
  });

  it('refuses an invalid config', () => {
    expect(() => initLora(MODEL, { ...ALL, r: 6 }, 1)).toThrow(
      'LoRA config (r): expected a positive multiple of 4 (the GPU kernels need it), found 6',
    );
  });
});

describe('loraParameterCount', () => {
  it('counts r * (in + out) per target and layer', () => {
    // per layer: 8 * (64 + 48 + 48 + 64 + 80 + 80 + 80) = 3712
    expect(loraParameterCount(MODEL, ALL)).toBe(3 * 3712);
    expect(loraParameterCount(MODEL, DEFAULT_LORA)).toBe(3 * 16 * 3 * 80);
    const lora = initLora(MODEL, ALL, 1);
    const counted = lora.flatMap((l) => Object.values(l)).reduce((s, f) => s + f!.A.length + f!.B.length, 0);
    expect(counted).toBe(loraParameterCount(MODEL, ALL));
  });
});

describe('validateLoraConfig', () => {
  const valid = 'q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj';
  const cases: Array<[Partial<Record<keyof LoraConfig, unknown>>, string]> = [
    [{ r: 6 }, 'LoRA config (r): expected a positive multiple of 4 (the GPU kernels need it), found 6'],
    [{ r: 0 }, 'LoRA config (r): expected a positive multiple of 4 (the GPU kernels need it), found 0'],
    [{ r: -8 }, 'LoRA config (r): expected a positive multiple of 4 (the GPU kernels need it), found -8'],
    [{ r: 8.5 }, 'LoRA config (r): expected a positive multiple of 4 (the GPU kernels need it), found 8.5'],
    [{ r: '8' }, 'LoRA config (r): expected a positive multiple of 4 (the GPU kernels need it), found "8"'],
    [{ alpha: 0 }, 'LoRA config (alpha): expected a positive number, found 0'],
    [{ alpha: NaN }, 'LoRA config (alpha): expected a positive number, found NaN'],
    [{ dropout: 1 }, 'LoRA config (dropout): expected a number in [0, 1), found 1'],
    [{ dropout: -0.1 }, 'LoRA config (dropout): expected a number in [0, 1), found -0.1'],
    [{ targets: [] }, `LoRA config (targets): expected a non-empty list of projections from ${valid}, found []`],
    [{ targets: ['gate_proj', 'lm_head'] }, `LoRA config (targets): unknown projection "lm_head"; valid names: ${valid}`],
    [{ targets: ['up_proj', 'gate_proj', 'up_proj'] }, 'LoRA config (targets): "up_proj" is listed twice'],
  ];
  for (const [change, message] of cases) {
    it(`${JSON.stringify(change)} → ${message}`, () => {
      const bad = { ...ALL, ...change } as LoraConfig;
      const e = thrown(() => validateLoraConfig(bad));
      expect(e).toBeInstanceOf(NlftError);
      expect(e.message).toBe(message);
      expect((e as NlftError).code).toBe('lora-config');
    });
  }

  it('accepts the smallest valid values', () => {
    expect(() => validateLoraConfig({ r: 4, alpha: 1e-3, dropout: 0, targets: ['v_proj'] })).not.toThrow();
  });
});
