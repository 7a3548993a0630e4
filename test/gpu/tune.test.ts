/**
 * Per-adapter kernel tuning at first use (src/engine/tune.ts): measured once, then taken from the
 * cache; a small model on a software adapter runs the preset unless asked to measure; a cached value
 * that is not one of today's candidate tilings is not used; the CLI's file cache round-trips and
 * survives a corrupt file.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DECODE_ATTENTION_CANDIDATES, DEFAULT_TUNING, MATVEC_VARIANTS, matvecVariantsOn, type Tuning } from '../../src/engine/ops.ts';
import {
  ATTENTION_CANDIDATES,
  isCachedTuning,
  LMHEAD_CANDIDATES,
  MATMUL_CANDIDATES,
  MATMUL_DX_CANDIDATES,
  MATMUL_TN_CANDIDATES,
  matmulCandidates,
  pickLmheadTile,
  presetTuning,
  SOFTWARE_PRESET_MAX_HIDDEN,
  SOFTWARE_TINY_MAX_HIDDEN,
  SOFTWARE_TINY_TUNING,
  SOFTWARE_TUNING,
  SUBGROUP_TILE_MIN_LANES,
  tuneKernels,
  tuningFor,
  tuningKey,
  type TuningCache,
} from '../../src/engine/tune.ts';
import { FileTuningCache } from '../../src/node/tuning-cache.ts';
import { testGpu, type TestGpu } from '../helpers/gpu.ts';

let g: TestGpu;
let tmp: string;
beforeAll(async () => {
  g = await testGpu();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'nlft-tune-'));
});
afterAll(async () => {
  g?.destroy();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const SHAPE = { C: 64, F: 128, V: 3000, heads: { H: 4, KVH: 2, D: 16 } };

function mapCache(): TuningCache & { map: Map<string, unknown> } {
  const map = new Map<string, unknown>();
  return { map, get: async (k) => map.get(k), set: async (k, t) => void map.set(k, t) };
}

it('a software adapter runs a small model on the preset, measured and cached only on request; the cached measurement then wins', async () => {
  expect(g.ctx.adapter.software).toBe(true); // SwiftShader
  const cache = mapCache();
  const progress: number[] = [];
  expect(await tuningFor(g, cache, SHAPE, 'f32', { onProgress: (f) => progress.push(f) })).toEqual({
    tuning: SOFTWARE_TINY_TUNING,
    source: 'preset',
  });
  expect(progress).toEqual([]);
  expect(cache.map.size).toBe(0);
  for (const preset of [SOFTWARE_TINY_TUNING, SOFTWARE_TUNING]) expect(isCachedTuning(preset)).toBe(true); // its tiles are all candidates

  const measured = await tuningFor(g, cache, SHAPE, 'f32', { onProgress: (f) => progress.push(f), measure: true });
  expect(measured.source).toBe('measured');
  expect(progress.at(-1)).toBe(1);
  expect(measured.measured?.tuning).toEqual(measured.tuning);
  expect(measured.measured?.lmhead.map((m) => m.tile)).toEqual(LMHEAD_CANDIDATES);
  const key = tuningKey(g.ctx.adapter, SHAPE, 'f32');
  expect(cache.map.get(key)).toEqual(measured.tuning);
  expect(await tuningFor(g, cache, SHAPE, 'f32')).toEqual({ tuning: measured.tuning, source: 'cached' });
  // A cached value that is not among today's candidates is not used: the preset again.
  cache.map.set(key, { ...measured.tuning, matmulDx: { TM: 3, TK: 4, WGX: 8, WGY: 8 } });
  expect((await tuningFor(g, cache, SHAPE, 'f32')).source).toBe('preset');
}, 600_000); // one measurement, in f32 (each candidate compiled once: q8 would add the LoRA factors' f32 format) and reused by the tests below

it('any other adapter, or a wider model, measures at first use and then reuses the cached choice; a foreign cached value is measured again', async () => {
  const hardware = { ...g, ctx: { ...g.ctx, adapter: { ...g.ctx.adapter, software: false } } };
  const cache = mapCache();
  const first = await tuningFor(hardware, cache, SHAPE, 'f32');
  expect(first.source).toBe('measured');
  expect(matmulCandidates(g.ctx.adapter)).toContainEqual(first.tuning.matmul);
  expect(MATMUL_DX_CANDIDATES).toContainEqual(first.tuning.matmulDx);
  expect(MATMUL_TN_CANDIDATES).toContainEqual(first.tuning.matmulTn);
  expect(LMHEAD_CANDIDATES).toContainEqual(first.tuning.lmhead);
  expect(ATTENTION_CANDIDATES).toContainEqual(first.tuning.attention);
  expect(matvecVariantsOn(g.ctx.device)).toContainEqual(first.tuning.matvec);
  expect(await tuningFor(hardware, cache, SHAPE, 'f32')).toEqual({ tuning: first.tuning, source: 'cached' });
  cache.map.set(tuningKey(g.ctx.adapter, SHAPE, 'f32'), { ...first.tuning, matvec: undefined }); // what an older build cached
  expect((await tuningFor(hardware, cache, SHAPE, 'f32')).source).toBe('measured');
  // Which models the presets serve: a software adapter's up to hidden 128 (the quickest to compile up to 64); none on other adapters.
  expect(presetTuning(g.ctx.adapter, { C: SOFTWARE_TINY_MAX_HIDDEN })).toEqual(SOFTWARE_TINY_TUNING);
  expect(presetTuning(g.ctx.adapter, { C: SOFTWARE_TINY_MAX_HIDDEN + 32 })).toEqual(SOFTWARE_TUNING);
  expect(presetTuning(g.ctx.adapter, { C: SOFTWARE_PRESET_MAX_HIDDEN })).toEqual(SOFTWARE_TUNING);
  expect(presetTuning(g.ctx.adapter, { C: SOFTWARE_PRESET_MAX_HIDDEN + 32 })).toBeNull();
  expect(presetTuning(g.ctx.adapter, { C: 576 })).toBeNull();
  expect(presetTuning(hardware.ctx.adapter, { C: 64 })).toBeNull();
}, 900_000); // two measurements

it('keeps a 128-row lm-head tile only when it beats the 64-row ones by more than 10 %', () => {
  const [t16, , t64, t128, t64b] = LMHEAD_CANDIDATES;
  expect([t16, t64, t128, t64b].map((t) => t.TM * t.WGY)).toEqual([16, 64, 128, 64]);
  const timed = (g: number[]) => [t16, t64, t128, t64b].map((tile, i) => ({ tile, gflops: g[i] }));
  expect(pickLmheadTile(timed([1, 4.0, 4.3, 3.9]))).toEqual(t64); // within 10 %: the shorter tile
  expect(pickLmheadTile(timed([1, 3.8, 4.3, 3.9]))).toEqual(t128); // 10.3 % faster: kept
  expect(pickLmheadTile(timed([4.2, 4.0, 4.1, 3.9]))).toEqual(t16); // the fastest of the shortest step (64 rows)
  expect(pickLmheadTile(timed([1, 4.0, 3.0, 4.1]))).toEqual(t64b); // no tie to break: the fastest
});

it("a cached value is used only if each of its tiles is among today's candidates", () => {
  const base = SOFTWARE_TUNING;
  expect(isCachedTuning(base)).toBe(true);
  for (const foreign of [
    { ...base, matmul: { variant: 'regs', TM: 3, TN: 5, WGX: 8, WGY: 8 } },
    { ...base, matmulDx: { TM: 3, TK: 4, WGX: 8, WGY: 8 } },
    { ...base, matmulTn: { TM: 3, TP: 4, WGX: 8, WGY: 8 } },
    { ...base, lmhead: { TM: 3, TN: 4, WGX: 8, WGY: 8 } },
    { ...base, attention: { variant: 'rows', WG: 7, RT: 1 } },
    { ...base, matvec: { variant: 'cols', TN4: 3, WG: 5 } },
    { ...base, matvec: undefined },
    { ...base, decodeAttention: { threads: 8 } },
    { ...base, decodeAttention: undefined }, // what a build before the decode attention's tuning cached
    { ...base, ceChunk: 1234 },
    null,
    'tuning',
  ])
    expect(isCachedTuning(foreign), JSON.stringify(foreign)).toBe(false);
});

it('times every variant the adapter can run and keeps the fastest; f16 tiles only with shader-f16, subgroup tiles only with subgroups of 8 lanes or more', async () => {
  const { features, subgroupMinSize } = g.ctx.adapter;
  const runnable = matmulCandidates(g.ctx.adapter);
  expect(runnable.some((t) => t.variant === 'shared' && !t.f16)).toBe(true);
  expect(runnable.some((t) => t.variant === 'shared' && t.f16)).toBe(features.shaderF16);
  const wide = subgroupMinSize === 0 || subgroupMinSize >= SUBGROUP_TILE_MIN_LANES;
  expect(runnable.some((t) => t.variant === 'subgroup')).toBe(features.subgroups && wide);
  const every = { features: { ...features, shaderF16: true, subgroups: true }, subgroupMinSize: 32 };
  expect(matmulCandidates(every)).toEqual(MATMUL_CANDIDATES);
  expect(matmulCandidates({ ...every, subgroupMinSize: 4 }).some((t) => t.variant === 'subgroup')).toBe(false);
  expect(matmulCandidates({ ...every, features: { ...every.features, subgroups: false } }).some((t) => t.variant === 'subgroup')).toBe(
    false,
  );
  const r = await tuneKernels(g, { ...SHAPE, T: 37 }, 'f32');
  expect(r.matmul.map((m) => m.tile)).toEqual(runnable);
  expect(r.matmulDx.map((m) => m.tile)).toEqual(MATMUL_DX_CANDIDATES);
  expect(r.matmulTn.map((m) => m.tile)).toEqual(MATMUL_TN_CANDIDATES);
  for (const m of [...r.matmul, ...r.matmulDx, ...r.matmulTn]) expect(m.gflops).toBeGreaterThan(0);
  const topTn = Math.max(...r.matmulTn.map((m) => m.gflops));
  expect(r.matmulTn.find((m) => m.gflops === topTn)?.tile).toEqual(r.tuning.matmulTn);
  const top = Math.max(...r.matmul.map((m) => m.gflops));
  expect(r.matmul.find((m) => m.gflops === top)?.tile).toEqual(r.tuning.matmul);
  // Decode's one-row shapes: every one the adapter compiles, the fastest kept.
  expect(r.matvec.map((m) => m.tile)).toEqual(matvecVariantsOn(g.ctx.device));
  expect(r.matvec.map((m) => m.tile)).toEqual(MATVEC_VARIANTS.filter((t) => t.variant !== 'subgroup' || features.subgroups));
  for (const m of r.matvec) expect(m.ms).toBeGreaterThan(0);
  const quickest = Math.min(...r.matvec.map((m) => m.ms));
  expect(r.matvec.find((m) => m.ms === quickest)?.tile).toEqual(r.tuning.matvec);
  // Decode's attention: each threads-per-head candidate, the fastest kept.
  expect(r.decodeAttention.map((m) => m.tile)).toEqual(DECODE_ATTENTION_CANDIDATES);
  for (const m of r.decodeAttention) expect(m.ms).toBeGreaterThan(0);
  const quickestAttention = Math.min(...r.decodeAttention.map((m) => m.ms));
  expect(r.decodeAttention.find((m) => m.ms === quickestAttention)?.tile).toEqual(r.tuning.decodeAttention);
}, 300_000);

it('the key separates adapters, weight formats and model widths', () => {
  const a = g.ctx.adapter;
  const k = tuningKey(a, SHAPE, 'q8');
  expect(tuningKey({ ...a, description: `${a.description} (other)` }, SHAPE, 'q8')).not.toBe(k);
  expect(tuningKey(a, SHAPE, 'q4')).not.toBe(k);
  expect(tuningKey(a, { ...SHAPE, F: 256 }, 'q8')).not.toBe(k);
  expect(tuningKey(a, { ...SHAPE, V: 9000 }, 'q8')).toBe(tuningKey(a, { ...SHAPE, V: 50000 }, 'q8')); // lm-head timed on 8192 columns at most
});

it('the CLI file cache round-trips and reads a corrupt file as empty', async () => {
  const cache = new FileTuningCache(path.join(tmp, 'nested'));
  expect(await cache.get('x')).toBeUndefined();
  const t: Tuning = { ...DEFAULT_TUNING, matmul: MATMUL_CANDIDATES[5], matmulDx: MATMUL_DX_CANDIDATES[2] };
  await cache.set('x', t);
  await cache.set('y', DEFAULT_TUNING);
  expect(await new FileTuningCache(path.join(tmp, 'nested')).get('x')).toEqual(t);
  await writeFile(cache.file, '{"x": ');
  expect(await cache.get('x')).toBeUndefined();
});
