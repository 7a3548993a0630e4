/**
 * `nlft tune --model M [--quant q8]`: measures the kernel tiles for this adapter and model now
 * (`tuningFor` with `measure`), whatever the cache holds, prints every candidate's speed and keeps
 * the fastest in the tuning cache, where later commands on this model take it from. A software
 * adapter runs small models on a preset without measuring (docs/architecture.md §3b); this is how
 * to measure there anyway.
 */
import { adapterName } from '../../engine/gpu.ts';
import { describeMatmulTile, describeMatvecTile, type Tuning } from '../../engine/ops.ts';
import type { TuneResult } from '../../engine/tune.ts';
import { loadModelFolder } from '../../model/loader.ts';
import { describeTuning, tuneEngine } from '../../session/model.ts';
import { createNodeEngine } from '../engine.ts';
import { FileTuningCache } from '../tuning-cache.ts';
import { parse, quantOption, required } from './args.ts';
import { modelSource } from './inputs.ts';
import { STDERR_PROGRESS } from './progress.ts';

export async function tuneCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, { model: { type: 'string' }, quant: { type: 'string' } });
  const dir = required(values, 'model');
  const quant = quantOption(values.quant);
  const { config } = await loadModelFolder(modelSource(dir, out));
  const engine = await createNodeEngine();
  try {
    out(`adapter  ${adapterName(engine.ctx.adapter)}`);
    const cache = new FileTuningCache();
    let shown = -1;
    const onProgress = (f: number) => {
      const pct = Math.floor(f * 10) * 10;
      if (pct > shown) STDERR_PROGRESS.write(`tune  measuring the kernels: ${(shown = pct)} %\n`);
    };
    const { tuning, source, measured } = await tuneEngine(engine, cache, config, quant, { measure: true, onProgress });
    if (measured) for (const line of timingLines(measured)) out(line);
    else out('tune     no room on the GPU to measure: the defaults');
    out(`kernels  ${describeTuning(tuning, source)}${measured ? `; kept in ${cache.file}` : ''}`);
  } finally {
    engine.destroy();
  }
}

const wg = (t: { WGX: number; WGY: number }) => `(wg ${t.WGX}×${t.WGY})`;
const attentionName = (t: Tuning['attention']) => (t.variant === 'tiled' ? `tiled ${t.BQ}×${t.BK}` : `rows ${t.RT} ${`(wg ${t.WG})`}`);

/** One line per candidate: its family, its tile, its speed, and `*` on the one kept. */
function timingLines(r: TuneResult): string[] {
  const same = (a: object, b: object) => JSON.stringify(a) === JSON.stringify(b);
  const row = (family: string, name: string, speed: string, kept: boolean) =>
    `${family.padEnd(12)}${name.padEnd(24)}${speed.padStart(14)}${kept ? '  *' : ''}`;
  const gflops = (g: number) => `${g.toFixed(2)} GFLOP/s`;
  const ms = (v: number) => `${v.toFixed(2)} ms`;
  return [
    ...r.matmul.map((m) => row('matmul', describeMatmulTile(m.tile), gflops(m.gflops), same(m.tile, r.tuning.matmul))),
    ...r.matmulDx.map((m) => row('dx', `${m.tile.TM}×${m.tile.TK} ${wg(m.tile)}`, gflops(m.gflops), same(m.tile, r.tuning.matmulDx))),
    ...r.matmulTn.map((m) => row('dA/dB', `${m.tile.TM}×${m.tile.TP} ${wg(m.tile)}`, gflops(m.gflops), same(m.tile, r.tuning.matmulTn))),
    ...r.lmhead.map((m) => row('lm-head', `${m.tile.TM}×${m.tile.TN} ${wg(m.tile)}`, gflops(m.gflops), same(m.tile, r.tuning.lmhead))),
    ...r.attention.map((m) => row('attention', attentionName(m.tile), ms(m.ms), same(m.tile, r.tuning.attention))),
    ...r.matvec.map((m) => row('decode', describeMatvecTile(m.tile), ms(m.ms), same(m.tile, r.tuning.matvec!))),
    ...r.decodeAttention.map((m) =>
      row('attn-decode', `${m.tile.threads} threads a head`, ms(m.ms), same(m.tile, r.tuning.decodeAttention)),
    ),
  ];
}
