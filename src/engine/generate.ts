/**
 * Text generation on the GPU: the prompt runs as one forward pass that also fills a per-layer KV
 * cache; then every new token is one decode step (each layer on a single row, attention against
 * the cache, the lm-head on that row only: logits for one position, never tokens x vocab), read
 * back and sampled on the CPU — greedily (temperature 0) or from softmax(logits / temperature)
 * with a seeded generator, so a run is reproducible.
 */
import { NlftError } from '../errors.ts';
import { ropeTable } from '../model/rope.ts';
import { Rng } from '../util/rng.ts';
import type { TrackedBuffer } from './buffers.ts';
import type { GpuLlama, KvCache } from './llama.ts';
import { CommandRecording } from './recording.ts';

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 = greedy (argmax). */
  temperature: number;
  seed: number;
  /** Generation ends after any of these (e.g. the end-of-sequence ids); it is included in the output. */
  stopIds: readonly number[];
  /** Ends generation before the next token. */
  signal?: AbortSignal;
  /** Called with each new token as it is chosen. */
  onToken?: (id: number) => void;
  /** Called with the logits (V) each token is chosen from. */
  onLogits?: (logits: Float32Array) => void;
}

export interface Generated {
  ids: number[];
  /** Why it ended: a stop id, the token limit, the model's context length, or the signal. */
  reason: 'stop' | 'length' | 'context' | 'cancelled';
}

/** The id sampled from `logits`: argmax at temperature 0, else a draw from softmax(logits / temperature). */
export function sampleToken(logits: Float32Array, temperature: number, rng: Rng): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  if (temperature <= 0) return best;
  let sum = 0;
  const w = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) sum += w[i] = Math.exp((logits[i] - logits[best]) / temperature);
  let r = rng.next() * sum;
  for (let i = 0; i < w.length; i++) if ((r -= w[i]) < 0) return i;
  return best;
}

/** The decode step's buffer: u32 [token id, position] at 0, the position's RoPE row (D/2, 2) at 256. */
const ROPE_ROW_OFFSET = 256;

/**
 * One decode step recorded once (src/engine/recording.ts) and replayed for every token: the token
 * id and position go to the GPU in one write, then one submit runs every layer on that row
 * (kernels/matvec.wgsl for the projections and the lm-head, the cache append and attention), and
 * the logits (1,V) come back.
 */
async function recordDecodeStep(
  model: GpuLlama,
  cache: KvCache,
  logits: TrackedBuffer,
  live: TrackedBuffer[],
): Promise<(id: number, pos: number) => Promise<Float32Array>> {
  const b = model.buffers;
  const c = model.config;
  const D = c.headDim;
  const step = b.f32In(live, 'decode step (id, position, rope row)', (ROPE_ROW_OFFSET + D * 4) / 4);
  const view = (label: string, offset: number, size: number): TrackedBuffer => ({ buffer: step.buffer, label, offset, size });
  const acts = model.allocActs(1, 'shared', live);
  acts.cs = view('decode rope row (1,D/2,2)', ROPE_ROW_OFFSET, D * 4);
  acts.kv = { cache, step: view('decode step (id, position)', 0, 16) };
  const rec = new CommandRecording();
  // id -> xnF (1,C) -> logits (1,V)
  await model.encodeForward(rec.encoder, acts.kv.step!, acts, { rate: 0, seed: 0 }, live);
  await model.ops.matvec(rec.encoder, { x: acts.xnF, w: model.lmHead, out: logits });
  const data = new ArrayBuffer(ROPE_ROW_OFFSET + D * 4);
  return async (id, pos) => {
    new Uint32Array(data, 0, 2).set([id, pos]);
    new Float32Array(data, ROPE_ROW_OFFSET).set(ropeTable(model.invFreq, [pos]));
    b.device.queue.writeBuffer(step.buffer, 0, data);
    const enc = b.device.createCommandEncoder({ label: 'decode' });
    rec.replay(enc);
    return b.readF32(logits, c.vocabSize, enc);
  };
}

export async function generate(model: GpuLlama, promptIds: number[], o: GenerateOptions): Promise<Generated> {
  const c = model.config;
  if (promptIds.length === 0) throw new NlftError('generation needs at least one prompt token', 'empty-prompt');
  model.checkInput(promptIds, [], []);
  if (!(o.temperature >= 0) || !Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0)
    throw new NlftError(
      `generation needs temperature >= 0 and a whole number of new tokens (got ${o.temperature}, ${o.maxNewTokens})`,
      'usage',
    );
  const maxT = Math.min(c.maxPositionEmbeddings, promptIds.length + o.maxNewTokens);
  const b = model.buffers;
  const KVD = c.numKvHeads * c.headDim;
  const live: TrackedBuffer[] = [];
  const alloc = (label: string, floats: number) => b.f32In(live, label, floats);
  try {
    const cache: KvCache = { k: [], v: [], maxT };
    for (let i = 0; i < c.numLayers; i++) {
      cache.k.push(alloc(`kv cache k ${i} (maxT,KVH*D)`, maxT * KVD));
      cache.v.push(alloc(`kv cache v ${i} (maxT,KVH*D)`, maxT * KVD));
    }
    const lastRow = alloc('last hidden row (1,C)', c.hiddenSize);
    const logits = alloc('logits (1,V)', c.vocabSize);
    const rng = new Rng(o.seed);
    // The prompt: one pass writing cache rows 0..P-1, the logits of its last row.
    const P = promptIds.length;
    const prefill = model.allocActs(P, 'shared', live);
    prefill.kv = { cache, step: null };
    const enc = b.device.createCommandEncoder({ label: 'prefill' });
    await model.encodeForward(enc, b.uploadIn(live, 'prompt ids', Uint32Array.from(promptIds)), prefill, { rate: 0, seed: 0 }, live);
    enc.copyBufferToBuffer(prefill.xnF.buffer, (P - 1) * c.hiddenSize * 4, lastRow.buffer, 0, c.hiddenSize * 4);
    await model.ops.matvec(enc, { x: lastRow, w: model.lmHead, out: logits });
    let next = await b.readF32(logits, c.vocabSize, enc);
    const decode = await recordDecodeStep(model, cache, logits, live);
    const out: number[] = [];
    let pos = P;
    for (;;) {
      if (out.length >= o.maxNewTokens) return { ids: out, reason: 'length' };
      if (o.signal?.aborted) return { ids: out, reason: 'cancelled' };
      o.onLogits?.(next);
      const id = sampleToken(next, o.temperature, rng);
      out.push(id);
      o.onToken?.(id);
      if (o.stopIds.includes(id)) return { ids: out, reason: 'stop' };
      if (out.length >= o.maxNewTokens) return { ids: out, reason: 'length' };
      if (pos >= maxT) return { ids: out, reason: 'context' };
      next = await decode(id, pos);
      pos++;
    }
  } finally {
    for (const t of live) b.destroy(t);
  }
}
