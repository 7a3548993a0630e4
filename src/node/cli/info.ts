/** `nlft info --model DIR|org/name[@revision]`: config, parameter count, quantized sizes, and the GPU adapter. */
import { describeAdapter } from '../../engine/gpu.ts';
import { formatBytes } from '../../engine/buffers.ts';
import { loadModelFolder } from '../../model/loader.ts';
import { baseModelBytes } from '../../model/size.ts';
import { parameterCount } from '../../model/weights.ts';
import { createNodeEngine } from '../engine.ts';
import { parse, required } from './args.ts';
import { modelSource } from './inputs.ts';

export async function infoCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, { model: { type: 'string' } });
  const dir = required(values, 'model');
  const { config: c, tokenizerJson } = await loadModelFolder(modelSource(dir, out));
  const engine = await createNodeEngine();
  try {
    const params = parameterCount(c);
    out(`model      ${dir}`);
    out(
      `shape      llama: ${c.numLayers} layers, hidden ${c.hiddenSize}, ffn ${c.intermediateSize}, ` +
        `heads ${c.numHeads} (kv ${c.numKvHeads}, dim ${c.headDim}), vocab ${c.vocabSize}`,
    );
    out(
      `rope       theta ${c.ropeTheta}${c.ropeScaling ? `, llama3 scaling x${c.ropeScaling.factor}` : ''}; ` +
        `max positions ${c.maxPositionEmbeddings}; ${c.tieWordEmbeddings ? 'tied' : 'untied'} embeddings`,
    );
    out(`parameters ${params.toLocaleString('en-US')} (${(params / 1e6).toFixed(2)} M)`);
    out(
      `size       f32 ${formatBytes(baseModelBytes(c, 'f32'))}, q8 ${formatBytes(baseModelBytes(c, 'q8'))}, q4 ${formatBytes(baseModelBytes(c, 'q4'))}`,
    );
    out(`tokenizer  ${tokenizerJson ? 'tokenizer.json present' : 'none (logprobs needs tokenizer.json)'}`);
    out(`adapter    ${describeAdapter(engine.ctx.adapter)}`);
  } finally {
    engine.destroy();
  }
}
