/**
 * Every forward kernel against the CPU reference (test/reference/cpu-ops.ts, float64 accumulation)
 * on small random shapes that are deliberately not multiples of the tiles.
 * Tolerances: f32 kernels accumulate in f32, so |gpu - ref| <= 1e-5 + 1e-4*|ref| (2e-4 for
 * exp/log paths); quantized weights are compared with the reference run on the dequantized weights.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PipelineCache } from '../../src/engine/kernels.ts';
import {
  DECODE_ATTENTION_CANDIDATES,
  DEFAULT_TUNING,
  describeMatmulTile,
  Ops,
  RMSNORM_ROW_WORKGROUPS_MAX_T,
} from '../../src/engine/ops.ts';
import { packing } from '../../src/engine/packing.ts';
import { ATTENTION_CANDIDATES, LMHEAD_CANDIDATES, MATMUL_CANDIDATES } from '../../src/engine/tune.ts';
import { dequantize, quantize, type QuantFormat } from '../../src/model/quant.ts';
import { ropeInvFreq, ropeTable } from '../../src/model/rope.ts';
import {
  attentionRef,
  embeddingRef,
  lmHeadRef,
  matmulRef,
  rmsnormRef,
  ropeRef,
  ropeInvFreq as ropeInvFreqRef,
  swigluRef,
} from '../reference/cpu-ops.ts';
import { maxViolation, randomArray, testGpu, type TestGpu } from '../helpers/gpu.ts';
import { matmulDxRef } from '../reference/cpu-backward.ts';
import { concatHeadMajor, concatRows, segmentRows } from '../reference/packed.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.ctx.destroy());

const deq = (w: Float32Array, rows: number, cols: number, f: QuantFormat) => dequantize(quantize(w, rows, cols, f));

/** v rounded to the nearest binary16 value (ties to even; subnormals below 2^-14): the f16 tiles' operand rounding. */
function roundF16(v: number): number {
  if (v === 0 || !Number.isFinite(v)) return v;
  const a = Math.abs(v);
  let e = Math.max(Math.floor(Math.log2(a)), -14);
  if (e > -14 && a < 2 ** e) e--;
  if (a >= 2 ** (e + 1)) e++;
  const ulp = 2 ** (e - 10);
  const q = a / ulp;
  const fl = Math.floor(q);
  const n = q - fl > 0.5 || (q - fl === 0.5 && fl % 2 === 1) ? fl + 1 : fl;
  return Math.sign(v) * n * ulp;
}

it('roundF16 rounds to binary16: 11 significant bits, ties to even, subnormals', () => {
  expect([1 + 2 ** -11, 1 + 3 * 2 ** -11, 2049, 65504, 2 ** -24, 1.5 * 2 ** -24, -0.1].map(roundF16)).toEqual([
    1,
    1 + 2 ** -9,
    2048,
    65504,
    2 ** -24,
    2 ** -23,
    -0.0999755859375,
  ]);
});

