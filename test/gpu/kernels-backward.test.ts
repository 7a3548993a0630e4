/**
 * Every backward kernel against its CPU float64 reference (test/reference/cpu-backward.ts) on small
 * random shapes that are deliberately not multiples of the tiles; the whole-model composition is
 * test/gpu/backward.test.ts. The references are first checked against float64 central finite
 * differences of the forward functions (|ref - fd| <= 1e-7 + 1e-6*|fd|, step 1e-5).
 * Tolerances (|gpu - ref| <= atol + rtol*|ref|):
 * - matmul_dx, matmul_tn: f32 accumulation, rtol 1e-4, atol 1e-5; quantized weights are compared
 *   with the reference on the dequantized weight (dequantize(quantize(w))).
 * - rmsnorm backward: rtol 1e-4, atol 1e-5 (reads the forward kernel's f32 rstd).
 * - swiglu backward: rtol 1e-5, atol 1e-6 (|gate| up to 100: sigmoid saturates/underflows in f32).
 * - attention backward: rtol 1e-4, atol 1e-5 (gradients are O(1); the kernels take the f32 forward's
 *   out and lse and form dP - dO.O with cancellation, the reference recomputes P in float64).
 * - dropout: the mask is compared exactly with the documented hash; kept values x/(1-rate) within
 *   rtol 1e-6 (one f32 division); rate 0 is exactly the identity; statistics as stated per test.
 * - scatterRows: rtol 1e-6, atol 1e-7 (one f32 product and addition per element, which the GPU may fuse
 *   into one rounding).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrackedBuffer } from '../../src/engine/buffers.ts';
import { dropoutSalt, dropoutSeed } from '../../src/engine/lora-linear.ts';
import { DEFAULT_TUNING, Ops } from '../../src/engine/ops.ts';
import { packing } from '../../src/engine/packing.ts';
import { ATTENTION_CANDIDATES, MATMUL_DX_CANDIDATES, MATMUL_TN_CANDIDATES } from '../../src/engine/tune.ts';
import { dequantize, quantize, type QuantFormat } from '../../src/model/quant.ts';
import {
  attentionBackwardRef,
  dropoutMaskRef,
  dropoutRef,
  matmulDxRef,
  matmulTnRef,
  rmsnormBackwardRef,
  scatterRowsRef,
  swigluBackwardRef,
} from '../reference/cpu-backward.ts';
import { matmulRef } from '../reference/cpu-ops.ts';
import { concatRows, segmentRows } from '../reference/packed.ts';
import { Rng } from '../../src/util/rng.ts';
import { maxViolation, randomArray, testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

const deq = (w: Float32Array, rows: number, cols: number, f: QuantFormat) => dequantize(quantize(w, rows, cols, f));
const nanArray = (n: number) => new Float32Array(n).fill(NaN);

// ---------------------------------------------------------------------------------------------
// The references themselves: float64 central differences of L = sum(dY * f(X)) w.r.t. every input.

/** Central-difference gradient of `loss` at `x` (float64, step h) for every coordinate. */
function numericGrad(x: Float64Array, loss: (x: Float64Array) => number, h = 1e-5): Float64Array {
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + h;
    const up = loss(x);
    x[i] = v - h;
    const down = loss(x);
    x[i] = v;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

const f64 = (a: Float32Array) => Float64Array.from(a);
const FD = [1e-6, 1e-7] as const; // rtol, atol of reference vs finite differences

describe('references vs float64 finite differences', () => {
  it('matmulDxRef / matmulTnRef are the adjoints of x W^T', () => {
    // <dy, x W^T> = <dy W, x> and, for out = a^T b, <out, Z> = <a, b Z^T>.
    const T = 5,
      N = 6,
      K = 7;
    const x = randomArray(T * K, 1),
      w = randomArray(N * K, 2),
      dy = randomArray(T * N, 3);
    const y = matmulRef(x, w, T, N, K);
    const dx = matmulDxRef(dy, w, T, N, K);
    let lhs = 0,
      rhs = 0;
    for (let i = 0; i < T * N; i++) lhs += dy[i] * y[i];
    for (let i = 0; i < T * K; i++) rhs += dx[i] * x[i];
    expect(Math.abs(lhs - rhs)).toBeLessThan(1e-5 * (1 + Math.abs(lhs))); // y is f32-rounded
    const out = matmulTnRef(dy, x, T, N, K); // (N,K) = dy^T x: the weight gradient of y = x W^T
    const dw = numericGrad(f64(w), (ww) => {
      let s = 0;
      for (let t = 0; t < T; t++)
        for (let n = 0; n < N; n++) {
          let d = 0;
          for (let k = 0; k < K; k++) d += x[t * K + k] * ww[n * K + k];
          s += dy[t * N + n] * d;
        }
      return s;
    });
    expect(maxViolation(out, dw, ...FD)).toBeLessThanOrEqual(1);
  });

  it('matmulDxRef chunk: rows nOff.. of W; padding past the last row must carry zero dy', () => {
    const T = 3,
      V = 10,
      K = 4,
      N = 8;
    const w = randomArray(V * K, 4),
      dyFull = randomArray(T * V, 5);
    const full = matmulDxRef(dyFull, w, T, V, K);
    const sum = new Float64Array(T * K);
    for (let nOff = 0; nOff < V; nOff += N) {
      const chunk = new Float32Array(T * N);
      for (let t = 0; t < T; t++) for (let n = 0; n < N && nOff + n < V; n++) chunk[t * N + n] = dyFull[t * V + nOff + n];
      matmulDxRef(chunk, w, T, N, K, { nOff }).forEach((v, i) => (sum[i] += v));
    }
    expect(maxViolation(sum, full, 1e-12, 1e-12)).toBeLessThanOrEqual(1);
    expect(() => matmulDxRef(new Float32Array(T * N).fill(1), w, T, N, K, { nOff: 8 })).toThrow(RangeError);
  });

  it('rmsnormBackwardRef', () => {
    const T = 3,
      C = 9,
      eps = 1e-5;
    const x = f64(randomArray(T * C, 6, 2)),
      w = randomArray(C, 7),
      dy = randomArray(T * C, 8);
    const dx0 = randomArray(T * C, 9);
    const loss = (xx: Float64Array) => {
      let s = 0;
      for (let t = 0; t < T; t++) {
        let ss = 0;
        for (let c = 0; c < C; c++) ss += xx[t * C + c] ** 2;
        const r = 1 / Math.sqrt(ss / C + eps);
        for (let c = 0; c < C; c++) s += dy[t * C + c] * xx[t * C + c] * r * w[c];
      }
      return s;
    };
    const fd = numericGrad(x, loss).map((v, i) => v + dx0[i]);
    expect(maxViolation(rmsnormBackwardRef(x, w, dy, T, C, eps, dx0), fd, ...FD)).toBeLessThanOrEqual(1);
  });

  it('swigluBackwardRef', () => {
    const n = 40;
    const gate = f64(randomArray(n, 10, 8)),
      up = f64(randomArray(n, 11, 2)),
      dh = randomArray(n, 12);
    const ref = swigluBackwardRef(gate, up, dh);
    const loss = (gg: Float64Array, uu: Float64Array) => gg.reduce((s, gv, i) => s + dh[i] * (gv / (1 + Math.exp(-gv))) * uu[i], 0);
    expect(
      maxViolation(
        ref.dgate,
        numericGrad(gate, (gg) => loss(gg, up)),
        ...FD,
      ),
    ).toBeLessThanOrEqual(1);
    expect(
      maxViolation(
        ref.dup,
        numericGrad(up, (uu) => loss(gate, uu)),
        ...FD,
      ),
    ).toBeLessThanOrEqual(1);
    // Saturated gates stay finite and exact: sigmoid(-800) underflows, sigmoid(800) = 1.
    const big = swigluBackwardRef([-800, 800], [1, 1], [1, 1]);
    expect([...big.dgate, ...big.dup].map((v) => v + 0)).toEqual([0, 1, 0, 800]); // + 0: -0 -> 0
  });

  it('attentionBackwardRef (causal GQA, T=6 H=4 KVH=2 D=4)', () => {
    const T = 6,
      H = 4,
      KVH = 2,
      D = 4;
    const q = f64(randomArray(T * H * D, 13, 2)),
      k = f64(randomArray(T * KVH * D, 14, 2)),
      v = f64(randomArray(T * KVH * D, 15));
    const dout = randomArray(T * H * D, 16);
    const loss = (qq: Float64Array, kk: Float64Array, vv: Float64Array) => {
      let L = 0;
      for (let h = 0; h < H; h++) {
        const kh = Math.floor(h / (H / KVH));
        for (let t = 0; t < T; t++) {
          const s = Array.from({ length: t + 1 }, (_, j) => {
            let d = 0;
            for (let i = 0; i < D; i++) d += qq[(t * H + h) * D + i] * kk[(j * KVH + kh) * D + i];
            return d / Math.sqrt(D);
          });
          const m = Math.max(...s);
          const e = s.map((x) => Math.exp(x - m));
          const z = e.reduce((a, b) => a + b, 0);
          for (let j = 0; j <= t; j++) for (let i = 0; i < D; i++) L += (e[j] / z) * vv[(j * KVH + kh) * D + i] * dout[(t * H + h) * D + i];
        }
      }
      return L;
    };
    const ref = attentionBackwardRef(q, k, v, dout, T, H, KVH, D);
    expect(
      maxViolation(
        ref.dq,
        numericGrad(q, (x) => loss(x, k, v)),
        ...FD,
      ),
    ).toBeLessThanOrEqual(1);
    expect(
      maxViolation(
        ref.dk,
        numericGrad(k, (x) => loss(q, x, v)),
        ...FD,
      ),
    ).toBeLessThanOrEqual(1);
    expect(
      maxViolation(
        ref.dv,
        numericGrad(v, (x) => loss(q, k, x)),
        ...FD,
      ),
    ).toBeLessThanOrEqual(1);
  });
});

// ---------------------------------------------------------------------------------------------

describe('matmul_dx: dx = beta*dx + alpha * dy @ W', () => {
  // every tile the tuner may pick (tune.ts MATMUL_DX_CANDIDATES)
  for (const [tile, [format, T, N, K]] of MATMUL_DX_CANDIDATES.flatMap((tile) =>
    (
      [
        ['f32', 37, 44, 36],
        ['q8', 19, 40, 64],
        ['q4', 9, 12, 96],
      ] as const
    ).map((shape) => [tile, shape] as const),
  )) {
    it(`tile ${tile.TM}×${tile.TK} (wg ${tile.WGX}×${tile.WGY}): ${format} dy(${T},${N}) W(${N},${K}); beta 0 overwrites, beta 1 accumulates`, async () => {
      const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, matmulDx: tile });
      const w = randomArray(N * K, 100 + N, 0.5);
      const wd = deq(w, N, K, format);
      const dy1 = randomArray(T * N, 101);
      const dy2 = randomArray(T * N, 102);
      const wb = g.weight(w, N, K, format);
      const dx = g.buffers.upload('dx', nanArray(T * K)); // beta 0 must not read dx
      await g.run((enc) => ops.matmulDx(enc, { dy: g.buffers.upload('dy1', dy1), w: wb, dx, T }));
      const ref1 = matmulDxRef(dy1, wd, T, N, K);
      expect(maxViolation(await g.f32(dx), ref1, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
      // dx = 1 * dx + (-0.75) * dy2 @ W
      await g.run((enc) => ops.matmulDx(enc, { dy: g.buffers.upload('dy2', dy2), w: wb, dx, T, alpha: -0.75, beta: 1 }));
      const ref2 = matmulDxRef(dy2, wd, T, N, K).map((v, i) => ref1[i] - 0.75 * v);
      expect(maxViolation(await g.f32(dx), ref2, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
      // alpha with beta 0
      await g.run((enc) => ops.matmulDx(enc, { dy: g.buffers.upload('dy1', dy1), w: wb, dx, T, alpha: 2.5 }));
      expect(
        maxViolation(
          await g.f32(dx),
          ref1.map((v) => 2.5 * v),
          1e-4,
          1e-5,
        ),
      ).toBeLessThanOrEqual(1);
      // with an adapter: dx = 1 * dx + dy W + s * dropout'(gl A), gl (T,r), A (r,K), r = 8; without
      // dropout, then with the mask of pass seed 21 (one sequence: element t*K + k)
      const [r, s] = [8, 0.5];
      const gl = randomArray(T * r, 103);
      const A = randomArray(r * K, 104, 0.5);
      const gA = matmulDxRef(gl, A, T, r, K);
      const lora = { g: g.buffers.upload('g', gl), A: g.weight(A, r, K, 'f32'), scale: s };
      const before = await g.f32(dx);
      await g.run((enc) => ops.matmulDx(enc, { dy: g.buffers.upload('dy1', dy1), w: wb, dx, T, beta: 1, lora }));
      const ref3 = ref1.map((v, i) => before[i] + v + s * gA[i]);
      expect(maxViolation(await g.f32(dx), ref3, 1e-4, 1e-5), 'dy W + s g A').toBeLessThanOrEqual(1);
      const salt = dropoutSalt(1, 'down_proj');
      const seed = g.ops.passSeed([21], [T], []);
      const rate = 0.3;
      await g.run((enc) =>
        ops.matmulDx(enc, { dy: g.buffers.upload('dy1', dy1), w: wb, dx, T, lora: { ...lora, dropout: { seed, salt, rate } } }),
      );
      const dropped = dropoutRef(gA, dropoutSeed(21, salt), rate);
      const ref4 = ref1.map((v, i) => v + s * dropped[i]);
      expect(maxViolation(await g.f32(dx), ref4, 1e-4, 1e-5), "dy W + s dropout'(g A)").toBeLessThanOrEqual(1);
      expect(dropped.some((v, i) => v === 0 && gA[i] !== 0)).toBe(true); // the mask really drops
      g.buffers.destroy(seed);
    });
  }

  // The chunked lm-head backward: dy is (T, V) split into chunks of VC columns, the last padded with
  // zero gradient past V; chunk c multiplies W rows vOff .. vOff+VC (rows past V-1 clamped to nLast).
  // q8 pads 3 rows (inside the last 4-row group); f32 and q4 pad whole 4-row groups past the end.
  for (const [format, T, V, K, VC] of [
    ['f32', 13, 50, 36, 16],
    ['q8', 7, 21, 64, 8],
    ['q4', 9, 30, 64, 12],
  ] as const) {
    it(`${format} chunk form: V=${V} in chunks of ${VC} (nOff > 0, last chunk past the end), T=${T} K=${K}`, async () => {
      const w = randomArray(V * K, 200 + V, 0.5);
      const wd = deq(w, V, K, format);
      const dyFull = randomArray(T * V, 201);
      const wb = g.weight(w, V, K, format);
      const chunks: { nOff: number; dy: Float32Array }[] = [];
      for (let nOff = 0; nOff < V; nOff += VC) {
        const dy = new Float32Array(T * VC);
        for (let t = 0; t < T; t++) for (let n = 0; n < VC && nOff + n < V; n++) dy[t * VC + n] = dyFull[t * V + nOff + n];
        chunks.push({ nOff, dy });
      }
      expect(chunks.length).toBeGreaterThan(2);
      expect(chunks.at(-1)!.nOff + VC).toBeGreaterThan(V); // the last chunk runs past W's last row
      // Each chunk on its own (beta 0) against the reference on W[nOff : nOff + VC].
      const single = chunks.map(() => g.buffers.create('dx', T * K * 4));
      const acc = g.buffers.upload('dx acc', nanArray(T * K));
      await g.run(async (enc) => {
        for (const [i, c] of chunks.entries()) {
          const dy = g.buffers.upload('dy chunk', c.dy);
          await g.ops.matmulDx(enc, { dy, w: wb, dx: single[i], T, N: VC, nOff: c.nOff });
          await g.ops.matmulDx(enc, { dy, w: wb, dx: acc, T, N: VC, nOff: c.nOff, beta: i === 0 ? 0 : 1 });
        }
      });
      for (const [i, c] of chunks.entries()) {
        const ref = matmulDxRef(c.dy, wd, T, VC, K, { nOff: c.nOff, wRows: V });
        expect(maxViolation(await g.f32(single[i]), ref, 1e-4, 1e-5), `chunk at ${c.nOff}`).toBeLessThanOrEqual(1);
      }
      // Summed over the chunks: the full dx = dy (T,V) @ W (V,K).
      expect(maxViolation(await g.f32(acc), matmulDxRef(dyFull, wd, T, V, K), 1e-4, 1e-5)).toBeLessThanOrEqual(1);
    });
  }
});

describe('matmul_tn: out = beta*out + alpha * a^T b, every tile the tuner may pick (tune.ts MATMUL_TN_CANDIDATES)', () => {
  for (const [tile, [T, M, P]] of MATMUL_TN_CANDIDATES.flatMap((tile) =>
    (
      [
        [37, 45, 16],
        [5, 8, 100],
        [19, 16, 36],
      ] as const
    ).map((shape) => [tile, shape] as const),
  )) {
    it(`${tile.TM}×${tile.TP} (wg ${tile.WGX}×${tile.WGY}): a(${T},${M}) b(${T},${P})`, async () => {
      const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, matmulTn: tile });
      const a = randomArray(T * M, 300 + M);
      const b = randomArray(T * P, 301 + P);
      const a2 = randomArray(T * M, 302);
      const ab = g.buffers.upload('a', a),
        bb = g.buffers.upload('b', b);
      const out = g.buffers.upload('out', nanArray(M * P)); // beta 0 must not read out
      await g.run((enc) => ops.matmulTn(enc, { a: ab, b: bb, out, T, M, P, alpha: 1.5 }));
      const ref = matmulTnRef(a, b, T, M, P);
      expect(
        maxViolation(
          await g.f32(out),
          ref.map((v) => 1.5 * v),
          1e-4,
          1e-5,
        ),
      ).toBeLessThanOrEqual(1);
      // beta 1: gradient accumulation over micro-batches.
      await g.run((enc) => ops.matmulTn(enc, { a: g.buffers.upload('a2', a2), b: bb, out, T, M, P, alpha: 0.5, beta: 1 }));
      const ref2 = matmulTnRef(a2, b, T, M, P).map((v, i) => 1.5 * ref[i] + 0.5 * v);
      expect(maxViolation(await g.f32(out), ref2, 1e-4, 1e-5)).toBeLessThanOrEqual(1);
    });
  }
});

it('rmsnorm backward: T=7, C=100, accumulating into a non-zero dx', async () => {
  const T = 7,
    C = 100,
    eps = 1e-5;
  const x = randomArray(T * C, 400, 3);
  const w = randomArray(C, 401);
  const dy = randomArray(T * C, 402);
  const dx0 = randomArray(T * C, 403, 0.5);
  const xb = g.buffers.upload('x', x),
    wb = g.buffers.upload('w', w);
  const rstd = g.buffers.create('rstd', T * 4);
  const dx = g.buffers.upload('dx', dx0);
  await g.run(async (enc) => {
    await g.ops.rmsnorm(enc, { x: xb, w: wb, out: g.buffers.create('out', T * C * 4), rstd, T, C, eps });
    await g.ops.rmsnormBackward(enc, { x: xb, w: wb, rstd, dy: g.buffers.upload('dy', dy), dx, T, C });
  });
  expect(maxViolation(await g.f32(dx), rmsnormBackwardRef(x, w, dy, T, C, eps, dx0), 1e-4, 1e-5)).toBeLessThanOrEqual(1);
});

it('swiglu backward: n=1004 including large |gate|', async () => {
  const n = 1004;
  const gate = randomArray(n, 500, 6);
  [-100, -89, -88, -50, -20, -10, 10, 20, 50, 88, 89, 100, 0].forEach((v, i) => (gate[i * 71] = v));
  const up = randomArray(n, 501, 2);
  const dh = randomArray(n, 502);
  const [dgate, dup] = [nanArray(n), nanArray(n)].map((a) => g.buffers.upload('out', a));
  await g.run((enc) =>
    g.ops.swigluBackward(enc, {
      gate: g.buffers.upload('g', gate),
      up: g.buffers.upload('u', up),
      dh: g.buffers.upload('dh', dh),
      dgate,
      dup,
      n,
    }),
  );
  const ref = swigluBackwardRef(gate, up, dh);
  const [gotG, gotU] = [await g.f32(dgate), await g.f32(dup)];
  expect(gotG.every(Number.isFinite) && gotU.every(Number.isFinite)).toBe(true);
  expect(maxViolation(gotG, ref.dgate, 1e-5, 1e-6)).toBeLessThanOrEqual(1);
  expect(maxViolation(gotU, ref.dup, 1e-5, 1e-6)).toBeLessThanOrEqual(1);
});

describe.each(ATTENTION_CANDIDATES)(
  'attention backward %o (causal, GQA; probabilities recomputed from the forward lse; packed sequences)',
  (variant) => {
    for (const [lengths, H, KVH, D] of [
      [[45], 4, 2, 16],
      [[5], 2, 2, 64],
      [[70], 6, 1, 8],
      [[13, 1, 31, 20], 4, 2, 16],
    ] as const) {
      it(`lengths ${lengths.join('+')} H=${H} KVH=${KVH} D=${D}`, async () => {
        const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, attention: variant });
        const { T, starts, seg } = packing(lengths);
        const q = randomArray(T * H * D, 600, 2);
        const k = randomArray(T * KVH * D, 601, 2);
        const v = randomArray(T * KVH * D, 602);
        const dout = randomArray(T * H * D, 603);
        const [qb, kb, vb] = [q, k, v].map((a) => g.buffers.upload('qkv', a));
        const out = g.buffers.create('out', T * H * D * 4);
        const lse = g.buffers.create('lse', H * T * 4);
        const segb = g.buffers.upload('seg', seg);
        const dq = g.buffers.upload('dq', nanArray(T * H * D));
        const dk = g.buffers.upload('dk', nanArray(T * KVH * D));
        const dv = g.buffers.upload('dv', nanArray(T * KVH * D));
        await g.run(async (enc) => {
          await ops.attention(enc, { q: qb, k: kb, v: vb, out, lse, seg: segb, T, H, KVH, D });
          await ops.attentionBackward(enc, {
            q: qb,
            k: kb,
            v: vb,
            out,
            lse,
            dout: g.buffers.upload('dout', dout),
            delta: g.buffers.create('delta', H * T * 4),
            dq,
            dk,
            dv,
            seg: segb,
            T,
            H,
            KVH,
            D,
          });
        });
        const rows = (a: Float32Array, w: number, i: number) => segmentRows(a, w, starts[i], lengths[i]);
        const refs = lengths.map((n, i) =>
          attentionBackwardRef(rows(q, H * D, i), rows(k, KVH * D, i), rows(v, KVH * D, i), rows(dout, H * D, i), n, H, KVH, D),
        );
        for (const [name, got, want] of [
          ['dq', await g.f32(dq), concatRows(refs.map((r) => r.dq))],
          ['dk', await g.f32(dk), concatRows(refs.map((r) => r.dk))],
          ['dv', await g.f32(dv), concatRows(refs.map((r) => r.dv))],
        ] as const) {
          expect(maxViolation(got, want, 1e-4, 1e-5), name).toBeLessThanOrEqual(1);
        }
      });
    }
  },
);

