/** Bytes the base weights take on the GPU for a given linear-weight format. */
import { NlftError } from '../errors.ts';
import type { LlamaConfig } from './config.ts';
import { quantizedBytes, type QuantFormat } from './quant.ts';

/** The embedding / lm-head table's format for a linear-weight format (q4 models keep it at 8 bits). */
export function tableFormat(quant: QuantFormat): QuantFormat {
  return quant === 'f32' ? 'f32' : 'q8';
}

/** Shapes [out, in] of one layer's seven projections. */
export function projectionShapes(
  c: LlamaConfig,
): Record<'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj', [number, number]> {
  const H = c.numHeads * c.headDim;
  const KV = c.numKvHeads * c.headDim;
  return {
    q_proj: [H, c.hiddenSize],
    k_proj: [KV, c.hiddenSize],
    v_proj: [KV, c.hiddenSize],
    o_proj: [c.hiddenSize, H],
    gate_proj: [c.intermediateSize, c.hiddenSize],
    up_proj: [c.intermediateSize, c.hiddenSize],
    down_proj: [c.hiddenSize, c.intermediateSize],
  };
}

/** GPU bytes of the frozen base model in `quant` (norms f32). */
export function baseModelBytes(c: LlamaConfig, quant: QuantFormat): number {
  const table = quantizedBytes(c.vocabSize, c.hiddenSize, tableFormat(quant)) * (c.tieWordEmbeddings ? 1 : 2);
  const layer = Object.values(projectionShapes(c)).reduce((s, [n, k]) => s + quantizedBytes(n, k, quant), 0) + 2 * c.hiddenSize * 4;
  return table + c.numLayers * layer + c.hiddenSize * 4;
}

/** Throws a clear error when the model's dimensions do not fit the weight format's blocks. */
export function checkQuantizable(c: LlamaConfig, quant: QuantFormat): void {
  const multiple = quant === 'f32' ? 4 : 32;
  const dims: Array<[string, number]> = [
    ['hidden_size', c.hiddenSize],
    ['intermediate_size', c.intermediateSize],
    ['num_attention_heads * head_dim', c.numHeads * c.headDim],
  ];
  if (c.headDim % 4 !== 0)
    throw new NlftError(
      `config.json (head_dim): ${c.headDim} is not a multiple of 4, which the attention kernel needs`,
      'unsupported-shape',
    );
  for (const [name, v] of dims) {
    if (v % multiple !== 0) {
      throw new NlftError(
        `config.json (${name}): ${v} is not a multiple of ${multiple}, which ${quant === 'f32' ? 'the f32 kernels' : `${quant} blocks`} need`,
        'unsupported-shape',
      );
    }
  }
}