// Every forward variant the tuner may pick (tune.ts MATMUL_CANDIDATES), on shapes that are not multiples of
// their tiles: |gpu - ref| <= 1e-5 + 1e-4*|ref| against the float64 reference, for f16 tiles the reference on x and
// W rounded to f16 (their products and sums are f32), and out of tolerance of the unrounded one. Subgroup tiles
// run where the adapter has subgroups.
describe('matmul: every tuner variant', () => {
  for (const tile of MATMUL_CANDIDATES) {
    const ops = () => new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, matmul: tile });
    for (const [format, T, N, K] of [
      ['f32', 37, 45, 36],
      ['f32', 1, 3, 4],
      ['q8', 37, 45, 96],
      ['q4', 19, 70, 64],
      ['q8', 64, 64, 32],
    ] as const) {
      it(`${describeMatmulTile(tile)}: ${format} x(${T},${K}) W(${N},${K})`, async (ctx) => {
        if (tile.variant === 'subgroup' && !g.ctx.adapter.features.subgroups) ctx.skip();
        // fewer rows than the tile (T < TM) take the one-row register tile, in f32
        const f16 = tile.variant === 'shared' && tile.f16 && T >= tile.TM;
        const round = (a: Float32Array) => (f16 ? a.map(roundF16) : a);
        const x = randomArray(T * K, 1 + T);
        const w = randomArray(N * K, 2 + N, 0.5);
        const xb = g.buffers.upload('x', x);
        const ob = g.buffers.upload('out', randomArray(T * N, 3));
        const wb = g.weight(w, N, K, format);
        await g.run((enc) => ops().matmul(enc, { x: xb, w: wb, out: ob, T }));
        const ref = matmulRef(round(x), round(deq(w, N, K, format)), T, N, K);
        const got = await g.f32(ob);
        expect(maxViolation(got, ref, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
        if (f16) {
          // the rounding is real: the unrounded reference is out of tolerance
          expect(maxViolation(got, matmulRef(x, deq(w, N, K, format), T, N, K), 1e-4, 1e-5)).toBeGreaterThan(1);
        }
        // accumulate: out = out + alpha * x W^T
        await g.run((enc) => ops().matmul(enc, { x: xb, w: wb, out: ob, T, alpha: 0.25, beta: 1 }));
        expect(
          maxViolation(
            await g.f32(ob),
            ref.map((v) => v * 1.25),
            1e-4,
            1e-5,
          ),
        ).toBeLessThanOrEqual(1);
        // with an adapter: out = x W^T + s u B^T, u (T,r) and B (N,r) f32, r = 8 (two k4 steps)
        const [r, s] = [8, 0.75];
        const u = randomArray(T * r, 4 + T);
        const B = randomArray(N * r, 5 + N, 0.5);
        const lora = { u: g.buffers.upload('u', u), B: g.weight(B, N, r, 'f32'), scale: s };
        await g.run((enc) => ops().matmul(enc, { x: xb, w: wb, out: ob, T, lora }));
        const withAdapter = matmulRef(u, B, T, N, r).map((v, i) => ref[i] + s * v);
        expect(maxViolation(await g.f32(ob), withAdapter, 1e-4, 1e-5), 'x W^T + s u B^T').toBeLessThanOrEqual(1);
      });
    }
  }
});

it('matmul with fewer rows than the tuned tile (T=5, 1 under a 16x12 tile: one row per thread) matches the reference', async () => {
  const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, {
    ...DEFAULT_TUNING,
    matmul: { variant: 'regs', TM: 16, TN: 12, WGX: 8, WGY: 8 },
  });
  for (const T of [5, 1]) {
    const [N, K] = [70, 64];
    const x = randomArray(T * K, 90 + T);
    const w = randomArray(N * K, 91, 0.5);
    const ob = g.buffers.create('out', T * N * 4);
    await g.run((enc) => ops.matmul(enc, { x: g.buffers.upload('x', x), w: g.weight(w, N, K, 'q8'), out: ob, T }));
    expect(maxViolation(await g.f32(ob), matmulRef(x, deq(w, N, K, 'q8'), T, N, K), 1e-4, 1e-5), `T=${T}`).toBeLessThanOrEqual(1);
  }
});

it('one pipeline per kernel, tile and weight format serves every width K (matmul, matmul_dx, matvec; q8)', async () => {
  const pipelines = new PipelineCache(g.ctx.device, g.pipelines.sources);
  const ops = new Ops(g.ctx.device, pipelines, g.buffers, DEFAULT_TUNING);
  const [T, N] = [9, 40];
  for (const K of [96, 32, 160]) {
    const x = randomArray(T * K, 70 + K);
    const w = randomArray(N * K, 71 + K, 0.5);
    const wq = deq(w, N, K, 'q8');
    const wb = g.weight(w, N, K, 'q8');
    const out = g.buffers.create('out', T * N * 4);
    await g.run((enc) => ops.matmul(enc, { x: g.buffers.upload('x', x), w: wb, out, T }));
    expect(maxViolation(await g.f32(out), matmulRef(x, wq, T, N, K), 1e-4, 1e-5), `matmul K=${K}`).toBeLessThanOrEqual(1);
    const dy = randomArray(T * N, 72 + K);
    const dx = g.buffers.create('dx', T * K * 4);
    await g.run((enc) => ops.matmulDx(enc, { dy: g.buffers.upload('dy', dy), w: wb, dx, T }));
    expect(maxViolation(await g.f32(dx), matmulDxRef(dy, wq, T, N, K), 1e-4, 1e-5), `matmul_dx K=${K}`).toBeLessThanOrEqual(1);
    const row = g.buffers.create('row', N * 4);
    await g.run((enc) => ops.matvec(enc, { x: g.buffers.upload('x0', x.subarray(0, K)), w: wb, out: row }));
    expect(maxViolation(await g.f32(row), matmulRef(x.subarray(0, K), wq, 1, N, K), 1e-4, 1e-5), `matvec K=${K}`).toBeLessThanOrEqual(1);
  }
  expect(pipelines.size).toBe(3); // not 9: K is a uniform
});