describe('dropout (hashed mask, inverted scaling)', () => {
  const n = 100_000;
  const x = randomArray(n, 700);
  /** The (layer, projection) salt every dispatch below adds to its pass seed. */
  const salt = dropoutSalt(2, 'up_proj');
  let xb: TrackedBuffer;
  beforeAll(() => {
    xb = g.buffers.upload('x', x);
  });
  /** The kernel with the pass seed `seed` on the GPU; its mask is the reference's of `dropoutSeed(seed, salt)`. */
  const run = async (a: { x?: Float32Array; seed: number; rate: number; beta?: number; prev?: Float32Array }) => {
    const out = g.buffers.upload('out', a.prev ?? nanArray(a.x?.length ?? n));
    const len = a.x?.length ?? n;
    const seed = g.ops.passSeed([a.seed], [1], []); // one token of len elements: the element index is i
    await g.run((enc) =>
      g.ops.dropout(enc, { x: a.x ? g.buffers.upload('x', a.x) : xb, out, n: len, width: len, seed, salt, rate: a.rate, beta: a.beta }),
    );
    g.buffers.destroy(seed);
    return g.f32(out);
  };

  it('rate 0 is exactly the identity', async () => {
    expect(Array.from(await run({ seed: 5, rate: 0 }))).toEqual(Array.from(x));
  });

  it('rate 0.3 keeps ~70% (n=100000), kept values x/(1-rate), mask = the documented hash', async () => {
    const rate = 0.3;
    const got = await run({ seed: 1234, rate });
    const kept = got.reduce((c, v) => c + (v !== 0 ? 1 : 0), 0) / n;
    expect(Math.abs(kept - 0.7)).toBeLessThan(0.01); // binomial std 0.0014
    const mask = dropoutMaskRef(n, dropoutSeed(1234, salt), rate);
    expect(got.every((v, i) => (v !== 0) === (mask[i] === 1))).toBe(true);
    const kx = Array.from(got).flatMap((v, i) => (v !== 0 ? [v / x[i]] : []));
    expect(maxViolation(kx, new Float64Array(kx.length).fill(1 / 0.7), 1e-6, 0)).toBeLessThanOrEqual(1);
    expect(maxViolation(got, dropoutRef(x, dropoutSeed(1234, salt), rate), 1e-6, 0)).toBeLessThanOrEqual(1);
  });

  it('same seed -> same mask (on any input); another seed -> a different one', async () => {
    const rate = 0.3;
    const ones = new Float32Array(n).fill(1);
    const [a, b, c] = [await run({ seed: 77, rate }), await run({ x: ones, seed: 77, rate }), await run({ seed: 78, rate })];
    expect(a.every((v, i) => (v !== 0) === (b[i] !== 0))).toBe(true);
    const differ = a.reduce((s, v, i) => s + ((v !== 0) !== (c[i] !== 0) ? 1 : 0), 0) / n;
    expect(differ).toBeGreaterThan(0.38); // independent masks differ on 2 * 0.7 * 0.3 = 42%
    expect(differ).toBeLessThan(0.46);
  });

  it('beta 1 accumulates; forward on x then backward on a gradient with the same seed share the mask', async () => {
    const rate = 0.25,
      seed = 0xdeadbeef;
    const fwd = await run({ seed, rate }); // x -> dropout(x)
    const grad = randomArray(n, 701);
    const prev = randomArray(n, 702); // the input gradient already accumulated by the base path
    const bwd = await run({ x: grad, seed, rate, beta: 1, prev }); // dL/dx += mask * grad / (1 - rate)
    expect(maxViolation(bwd, dropoutRef(grad, dropoutSeed(seed, salt), rate, 1, prev), 1e-6, 1e-7)).toBeLessThanOrEqual(1);
    let bad = 0;
    for (let i = 0; i < n; i++) {
      if (fwd[i] === 0)
        bad += bwd[i] === prev[i] ? 0 : 1; // dropped forward: no gradient added (exactly)
      else bad += Math.abs(bwd[i] - prev[i] - grad[i] / 0.75) <= 1e-6 * (1 + Math.abs(prev[i])) ? 0 : 1; // kept: grad / (1 - rate) added
    }
    expect(bad).toBe(0);
  });

  it('packed sequences: each masked as in a pass of its own with its seed (rows of K elements, element index t*K + k)', async () => {
    const [K, lengths, seeds, rate] = [68, [3, 1, 6], [11, 0xfffffff0, 12], 0.4]; // 17 vec4 a row: past a token's 16 threads
    const T = lengths.reduce((a, b) => a + b, 0);
    const xs = randomArray(T * K, 704);
    const out = g.buffers.upload('out', nanArray(T * K));
    const seed = g.ops.passSeed(seeds, lengths, []);
    await g.run((enc) => g.ops.dropout(enc, { x: g.buffers.upload('x', xs), out, n: T * K, width: K, seed, salt, rate }));
    g.buffers.destroy(seed);
    const got = await g.f32(out);
    let at = 0;
    lengths.forEach((len, s) => {
      const own = dropoutRef(xs.subarray(at * K, (at + len) * K), dropoutSeed(seeds[s], salt), rate);
      expect(maxViolation(got.subarray(at * K, (at + len) * K), own, 1e-6, 0)).toBeLessThanOrEqual(1);
      at += len;
    });
  });

  it('tokens past 65535 (the grid folds them into y), each row masked at its own position', async () => {
    const [K, T, rate] = [8, 70_001, 0.5];
    const xs = randomArray(T * K, 703);
    const out = g.buffers.upload('out', nanArray(T * K));
    const seed = g.ops.passSeed([9], [T], []);
    await g.run((enc) => g.ops.dropout(enc, { x: g.buffers.upload('x', xs), out, n: T * K, width: K, seed, salt, rate }));
    g.buffers.destroy(seed);
    expect(maxViolation(await g.f32(out), dropoutRef(xs, dropoutSeed(9, salt), rate), 1e-6, 0)).toBeLessThanOrEqual(1);
  });

  it('n short of a whole last row: elements past n are left as they were; a width or n not a multiple of 4 is refused', async () => {
    const [K, T, rate, cut] = [100, 3, 0.4, 28];
    const n = T * K - cut;
    const xs = randomArray(n, 705);
    const out = g.buffers.upload('out', new Float32Array(T * K).fill(7));
    const seed = g.ops.passSeed([13], [T], []);
    await g.run((enc) => g.ops.dropout(enc, { x: g.buffers.upload('x', xs), out, n, width: K, seed, salt, rate }));
    g.buffers.destroy(seed);
    const got = await g.f32(out);
    expect(maxViolation(got.subarray(0, n), dropoutRef(xs, dropoutSeed(13, salt), rate), 1e-6, 0)).toBeLessThanOrEqual(1);
    expect(Array.from(got.subarray(n))).toEqual(new Array(cut).fill(7));
    const x = g.buffers.upload('x', xs);
    for (const [bad, width, said] of [
      [n, 37, /dropout: width 37, expected a multiple of 4/],
      [n - 2, K, /dropout: elements 270, expected a multiple of 4/],
    ] as const) {
      const s = g.ops.passSeed([13], [T], []);
      await expect(g.run((enc) => g.ops.dropout(enc, { x, out, n: bad, width, seed: s, salt, rate }))).rejects.toThrow(said);
      g.buffers.destroy(s);
    }
  });
});

