/**
 * kernels/matvec.wgsl, the one-row product of decode, against the CPU reference (matmulRef with
 * T = 1, float64 accumulation, on the dequantized weight): every shape in MATVEC_VARIANTS, f32/q8/q4
 * weights, without an adapter and with one (u = x A^T by the same kernel over A, then the base with
 * s u B^T fused in), written (beta 0) and added onto the output (beta 1). Column counts are not
 * multiples of any variant's columns per workgroup; f32 runs K of 36 (blocks of one vec4) and 64
 * (blocks of 32 k, as q8/q4, whose scale multiplies a block's dot once). Tolerance |gpu - ref| <= 1e-5 + 1e-4*|ref|,
 * as for matmul (f32 accumulation over K).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_TUNING, MATVEC_VARIANTS, type MatvecTile, matvecVariantsOn, Ops } from '../../src/engine/ops.ts';
import { dequantize, quantize, type QuantFormat } from '../../src/model/quant.ts';
import { matmulRef } from '../reference/cpu-ops.ts';
import { maxViolation, randomArray, testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
beforeAll(async () => {
  g = await testGpu();
});
afterAll(() => g?.ctx.destroy());

const deq = (w: Float32Array, rows: number, cols: number, f: QuantFormat) => dequantize(quantize(w, rows, cols, f));
const opsWith = (tile: MatvecTile) => new Ops(g.ctx.device, g.pipelines, g.buffers, { ...DEFAULT_TUNING, matvec: tile });
const tileName = (t: MatvecTile) => `${t.variant} TN4=${t.TN4} WG=${t.WG}`;

describe('matvec', () => {
  for (const tile of MATVEC_VARIANTS) {
    for (const [format, N, K, r] of [
      ['f32', 45, 36, 0],
      ['f32', 201, 36, 8],
      ['f32', 90, 64, 4], // K a multiple of 32: blocks of 8 vec4, as the quantized formats
      ['q8', 77, 96, 0],
      ['q8', 300, 64, 4],
      ['q4', 70, 64, 0],
      ['q4', 133, 96, 8],
    ] as const) {
      it(`${tileName(tile)}: ${format} W(${N},${K})${r ? `, adapter r ${r}` : ''}`, async (t) => {
        if (!matvecVariantsOn(g.ctx.device).includes(tile)) return t.skip();
        const ops = opsWith(tile);
        const x = randomArray(K, 1 + N);
        const w = randomArray(N * K, 2 + N, 0.5);
        const xb = g.buffers.upload('x', x);
        const wb = g.weight(w, N, K, format);
        const ob = g.buffers.upload('out', randomArray(N, 3 + N));
        let ref = matmulRef(x, deq(w, N, K, format), 1, N, K);
        // The adapter: A (r,K), B (N,r), u = x A^T on the GPU, then the base with s u B^T fused.
        const a = randomArray(r * K, 4 + N, 0.3);
        const b = randomArray(N * r, 5 + N, 0.3);
        const lora =
          r > 0 ? { A: g.weight(a, r, K, 'f32'), u: g.buffers.create('u', r * 4), B: g.weight(b, N, r, 'f32'), scale: 1.5 } : undefined;
        const fill = (beta: number) =>
          g.run(async (enc) => {
            if (lora) await ops.matvec(enc, { x: xb, w: lora.A, out: lora.u });
            await ops.matvec(enc, { x: xb, w: wb, out: ob, beta, lora });
          });
        await fill(0);
        if (lora) {
          const uRef = matmulRef(x, a, 1, r, K);
          expect(maxViolation(await g.f32(lora.u), uRef, 1e-4, 1e-5), 'u = x A^T').toBeLessThanOrEqual(1);
          const delta = matmulRef(uRef, b, 1, N, r);
          ref = ref.map((v, n) => v + 1.5 * delta[n]);
        }
        expect(maxViolation(await g.f32(ob), ref, 1e-4, 1e-5), 'beta 0').toBeLessThanOrEqual(1);
        // beta 1 adds onto the output (the residual stream)
        await fill(1);
        expect(
          maxViolation(
            await g.f32(ob),
            ref.map((v) => 2 * v),
            1e-4,
            1e-5,
          ),
          'beta 1',
        ).toBeLessThanOrEqual(1);
      });
    }
  }
});

it('more columns than 65535 workgroups hold (a folded grid) reach every column', async () => {
  // One thread of 4 columns a workgroup, so the fold comes at a small size.
  const tile: MatvecTile = { variant: 'cols', TN4: 1, WG: 1 };
  const [N, K] = [65535 * 4 + 9, 4];
  const x = randomArray(K, 7);
  const w = randomArray(N * K, 8, 0.5);
  const ob = g.buffers.create('out', N * 4);
  await g.run((enc) => opsWith(tile).matvec(enc, { x: g.buffers.upload('x', x), w: g.weight(w, N, K, 'f32'), out: ob }));
  expect(maxViolation(await g.f32(ob), matmulRef(x, w, 1, N, K), 1e-4, 1e-5)).toBeLessThanOrEqual(1);
});
