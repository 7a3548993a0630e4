/**
 * `nlft info --model DIR|FILE.gguf|org/name[@revision]`: config, parameter count, quantized
 * sizes, a GGUF file's tensor types, and the GPU adapter.
 */
import { describeAdapter } from '../../engine/gpu.ts';
import { formatBytes } from '../../engine/buffers.ts';
import { type GgufHeader, readGgufHeader } from '../../model/gguf.ts';
import { loadModelFolder } from '../../model/loader.ts';
import { baseModelBytes } from '../../model/size.ts';
import { parameterCount } from '../../model/weights.ts';
import { createNodeEngine } from '../engine.ts';
import { parse, required } from './args.ts';
import { modelSource } from './inputs.ts';

export async function infoCommand(argv: string[], out: (line: string) => void): Promise<void> {
  const values = parse(argv, { model: { type: 'string' } });
  const dir = required(values, 'model');
  const source = modelSource(dir, out);
  const { config: c, tokenizerJson, files } = await loadModelFolder(source);
  const gguf = source.ggufFile === undefined ? null : await readGgufHeader(source, source.ggufFile);
  const engine = await createNodeEngine();
  try {
    const params = parameterCount(c);
    out(`model      ${dir}`);
    out(
      `shape      llama: ${c.numLayers} layers, hidden ${c.hiddenSize}, ffn ${c.intermediateSize}, ` +
        `heads ${c.numHeads} (kv ${c.numKvHeads}, dim ${c.headDim}), vocab ${c.vocabSize}`,
    );
    out(
      `rope       theta ${c.ropeTheta}${c.ropeScaling ? `, llama3 scaling x${c.ropeScaling.factor}` : ''}` +
        `${c.ropeFreqFactors ? `, per-frequency factors ${Math.min(...c.ropeFreqFactors)}–${Math.max(...c.ropeFreqFactors)} (rope_freqs)` : ''}; ` +
        `max positions ${c.maxPositionEmbeddings}; ${c.tieWordEmbeddings ? 'tied' : 'untied'} embeddings`,
    );
    out(`parameters ${params.toLocaleString('en-US')} (${(params / 1e6).toFixed(2)} M)`);
    out(
      `size       f32 ${formatBytes(baseModelBytes(c, 'f32'))}, q8 ${formatBytes(baseModelBytes(c, 'q8'))}, q4 ${formatBytes(baseModelBytes(c, 'q4'))}`,
    );
    if (gguf !== null) out(`gguf       v${gguf.version}, tensor types ${ggufTypeMix(gguf)}`);
    const fromGguf = gguf !== null && !files.includes('tokenizer.json');
    out(
      `tokenizer  ${fromGguf ? 'from the GGUF file (tokenizer.ggml.*)' : tokenizerJson ? 'tokenizer.json present' : 'none (logprobs needs tokenizer.json)'}`,
    );
    out(`adapter    ${describeAdapter(engine.ctx.adapter)}`);
  } finally {
    engine.destroy();
  }
}

/** "Q8_0 ×169, F32 ×61": how many tensors of each type, most first. */
function ggufTypeMix(header: GgufHeader): string {
  const counts = new Map<string, number>();
  for (const t of header.tensors.values()) counts.set(t.type, (counts.get(t.type) ?? 0) + 1);
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([type, n]) => `${type} ×${n}`)
    .join(', ');
}