// T up to RMSNORM_ROW_WORKGROUPS_MAX_T runs a workgroup a row (`row_main`), T past it a thread a row (`main`).
for (const T of [1, RMSNORM_ROW_WORKGROUPS_MAX_T, RMSNORM_ROW_WORKGROUPS_MAX_T + 1, 70]) {
  it(`rmsnorm: T=${T}, C=100 (25 vec4s: not a multiple of the row's 4 threads)`, async () => {
    const C = 100,
      eps = 1e-5;
    const x = randomArray(T * C, 11, 3);
    const w = randomArray(C, 12);
    const out = g.buffers.create('out', T * C * 4);
    const rstd = g.buffers.create('rstd', T * 4);
    await g.run((enc) => g.ops.rmsnorm(enc, { x: g.buffers.upload('x', x), w: g.buffers.upload('w', w), out, rstd, T, C, eps }));
    const ref = rmsnormRef(x, w, T, C, eps);
    expect(maxViolation(await g.f32(out), ref.out, 1e-5, 1e-6)).toBeLessThanOrEqual(1);
    expect(maxViolation(await g.f32(rstd), ref.rstd, 1e-5, 1e-6)).toBeLessThanOrEqual(1);
  });
}

describe('rope', () => {
  const scaling = { ropeType: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 };
  for (const ropeScaling of [null, scaling]) {
    it(`T=11, 3 heads, D=16, ${ropeScaling ? 'llama3 scaling' : 'no scaling'}; inverse restores`, async () => {
      const T = 11,
        nH = 3,
        D = 16;
      const cfg = { headDim: D, ropeTheta: 500, ropeScaling };
      const inv = ropeInvFreq(cfg);
      expect(maxViolation(inv, ropeInvFreqRef(D, 500, ropeScaling), 1e-12, 0)).toBeLessThanOrEqual(1);
      const x = randomArray(T * nH * D, 21);
      const xb = g.buffers.upload('x', x);
      const cs = g.buffers.upload('cs', ropeTable(inv, T));
      await g.run((enc) => g.ops.rope(enc, { x: xb, cs, T, nHeads: nH, D }));
      expect(maxViolation(await g.f32(xb), ropeRef(x, T, nH, D, inv), 1e-5, 1e-5)).toBeLessThanOrEqual(1);
      await g.run((enc) => g.ops.rope(enc, { x: xb, cs, T, nHeads: nH, D, dir: -1 }));
      expect(maxViolation(await g.f32(xb), x, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
    });
  }
  it('packed sequences 4+1+6: positions restart at each sequence', async () => {
    const lengths = [4, 1, 6],
      nH = 2,
      D = 8;
    const { T, starts, positions } = packing(lengths);
    const inv = ropeInvFreq({ headDim: D, ropeTheta: 10000, ropeScaling: null });
    const x = randomArray(T * nH * D, 22);
    const xb = g.buffers.upload('x', x);
    await g.run((enc) => g.ops.rope(enc, { x: xb, cs: g.buffers.upload('cs', ropeTable(inv, positions)), T, nHeads: nH, D }));
    const ref = concatRows(lengths.map((n, i) => ropeRef(segmentRows(x, nH * D, starts[i], n), n, nH, D, inv)));
    expect(maxViolation(await g.f32(xb), ref, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
  });
});

describe.each(ATTENTION_CANDIDATES)('attention %o (causal, GQA, online softmax; packed sequences)', (variant) => {
  // lengths: the sequences packed in one call; several = each must equal a call of its own.
  for (const [lengths, H, KVH, D] of [
    [[45], 4, 2, 16],
    [[5], 2, 2, 64],
    [[70], 6, 1, 8],
    [[13, 1, 31, 20], 4, 2, 16],
    [[3, 40, 2], 6, 1, 8],
  ] as const) {
    it(`lengths ${lengths.join('+')} H=${H} KVH=${KVH} D=${D}`, async () => {
      const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, attention: variant });
      const { T, starts, seg } = packing(lengths);
      const q = randomArray(T * H * D, 31, 2);
      const k = randomArray(T * KVH * D, 32, 2);
      const v = randomArray(T * KVH * D, 33);
      const out = g.buffers.create('out', T * H * D * 4);
      const lse = g.buffers.create('lse', H * T * 4);
      await g.run((enc) =>
        ops.attention(enc, {
          q: g.buffers.upload('q', q),
          k: g.buffers.upload('k', k),
          v: g.buffers.upload('v', v),
          out,
          lse,
          seg: g.buffers.upload('seg', seg),
          T,
          H,
          KVH,
          D,
        }),
      );
      const refs = lengths.map((n, i) =>
        attentionRef(
          segmentRows(q, H * D, starts[i], n),
          segmentRows(k, KVH * D, starts[i], n),
          segmentRows(v, KVH * D, starts[i], n),
          n,
          H,
          KVH,
          D,
        ),
      );
      expect(maxViolation(await g.f32(out), concatRows(refs.map((r) => r.out)), 2e-4, 1e-5)).toBeLessThanOrEqual(1);
      expect(
        maxViolation(
          await g.f32(lse),
          concatHeadMajor(
            refs.map((r) => r.lse),
            lengths,
            H,
          ),
          2e-4,
          1e-5,
        ),
      ).toBeLessThanOrEqual(1);
    });
  }
});

describe('attention decode (the new row appended to a KV cache, one query per head against it)', () => {
  // The newest row of full causal attention over T positions; the cache holds rows 0..T-2, a stale
  // row T-1 that the append must overwrite, and spare rows past it. The position comes from the
  // decode step's buffer (u32 [token id, position]). Every threads-per-head candidate: T = 1 and 9 leave
  // threads without a key, and 37, 70 leave some with one key more than others.
  for (const tile of DECODE_ATTENTION_CANDIDATES)
    for (const [T, H, KVH, D] of [
      [1, 2, 1, 16],
      [37, 4, 2, 16],
      [70, 6, 3, 64],
      [9, 2, 2, 128],
    ] as const) {
      it(`${tile.threads} threads a head: T=${T} H=${H} KVH=${KVH} D=${D}`, async () => {
        const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, decodeAttention: tile });
        const q = randomArray(T * H * D, 51, 2);
        const k = randomArray(T * KVH * D, 52, 2);
        const v = randomArray(T * KVH * D, 53);
        const row = KVH * D;
        const stale = (a: Float32Array, seed: number) =>
          Float32Array.from([...a.subarray(0, (T - 1) * row), ...randomArray(6 * row, seed)]);
        const kc = g.buffers.upload('kc', stale(k, 54));
        const vc = g.buffers.upload('vc', stale(v, 55));
        const out = g.buffers.create('out', H * D * 4);
        const up = (label: string, a: Float32Array) => g.buffers.upload(label, a.slice(((T - 1) * a.length) / T));
        const step = g.buffers.upload('step', Uint32Array.of(0, T - 1, 0, 0));
        await g.run((enc) => ops.attentionDecode(enc, { q: up('q', q), k: up('k', k), v: up('v', v), kc, vc, step, out, H, KVH, D }));
        const ref = attentionRef(q, k, v, T, H, KVH, D).out.subarray((T - 1) * H * D);
        expect(maxViolation(await g.f32(out), ref, 2e-4, 1e-5)).toBeLessThanOrEqual(1);
        expect((await g.f32(kc)).subarray(0, T * row)).toEqual(k);
        expect((await g.f32(vc)).subarray(0, T * row)).toEqual(v);
      });
    }
});

