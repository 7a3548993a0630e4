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
import type { ForwardActs, GpuLlama, KvCache } from './llama.ts';

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
    /** Run `ids` at positions start.. through the model; the logits of the last row. */
    const step = async (acts: ForwardActs, ids: number[], start: number): Promise<Float32Array> => {
      const enc = b.device.createCommandEncoder({ label: start === 0 ? 'prefill' : 'decode' });
      const idBuf = b.upload('ids', Uint32Array.from(ids));
      try {
        acts.kv = { cache, start };
        await model.encodeForward(enc, idBuf, acts, { rate: 0, seed: 0 }, live);
        enc.copyBufferToBuffer(acts.xnF.buffer, (ids.length - 1) * c.hiddenSize * 4, lastRow.buffer, 0, c.hiddenSize * 4);
        await model.ops.matmul(enc, { x: lastRow, w: model.lmHead, out: logits, T: 1 });
        b.device.queue.submit([enc.finish()]);
        return await b.readF32(logits, c.vocabSize);
      } finally {
        b.destroy(idBuf);
      }
    };
    const prefill = model.allocActs(promptIds.length, 'shared', live);
    let next = await step(prefill, promptIds, 0);
    const one = model.allocActs(1, 'shared', live);
    const out: number[] = [];
    let pos = promptIds.length;
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
      const cs = ropeTable(model.invFreq, [pos]);
      b.device.queue.writeBuffer(one.cs.buffer, 0, cs.buffer as ArrayBuffer, cs.byteOffset, cs.byteLength);
      next = await step(one, [id], pos);
      pos++;
    }
  } finally {
    for (const t of live) b.destroy(t);
  }
}
