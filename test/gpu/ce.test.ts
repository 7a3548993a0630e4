/**
 * The fused lm-head cross-entropy backward (lmhead.wgsl `partial` in mode 1 + matmul_dx.wgsl, one
 * vocabulary chunk at a time) against central finite differences of the loss computed in float64
 *   L = sum_r w_r * (-log q_r)  (likelihood)   or   w_r * (-log(1 - q_r))  (unlikelihood),
 * including rows where q_y -> 0 and q_y -> 1, with a chunk size that does not divide the
 * vocabulary, for every lm-head tile the tuner may pick. Tolerance: 1e-3 relative + 1e-4 of the largest gradient absolute; no NaN or Inf.
 * Then the forward and backward at once (`lmHeadForwardBackward`: coefficients made on the GPU from
 * the rows' term weights; mode 2 keeps a chunk of rows' logits and makes dz of them in place)
 * against that two-pass path with the host's coefficients: the same scores bit for bit, the same
 * dxn to 1e-5 relative + 1e-6 of its largest value (the order of the dh sums and f32 against f64
 * exp differ), over row chunks whose last is partial, f32 and q8 weights, and a pass too short to
 * keep the logits.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  keptLogitRows,
  keptRowStep,
  type LmHeadOut,
  lmHeadBackward,
  lmHeadForward,
  lmHeadForwardBackward,
} from '../../src/engine/lm-head.ts';
import { Ops, DEFAULT_TUNING } from '../../src/engine/ops.ts';
import { lossCoefficients, type TermKind, termWeights } from '../../src/engine/train-pass.ts';
import { LMHEAD_CANDIDATES } from '../../src/engine/tune.ts';
import type { TrackedBuffer } from '../../src/engine/buffers.ts';
import { maxViolation, randomArray, testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

/** float64 loss of rows h (R,C) against W (V,C). */
function lossF64(
  h: Float64Array,
  w: Float32Array,
  R: number,
  V: number,
  C: number,
  targets: number[],
  kinds: TermKind[],
  weights: number[],
): number {
  let L = 0;
  for (let r = 0; r < R; r++) {
    const z = new Float64Array(V);
    for (let v = 0; v < V; v++) for (let c = 0; c < C; c++) z[v] += h[r * C + c] * w[v * C + c];
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, x) => s + Math.exp(x - m), 0));
    const others = z.filter((_, v) => v !== targets[r]);
    const mo = Math.max(...others);
    const lseOthers = mo + Math.log(others.reduce((s, x) => s + Math.exp(x - mo), 0));
    L += weights[r] * (kinds[r] === 'likelihood' ? lse - z[targets[r]] : lse - lseOthers);
  }
  return L;
}

// Every lm-head tile the tuner may pick (tune.ts LMHEAD_CANDIDATES).
it.each(LMHEAD_CANDIDATES)('tile %o: matches finite differences for both term kinds, with q_y near 0 and near 1', async (tile) => {
  const R = 6,
    V = 333,
    C = 32;
  const w = randomArray(V * C, 7, 0.5);
  const h = randomArray(R * C, 8, 1);
  const targets = [5, 17, 100, 200, 332, 0];
  // Row 4: the target logit dominates (q_y ~ 1 - 1e-9); row 5: it is pushed far down (q_y ~ 1e-9).
  for (let c = 0; c < C; c++) {
    h[4 * C + c] = 8 * Math.sign(w[332 * C + c]) || 8;
    h[5 * C + c] = -8 * Math.sign(w[0 * C + c]) || -8;
  }
  const kinds: TermKind[] = ['likelihood', 'unlikelihood', 'likelihood', 'unlikelihood', 'unlikelihood', 'likelihood'];
  const weights = [0.5, 1.5, 1, 0.25, 2, 0.75];
  const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, lmhead: tile, ceChunk: 64 }); // 6 chunks, the last partial
  const hb = g.buffers.upload('h', h);
  const rows = g.buffers.upload(
    'rows',
    Uint32Array.from({ length: R }, (_, i) => i),
  );
  const tg = g.buffers.upload('targets', Uint32Array.from(targets));
  const W = g.weight(w, V, C, 'f32');
  const [lse, logp, log1mq] = [0, 1, 2].map(() => g.buffers.create('r', R * 4));
  const scratch = ops.lmheadScratch(R, V);
  await g.run((enc) => ops.lmhead(enc, { h: hb, rows, targets: tg, R, w: W, lse, logp, log1mq, scratch }));
  const lp = await g.f32(logp);
  const l1 = await g.f32(log1mq);
  expect(lp[4]).toBeGreaterThan(-1e-6); // q_y -> 1
  expect(l1[4]).toBeLessThan(-15); //      and log(1 - q_y) still resolved
  expect(lp[5]).toBeLessThan(-15); //      q_y -> 0
  const coef = lossCoefficients(kinds, weights, { logp: lp, log1mq: l1, lse: new Float32Array(R) });
  const VC = 64;
  const dz = g.buffers.create('dz', R * VC * 4);
  const dh = g.buffers.create('dh', R * C * 4);
  const coefBuf = g.buffers.upload('coef', coef);
  await g.run(async (enc) => {
    for (let vOff = 0; vOff < V; vOff += VC) {
      await ops.lmheadDz(enc, { h: hb, rows, targets: tg, R, w: W, lse, coef: coefBuf, dz, vOff, VC, scratch });
      await ops.matmulDx(enc, { dy: dz, w: W, dx: dh, T: R, N: VC, nOff: vOff, beta: vOff === 0 ? 0 : 1 });
    }
  });
  const got = await g.f32(dh);
  expect(Array.from(got).every(Number.isFinite)).toBe(true);
  const hd = Float64Array.from(h);
  const eps = 1e-5;
  const fd = new Float64Array(R * C);
  for (let i = 0; i < R * C; i++) {
    const x = hd[i];
    hd[i] = x + eps;
    const up = lossF64(hd, w, R, V, C, targets, kinds, weights);
    hd[i] = x - eps;
    const down = lossF64(hd, w, R, V, C, targets, kinds, weights);
    hd[i] = x;
    fd[i] = (up - down) / (2 * eps);
  }
  const scale = Math.max(...fd.map(Math.abs));
  expect(maxViolation(got, fd, 1e-3, 1e-4 * scale)).toBeLessThanOrEqual(1);
});

