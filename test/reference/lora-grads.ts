/**
 * tfjs-core autodiff of the engine's weighted loss w.r.t. every LoRA factor, on the reference model:
 *   L = sum_r w_r * (-log q_r) [likelihood rows] + w_r * (-log(1 - q_r)) [unlikelihood rows]
 * with q_r = p(targets[r] | ids[..rows[r]]) (rows ascending).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LoraSet } from '../../src/model/lora.ts';
import type { TermKind } from '../../src/engine/train-pass.ts';
import type { LlamaWeights } from '../../src/model/weights.ts';
import { llamaLogitsTf, loraToTensors, tokenLogProbsTf, weightsToTensors } from './llama-tf.ts';

/** Positions and per-row terms of one sequence. */
export interface WeightedTerms {
  ids: number[];
  rows: number[];
  targets: number[];
  kinds: TermKind[];
  weights: ArrayLike<number>;
}

/** tfjs autodiff of the same loss w.r.t. every LoRA factor; returns gradients in LoraSet shape and the loss. */
export function referenceLoraGrads(weights: LlamaWeights, lora: LoraSet, c: WeightedTerms): { grads: LoraSet; loss: number } {
  const wt = weightsToTensors(weights);
  const lt = loraToTensors(lora, weights.config);
  const vars: tf.Variable[] = [];
  const lv = lt.map((layer) =>
    Object.fromEntries(
      Object.entries(layer).map(([p, f]) => {
        const A = tf.variable(f!.A);
        const B = tf.variable(f!.B);
        vars.push(A, B);
        return [p, { A, B, scale: f!.scale }];
      }),
    ),
  );
  const full = c.ids.map(() => -1);
  c.rows.forEach((r, i) => (full[r] = c.targets[i]));
  const { value, grads } = tf.variableGrads(() => {
    const lp = tokenLogProbsTf(llamaLogitsTf(wt, c.ids, lv), full); // rows ascending = this order
    const isU = tf.tensor1d(c.kinds.map((k) => (k === 'unlikelihood' ? 1 : 0)));
    const term = tf.where(tf.cast(isU, 'bool'), tf.neg(tf.log1p(tf.neg(tf.exp(lp)))), tf.neg(lp));
    return tf.sum(tf.mul(term, tf.tensor1d(Array.from(c.weights)))) as tf.Scalar;
  }, vars);
  let k = 0;
  const out: LoraSet = lora.map((layer) =>
    Object.fromEntries(
      Object.entries(layer).map(([p, f]) => {
        const gA = grads[vars[k++].name].dataSync() as Float32Array;
        const gB = grads[vars[k++].name].dataSync() as Float32Array;
        return [p, { A: Float32Array.from(gA), B: Float32Array.from(gB), r: f!.r, scale: f!.scale }];
      }),
    ),
  );
  const loss = value.dataSync()[0];
  tf.dispose([value, ...Object.values(grads), ...vars]);
  return { grads: out, loss };
}
