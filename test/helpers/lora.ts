/** LoRA helpers for tests: seeded random adapters on every projection, and a flat view of a LoraSet. */
import type { LoraSet } from '../../src/model/lora.ts';
import { projectionShapes } from '../../src/model/size.ts';
import { PROJECTIONS, type LlamaWeights } from '../../src/model/weights.ts';
import { Rng, fillNormal } from '../../src/util/rng.ts';

export function randomLora(w: LlamaWeights, r: number, seed: number, std = 0.3): LoraSet {
  const rng = new Rng(seed);
  const shapes = projectionShapes(w.config);
  return w.layers.map(() =>
    Object.fromEntries(
      PROJECTIONS.map((p) => [
        p,
        {
          A: fillNormal(new Float32Array(r * shapes[p][1]), std, rng),
          B: fillNormal(new Float32Array(shapes[p][0] * r), std, rng),
          r,
          scale: 1.5,
        },
      ]),
    ),
  );
}

/** Every A then B of every adapted projection, layers in order. */
export const flatten = (s: LoraSet) => s.flatMap((layer) => PROJECTIONS.flatMap((p) => (layer[p] ? [...layer[p]!.A, ...layer[p]!.B] : [])));