/** An lm-head tile of 128 rows (16 x wg 8): kept chunks step by 128 rows. */
const WIDE_TILE = { TM: 16, TN: 8, WGX: 8, WGY: 8 };

it.each([
  ['keeping the logits of 3 chunks of 64 rows, the last partial; default tile, f32', DEFAULT_TUNING.lmhead, 'f32', 300, 64],
  ['keeping the logits of 2 chunks of 128 rows (a 128-row tile), the last partial; q8', WIDE_TILE, 'q8', 300, 128],
  ['a pass too short to keep 128 rows of logits: two passes, the GPU making the coefficients', WIDE_TILE, 'q8', 160, 0],
] as const)(
  "forward and backward at once equal the two-pass backward with the host's coefficients: %s",
  async (_, tile, format, T, kept) => {
    const [V, C] = [20000, 32];
    const rows = Array.from({ length: 150 }, (_, i) => 3 + i);
    const R = rows.length;
    const w = randomArray(V * C, 11, 0.5);
    const h = randomArray(T * C, 12, 1);
    for (let c = 0; c < C; c++) h[rows[7] * C + c] = 8 * Math.sign(w[9 * C + c]) || 8; // q_y -> 1 at row 7 (target 9)
    const targets = rows.map((r) => (r * 37) % V);
    targets[7] = 9;
    const kinds: TermKind[] = rows.map((_, i) => (i % 3 === 1 ? 'unlikelihood' : 'likelihood'));
    const weights = rows.map((_, i) => 0.05 + 0.01 * (i % 7));
    // An SFT term on every third row beside its own (NLFT's extra term on negatives): both weights set.
    const extra = { kinds: rows.map((): TermKind => 'likelihood'), weights: rows.map((_, i) => (i % 3 === 1 ? 0.02 : 0)) };
    const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, lmhead: tile, ceChunk: 4096 });
    expect(keptLogitRows(R, T, V, keptRowStep(ops.tuning))).toBe(kept);
    const W = g.weight(w, V, C, format);
    const live: TrackedBuffer[] = [];
    const hb = g.buffers.uploadIn(live, 'h', h);
    const s = {
      rows: g.buffers.uploadIn(live, 'rows', Uint32Array.from(rows)),
      targets: g.buffers.uploadIn(live, 'targets', Uint32Array.from(targets)),
      R,
    };
    let twoPass!: LmHeadOut;
    await g.run(async (enc) => {
      twoPass = await lmHeadForward(ops, enc, W, hb, s, live);
    });
    const scores = { logp: await g.f32(twoPass.logp), log1mq: await g.f32(twoPass.log1mq), lse: await g.f32(twoPass.lse) };
    expect(scores.log1mq[7]).toBeLessThan(-15); // q_y -> 1, log(1 - q_y) resolved
    const coef = lossCoefficients(kinds, weights, scores);
    lossCoefficients(extra.kinds, extra.weights, scores).forEach((c, i) => (coef[i] += c));
    let want!: TrackedBuffer;
    const coefBuf = g.buffers.uploadIn(live, 'coef', coef);
    await g.run(async (enc) => {
      want = await lmHeadBackward(ops, enc, W, hb, T, s, twoPass, coefBuf, live);
    });
    const terms = g.buffers.uploadIn(live, 'terms', termWeights(kinds, weights, extra));
    let once!: Required<LmHeadOut>;
    await g.run(async (enc) => {
      once = await lmHeadForwardBackward(ops, enc, W, hb, T, s, terms, live);
    });
    for (const k of ['logp', 'log1mq', 'lse'] as const) expect(await g.f32(once[k])).toEqual(scores[k]);
    const a = await g.f32(once.dxn);
    const b = await g.f32(want);
    expect(a.every(Number.isFinite)).toBe(true);
    const scale = Math.max(...b.map(Math.abs));
    expect(scale).toBeGreaterThan(0);
    expect(maxViolation(a, b, 1e-5, 1e-6 * scale)).toBeLessThanOrEqual(1);
    for (const t of live) g.buffers.destroy(t);
  },
);