it('swiglu: n=1004 (four elements a thread, past the 15 workgroups of 64 threads); n not a multiple of 4 is refused', async () => {
  const n = 1004;
  const a = randomArray(n, 41, 6);
  const b = randomArray(n, 42, 2);
  const [gb, ub] = [g.buffers.upload('g', a), g.buffers.upload('u', b)];
  const h = g.buffers.create('h', n * 4);
  await g.run((enc) => g.ops.swiglu(enc, { gate: gb, up: ub, h, n }));
  expect(maxViolation(await g.f32(h), swigluRef(a, b), 1e-5, 1e-6)).toBeLessThanOrEqual(1);
  await expect(g.run((enc) => g.ops.swiglu(enc, { gate: gb, up: ub, h, n: 1001 }))).rejects.toThrow(
    /swiglu: elements 1001, expected a multiple of 4/,
  );
});

describe('embedding gather', () => {
  for (const format of ['f32', 'q8'] as const) {
    it(format, async () => {
      const V = 50,
        C = 64,
        ids = [3, 0, 49, 3, 17, 8, 22];
      const table = randomArray(V * C, 51);
      const out = g.buffers.create('out', ids.length * C * 4);
      await g.run((enc) =>
        g.ops.embedding(enc, {
          ids: g.buffers.upload('ids', Uint32Array.from(ids)),
          table: g.weight(table, V, C, format),
          out,
          T: ids.length,
        }),
      );
      // f32 is a copy (exact); q8 dequantizes as unpack4x8snorm(q) * (127 s), within a few ulp of q*s.
      const [rtol, atol] = format === 'f32' ? [0, 0] : [1e-6, 1e-7];
      expect(maxViolation(await g.f32(out), embeddingRef(deq(table, V, C, format), V, C, ids), rtol, atol)).toBeLessThanOrEqual(1);
    });
  }
});

