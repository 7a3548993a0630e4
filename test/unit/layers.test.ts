import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkLayers, readLayeredSources, unitOf } from '../layers/check.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');

describe('layers: imports point down only', () => {
  const sources = readLayeredSources(ROOT);

  it('every source file belongs to a layer', () => {
    expect(sources.size).toBeGreaterThan(50);
    expect(unitOf('src/engine/llama.ts')).toBe('src/engine');
    expect(unitOf('src/errors.ts')).toBe('src/errors.ts');
    expect(unitOf('workers/trainer.worker.ts')).toBe('workers');
  });

  it('the tree has no upward or sideways import', () => {
    expect(checkLayers(sources).map((v) => v.message)).toEqual([]);
  });

  it('a planted upward import is found', () => {
    const planted = new Map(sources);
    planted.set('src/model/planted.ts', "import type { GpuLlama } from '../engine/llama.ts';\nexport type X = GpuLlama;\n");
    const found = checkLayers(planted).filter((v) => v.from.endsWith('planted.ts'));
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ from: 'src/model/planted.ts', to: 'src/engine/llama.ts' });
    expect(found[0].message).toMatch(/src\/engine \(layer 3\) is above src\/model \(layer 2\)/);
  });

  it('a planted sideways import and a dynamic import are found', () => {
    const planted = new Map(sources);
    planted.set('src/data/planted.ts', "export const f = () => import('../model/config.ts');\n");
    planted.set('src/nlft/planted.ts', "export { evaluate } from '../eval/accuracy.ts';\n");
    expect(
      checkLayers(planted)
        .filter((v) => v.from.endsWith('planted.ts'))
        .map((v) => v.from)
        .sort(),
    ).toEqual(['src/data/planted.ts', 'src/nlft/planted.ts']);
  });
});
