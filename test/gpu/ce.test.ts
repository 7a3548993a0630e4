/**
 * The fused lm-head cross-entropy backward (lmhead.wgsl `partial` in mode 1 + matmul_dx.wgsl, one
 * vocabulary chunk at a time) against central finite differences of the loss computed in float64
 *   L = sum_r w_r * (-log q_r)  (likelihood)   or   w_r * (-log(1 - q_r))  (unlikelihood),
 * including rows where q_y -> 0 and q_y -> 1, with a chunk size that does not divide the
 * vocabulary, for every lm-head tile the tuner may pick. Tolerance: 1e-3 relative + 1e-4 of the largest gradient absolute; no NaN or Inf.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Ops, DEFAULT_TUNING } from '../../src/engine/ops.ts';
import { lossCoefficients, type TermKind } from '../../src/engine/train-pass.ts';
import { LMHEAD_CANDIDATES } from '../../src/engine/tune.ts';
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
