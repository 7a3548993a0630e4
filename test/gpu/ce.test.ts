/**
 * The lm-head's training gradient: the rows' unit gradient from the forward (`lmHeadForwardGrad`:
 * lmhead.wgsl `partial` keeping a chunk of rows' logits (mode 2) and `dz_rows`, or recomputing them
 * per vocabulary chunk (mode 1), then matmul_dx.wgsl), scaled by the host's coefficients in the
 * backward (`lmHeadBackward`: `scatter`), against central finite differences of the loss computed in
 * float64
 *   L = sum_r w_r * (-log q_r)  (likelihood)   or   w_r * (-log(1 - q_r))  (unlikelihood),
 * including rows where q_y -> 0 and q_y -> 1, with a vocabulary chunk that does not divide the
 * vocabulary, for every lm-head tile the tuner may pick, both ways. Tolerance: 1e-3 relative + 1e-4
 * of the largest gradient absolute; no NaN or Inf. Then the two ways against each other over row
 * chunks whose last is partial, f32 and q8 weights: the same scores bit for bit, the same unit
 * gradient to 1e-5 relative + 1e-6 of its largest value (only the order of its sums differs).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { TrackedBuffer } from '../../src/engine/buffers.ts';
import { keptLogitRows, keptRowStep, lmHeadBackward, lmHeadForwardGrad, type LmHeadTrainOut } from '../../src/engine/lm-head.ts';
import { DEFAULT_TUNING, Ops } from '../../src/engine/ops.ts';
import { lossCoefficients, type TermKind } from '../../src/engine/train-pass.ts';
import { LMHEAD_CANDIDATES } from '../../src/engine/tune.ts';
import { maxViolation, randomArray, testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.destroy());

/** `lmHeadForwardGrad` over rows 0..R-1 of h (R,C) keeping `keep` rows' logits (0: recomputing them), then its scores. */
async function forwardGrad(
  ops: Ops,
  w: Parameters<typeof lmHeadForwardGrad>[2],
  h: Float32Array,
  rows: number[],
  targets: number[],
  T: number,
  keep: number,
  live: TrackedBuffer[],
) {
  const hb = g.buffers.uploadIn(live, 'h', h);
  const s = {
    rows: g.buffers.uploadIn(live, 'rows', Uint32Array.from(rows)),
    targets: g.buffers.uploadIn(live, 'targets', Uint32Array.from(targets)),
    R: rows.length,
  };
  let out!: LmHeadTrainOut;
  await g.run(async (enc) => {
    out = await lmHeadForwardGrad(ops, enc, w, hb, T, s, live, keep);
  });
  const scores = { logp: await g.f32(out.logp), log1mq: await g.f32(out.log1mq), lse: await g.f32(out.lse) };
  return { s, out, scores };
}

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

// Every lm-head tile the tuner may pick, keeping the logits and recomputing them.
for (const keep of [true, false])
  it.each(LMHEAD_CANDIDATES)(
    `tile %o, ${keep ? 'kept logits' : 'recomputed logits'}: matches finite differences for both term kinds, with q_y near 0 and near 1`,
    async (tile) => {
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
      const W = g.weight(w, V, C, 'f32');
      const live: TrackedBuffer[] = [];
      const rows = Array.from({ length: R }, (_, i) => i);
      const { s, out, scores } = await forwardGrad(ops, W, h, rows, targets, R, keep ? R : 0, live);
      expect(scores.logp[4]).toBeGreaterThan(-1e-6); // q_y -> 1
      expect(scores.log1mq[4]).toBeLessThan(-15); //    and log(1 - q_y) still resolved
      expect(scores.logp[5]).toBeLessThan(-15); //      q_y -> 0
      const coef = g.buffers.uploadIn(live, 'coef', lossCoefficients(kinds, weights, scores));
      let dxn!: TrackedBuffer;
      await g.run(async (enc) => {
        dxn = await lmHeadBackward(ops, enc, W, R, s, out, coef, live);
      });
      const got = await g.f32(dxn);
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
      for (const t of live) g.buffers.destroy(t);
    },
  );

/** An lm-head tile of 128 rows (16 x wg 8): kept chunks step by 128 rows. */
const WIDE_TILE = { TM: 16, TN: 8, WGX: 8, WGY: 8 };

it.each([
  ['3 chunks of 64 rows, the last partial; default tile, f32', DEFAULT_TUNING.lmhead, 'f32', 300, 64],
  ['2 chunks of 128 rows (a 128-row tile), the last partial; q8', WIDE_TILE, 'q8', 300, 128],
] as const)('keeping the logits gives what recomputing them gives: %s', async (_, tile, format, T, kept) => {
  const [V, C] = [20000, 32];
  const rows = Array.from({ length: 150 }, (_, i) => 3 + i);
  const ops = new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, lmhead: tile, ceChunk: 4096 });
  expect(keptLogitRows(rows.length, T, V, keptRowStep(ops.tuning))).toBe(kept);
  expect(keptRowStep({ ...ops.tuning, lmhead: { TM: 12, TN: 8, WGX: 8, WGY: 8 } })).toBe(128); // 96 tile rows, a bindable step of 128
  expect(keptLogitRows(rows.length, 160, V, keptRowStep(ops.tuning))).toBe(kept === 64 ? 64 : 0); // a shorter pass recomputes 128-row chunks
  expect(keptLogitRows(720, 720, 849, 64)).toBe(320); // a small vocabulary's packed pass: chunks of at most T/2 rows
  expect(keptLogitRows(180, 180, 849, 64)).toBe(180); // one chunk under 1 MiB, whatever T
  const w = randomArray(V * C, 11, 0.5);
  const h = randomArray(T * C, 12, 1);
  for (let c = 0; c < C; c++) h[rows[7] * C + c] = 8 * Math.sign(w[9 * C + c]) || 8; // q_y -> 1 at row 7 (target 9)
  const targets = rows.map((r) => (r * 37) % V);
  targets[7] = 9;
  const W = g.weight(w, V, C, format);
  const live: TrackedBuffer[] = [];
  const once = await forwardGrad(ops, W, h, rows, targets, T, kept, live);
  const twice = await forwardGrad(ops, W, h, rows, targets, T, 0, live);
  expect(once.scores.log1mq[7]).toBeLessThan(-15); // q_y -> 1, log(1 - q_y) resolved
  for (const k of ['logp', 'log1mq', 'lse'] as const) expect(once.scores[k]).toEqual(twice.scores[k]);
  const [a, b] = [await g.f32(once.out.grad), await g.f32(twice.out.grad)];
  expect(a.every(Number.isFinite)).toBe(true);
  const scale = Math.max(...b.map(Math.abs));
  expect(scale).toBeGreaterThan(0);
  expect(maxViolation(a, b, 1e-5, 1e-6 * scale)).toBeLessThanOrEqual(1);
  for (const t of live) g.buffers.destroy(t);
});