/** log(1 - q_y) in float64 from the logits directly: logsumexp over k != y minus logsumexp. */
function log1mqRef(h: Float32Array, w: Float32Array, R: number, V: number, C: number, targets: number[]): Float64Array {
  const out = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    const z = Array.from({ length: V }, (_, v) => {
      let s = 0;
      for (let c = 0; c < C; c++) s += h[r * C + c] * w[v * C + c];
      return s;
    });
    const lse = (vals: number[]) => {
      const m = Math.max(...vals);
      return m + Math.log(vals.reduce((acc, x) => acc + Math.exp(x - m), 0));
    };
    out[r] = lse(z.filter((_, v) => v !== targets[r])) - lse(z);
  }
  return out;
}

// Every tile the tuner may pick (tune.ts LMHEAD_CANDIDATES), on row counts and vocabularies that are not multiples of them.
describe.each(LMHEAD_CANDIDATES)('fused lm-head + logsumexp + target log-prob, tile %o', (tile) => {
  const ops = () => new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, lmhead: tile });
  for (const [format, T, V, C] of [
    ['f32', 13, 1000, 36],
    ['q8', 9, 333, 64],
    ['q4', 21, 1500, 32],
  ] as const) {
    it(`${format} rows=${T} V=${V} C=${C}`, async () => {
      const h = randomArray(T * C, 61, 1.5);
      const w = randomArray(V * C, 62);
      // Score every other row, in a shuffled order, against random targets.
      const rows = Array.from({ length: Math.ceil(T / 2) }, (_, i) => (i * 7) % T);
      const targets = rows.map((r, i) => (r * 131 + i * 17) % V);
      const R = rows.length;
      const [lse, logp, log1mq] = [0, 1, 2].map(() => g.buffers.create('out', R * 4));
      const scratch = ops().lmheadScratch(R, V);
      await g.run((enc) =>
        ops().lmhead(enc, {
          h: g.buffers.upload('h', h),
          rows: g.buffers.upload('rows', Uint32Array.from(rows)),
          targets: g.buffers.upload('targets', Uint32Array.from(targets)),
          R,
          w: g.weight(w, V, C, format),
          lse,
          logp,
          log1mq,
          scratch,
        }),
      );
      const hRows = new Float32Array(R * C);
      rows.forEach((r, i) => hRows.set(h.subarray(r * C, r * C + C), i * C));
      const wd = deq(w, V, C, format);
      const ref = lmHeadRef(hRows, wd, R, V, C, targets);
      expect(maxViolation(await g.f32(lse), ref.lse, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
      expect(maxViolation(await g.f32(logp), ref.logp, 1e-4, 1e-4)).toBeLessThanOrEqual(1);
      expect(maxViolation(await g.f32(log1mq), log1mqRef(hRows, wd, R, V, C, targets), 1e-4, 1e-5)).toBeLessThanOrEqual(1);
    });
  }

  it('log(1 - q_y) stays exact when q_y -> 1 (where 1 - exp(log q_y) would round to 0)', async () => {
    const V = 64,
      C = 8,
      R = 2;
    const w = new Float32Array(V * C);
    for (let v = 0; v < V; v++) w[v * C + (v % C)] = v === 5 ? 40 : 0.01 * v; // target 5 dominates
    const h = Float32Array.from({ length: R * C }, (_, i) => (i % C === 5 ? 1 : 0.1));
    const targets = [5, 6];
    const [lse, logp, log1mq] = [0, 1, 2].map(() => g.buffers.create('out', R * 4));
    await g.run((enc) =>
      ops().lmhead(enc, {
        h: g.buffers.upload('h', h),
        rows: g.buffers.upload('rows', Uint32Array.from([0, 1])),
        targets: g.buffers.upload('t', Uint32Array.from(targets)),
        R,
        w: g.weight(w, V, C, 'f32'),
        lse,
        logp,
        log1mq,
        scratch: ops().lmheadScratch(R, V),
      }),
    );
    const ref = log1mqRef(h, w, R, V, C, targets);
    expect(ref[0]).toBeLessThan(-30); // 1 - q_y ~ 1e-15: invisible to f32 arithmetic on q_y
    const got = await g.f32(log1mq);
    expect(maxViolation(got, ref, 1e-5, 1e-5)).toBeLessThanOrEqual(1);
    expect(Array.from(got).every(Number.isFinite)).toBe(true);
  });
});