describe('scatterRows: dxn[rows[r]] += coef[r] * g[r]', () => {
  for (const [format, T, C] of [
    ['f32', 23, 36],
    ['q8', 11, 64],
  ] as const) {
    it(`${format} lm-head, T=${T}, C=${C}, distinct rows in shuffled order`, async () => {
      const rng = new Rng(T);
      const rows = Array.from({ length: T }, (_, i) => i).filter((i) => i % 3 !== 1); // every third row unscored
      for (let i = rows.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [rows[i], rows[j]] = [rows[j], rows[i]];
      }
      expect(rows.some((r, i) => i > 0 && r < rows[i - 1])).toBe(true); // really shuffled
      const R = rows.length;
      const dxn0 = randomArray(T * C, 800);
      const dh = randomArray(R * C, 801);
      const coef = randomArray(R, 803, 2);
      const dxn = g.buffers.upload('dxn', dxn0);
      const w = g.weight(randomArray(50 * C, 802), 50, C, format); // only its shape (C) matters
      await g.run((enc) =>
        g.ops.scatterRows(enc, {
          w,
          rows: g.buffers.upload('rows', Uint32Array.from(rows)),
          coef: g.buffers.upload('coef', coef),
          dh: g.buffers.upload('dh', dh),
          dxn,
          R,
        }),
      );
      const got = await g.f32(dxn);
      expect(maxViolation(got, scatterRowsRef(dxn0, coef, dh, rows, C), 1e-6, 1e-7)).toBeLessThanOrEqual(1);
      for (let t = 0; t < T; t++) {
        const [a, b] = [got.subarray(t * C, t * C + C), dxn0.subarray(t * C, t * C + C)];
        if (rows.includes(t))
          expect(
            a.some((v, c) => v !== b[c]),
            `row ${t} got its gradient`,
          ).toBe(true);
        else expect(Array.from(a), `row ${t} untouched`).toEqual(Array.from(b));
      }
    });
  }
});
