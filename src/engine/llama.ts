/**
 * The Llama model on the GPU: frozen quantized base weights, LoRA adapters in one flat buffer
 * (src/engine/lora-params.ts), the forward pass, and the fused lm-head that scores chosen positions
 * without a tokens x vocab buffer. `score` is the no-grad forward (one set of activations reused
 * by every layer); training (src/engine/train-pass.ts) runs the same forward keeping each layer's
 * activations for the backward pass.
 *
 * Weights stay resident; activations are allocated per call for the sequence length and freed
 * afterwards, so the buffer manager's peak is what one pass really needs.
 */
import { NlftError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { quantize, type QuantFormat } from '../model/quant.ts';
import { ropeInvFreq, ropeTable } from '../model/rope.ts';
import { checkQuantizable, projectionShapes, tableFormat } from '../model/size.ts';
import { PROJECTIONS, type LlamaWeights, type Projection } from '../model/weights.ts';
import type { BufferManager, TrackedBuffer } from './buffers.ts';
import type { LoraSet } from '../model/lora.ts';
import { LoraParams } from './lora-params.ts';
import type { GpuWeight, LmheadScratch, Ops } from './ops.ts';
import { groupByTokens, packing } from './packing.ts';

/** One layer's frozen weights on the GPU. */
export interface GpuLayer {
  inputNorm: TrackedBuffer;
  postNorm: TrackedBuffer;
  proj: Record<Projection, GpuWeight>;
}

/** Scores of chosen positions: log p(target), log(1 - p(target)) and the logsumexp of the logits. */
export interface PositionScores {
  logp: Float32Array;
  log1mq: Float32Array;
  lse: Float32Array;
}

/** One layer's activations. In a no-grad pass every layer shares one set; training keeps one per layer. */
export interface LayerActs {
  xIn: TrackedBuffer; //   (T,C) residual stream entering the layer
  xn1: TrackedBuffer; //   (T,C) input_layernorm output
  rstd1: TrackedBuffer; // (T)
  q: TrackedBuffer; //     (T,H*D) after rope
  k: TrackedBuffer; //     (T,KVH*D) after rope
  v: TrackedBuffer; //     (T,KVH*D)
  att: TrackedBuffer; //   (T,H*D) attention output (o_proj input)
  attLse: TrackedBuffer; // (H,T)
  xMid: TrackedBuffer; //  (T,C) residual after attention
  xn2: TrackedBuffer; //   (T,C) post_attention_layernorm output
  rstd2: TrackedBuffer; // (T)
  gate: TrackedBuffer; //  (T,F)
  up: TrackedBuffer; //    (T,F)
  hm: TrackedBuffer; //    (T,F) silu(gate)*up (down_proj input)
  /** u = dropout(x) A^T (T,r) per adapted projection, kept for dB. */
  loraU: Partial<Record<Projection, TrackedBuffer>>;
}

/** One sequence to score: positions `rows[i]` against `targets[i]`; `hidden` also returns their final hidden states. */
export interface ScoreRequest {
  ids: number[];
  rows: number[];
  targets: number[];
  hidden?: boolean;
}

/** A scored sequence; `hidden` (R, C) when asked for. */
export type ScoredSequence = PositionScores & { hidden?: Float32Array };

/** How a forward pass keeps activations (see `GpuLlama.allocActs`). */
export type ActsMode = 'shared' | 'per-layer' | 'checkpointed';

/** Everything a forward pass over T tokens wrote. */
export interface ForwardActs {
  T: number;
  mode: ActsMode;
  layers: LayerActs[];
  /** Residual stream after the last layer (T,C), the final norm's output (T,C) and its rstd (T). */
  xOut: TrackedBuffer;
  xnF: TrackedBuffer;
  rstdF: TrackedBuffer;
  /** RoPE table, a row per token (T, D/2, 2), and each token's sequence start (T) u32 (see packing.ts). */
  cs: TrackedBuffer;
  seg: TrackedBuffer;
  /** Scratch: dropout(x) for LoRA inputs (T, max in-features), when dropout is on. */
  xd: TrackedBuffer | null;
  /**
   * Generation: the per-layer KV cache these T tokens write at rows `start`..`start`+T-1. From row
   * 0 (the prompt) attention runs over the T rows themselves; later (one token) against the cache.
   */
  kv?: { cache: KvCache; start: number };
}

/** Keys and values after RoPE of every layer, (maxT, KVH*D) each, for generation. */
export interface KvCache {
  k: TrackedBuffer[];
  v: TrackedBuffer[];
  maxT: number;
}

/** LoRA dropout of a pass: rate and the seed the masks are hashed from (0 rate = off). */
export interface DropoutSpec {
  rate: number;
  seed: number;
}

/** The dropout seed of one (layer, projection) input, derived from the pass seed. */
export function dropoutSeed(seed: number, layer: number, proj: Projection): number {
  let h = (seed ^ Math.imul(layer + 1, 0x9e3779b1) ^ Math.imul(PROJECTIONS.indexOf(proj) + 1, 0x85ebca77)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}

export class GpuLlama {
  private constructor(
    readonly config: LlamaConfig,
    readonly quant: QuantFormat,
    readonly ops: Ops,
    readonly buffers: BufferManager,
    readonly embed: GpuWeight,
    readonly lmHead: GpuWeight,
    readonly layers: GpuLayer[],
    readonly finalNorm: TrackedBuffer,
    readonly invFreq: Float64Array,
    /** The adapters, or null for the bare base model. */
    public lora: LoraParams | null,
  ) {}

  /** Upload (quantizing) the base weights and optional LoRA factors. */
  static create(ops: Ops, weights: LlamaWeights, quant: QuantFormat, lora?: LoraSet): GpuLlama {
    const b = ops.buffers;
    const c = weights.config;
    checkQuantizable(c, quant);
    // On failure part-way (a buffer over the device limit, bad adapters), free what was made.
    const made: TrackedBuffer[] = [];
    const keep = (t: TrackedBuffer) => {
      made.push(t);
      return t;
    };
    const upload = (name: string, w: Float32Array, rows: number, cols: number, format: QuantFormat): GpuWeight => {
      const q = quantize(w, rows, cols, format);
      return {
        format,
        rows,
        cols,
        data: keep(b.upload(name, q.data)),
        scales: q.scales ? keep(b.upload(`${name}.scales`, q.scales)) : null,
      };
    };
    try {
      const tf = tableFormat(quant);
      const embed = upload('embed_tokens', weights.embed, c.vocabSize, c.hiddenSize, tf);
      const lmHead = weights.lmHead ? upload('lm_head', weights.lmHead, c.vocabSize, c.hiddenSize, tf) : embed;
      const shapes = projectionShapes(c);
      const layers = weights.layers.map((lw, i): GpuLayer => {
        const src: Record<Projection, Float32Array> = {
          q_proj: lw.q,
          k_proj: lw.k,
          v_proj: lw.v,
          o_proj: lw.o,
          gate_proj: lw.gate,
          up_proj: lw.up,
          down_proj: lw.down,
        };
        const proj = {} as Record<Projection, GpuWeight>;
        for (const p of PROJECTIONS) proj[p] = upload(`layers.${i}.${p}`, src[p], shapes[p][0], shapes[p][1], quant);
        return {
          inputNorm: keep(b.upload(`layers.${i}.input_layernorm`, lw.inputNorm)),
          postNorm: keep(b.upload(`layers.${i}.post_attention_layernorm`, lw.postNorm)),
          proj,
        };
      });
      const finalNorm = keep(b.upload('norm', weights.finalNorm));
      const params = lora ? LoraParams.create(b, c, lora) : null;
      return new GpuLlama(c, quant, ops, b, embed, lmHead, layers, finalNorm, ropeInvFreq(c), params);
    } catch (e) {
      for (const t of made) b.destroy(t);
      throw e;
    }
  }

  /** Replace the adapters (null: none). */
  setLora(lora: LoraSet | null): void {
    const next = lora ? LoraParams.create(this.buffers, this.config, lora) : null;
    this.lora?.destroy();
    this.lora = next;
  }

  /** Free the model's GPU buffers. */
  destroy(): void {
    const seen = new Set<TrackedBuffer>();
    const drop = (t: TrackedBuffer | null) => {
      if (t && !seen.has(t)) {
        seen.add(t);
        this.buffers.destroy(t);
      }
    };
    const dropW = (w: GpuWeight) => {
      drop(w.data);
      drop(w.scales);
    };
    dropW(this.embed);
    dropW(this.lmHead);
    drop(this.finalNorm);
    for (const l of this.layers) {
      drop(l.inputNorm);
      drop(l.postNorm);
      Object.values(l.proj).forEach(dropW);
    }
    this.lora?.destroy();
  }

  /** Validate a scoring request; messages name the bad id or position. */
  checkInput(ids: number[], rows: number[], targets: number[]): void {
    const c = this.config;
    const T = ids.length;
    if (T === 0) throw new NlftError('cannot run the model on an empty token sequence', 'empty-input');
    if (T > c.maxPositionEmbeddings)
      throw new NlftError(
        `sequence of ${T} tokens is longer than the model's max_position_embeddings (${c.maxPositionEmbeddings})`,
        'too-long',
      );
    if (rows.length !== targets.length) throw new NlftError(`${rows.length} positions but ${targets.length} targets`, 'bad-position');
    for (const [what, list] of [
      ['token id', ids],
      ['target id', targets],
    ] as const) {
      for (const id of list)
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize)
          throw new NlftError(`${what} ${id} is outside the vocabulary [0, ${c.vocabSize})`, 'bad-token');
    }
    for (const r of rows)
      if (!Number.isInteger(r) || r < 0 || r >= T) throw new NlftError(`position ${r} is outside the sequence [0, ${T})`, 'bad-position');
  }

  /**
   * Allocate activations for T tokens, registering every buffer in `live` so the caller frees them:
   * - 'shared': one set reused by every layer (no-grad scoring);
   * - 'per-layer': every layer keeps its own activations for the backward pass;
   * - 'checkpointed': every layer keeps only its input; the rest is one shared set that the
   *   backward pass refills by recomputing each layer's forward (less memory, ~1/3 more compute).
   * `lengths`: the sequences packed in the T tokens (one by default).
   */
  allocActs(T: number, mode: ActsMode, live: TrackedBuffer[], lengths: readonly number[] = [T]): ForwardActs {
    const c = this.config;
    const b = this.buffers;
    const alloc = (label: string, floats: number) => b.f32In(live, label, floats);
    const [C, F, HD, KVD] = [c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
    const shared = mode === 'shared';
    const layerSet = (i: number, xIn: TrackedBuffer): LayerActs => {
      const loraU: LayerActs['loraU'] = {};
      for (const e of this.lora?.entries ?? [])
        if (e.layer === i || mode !== 'per-layer') loraU[e.proj] ??= alloc(`lora u ${i}.${e.proj} (T,r)`, T * e.r);
      const xn1 = alloc('xn1 (T,C)', T * C);
      const rstd1 = alloc('rstd1 (T)', T);
      return {
        xIn,
        xn1,
        rstd1,
        q: alloc('q (T,H*D)', T * HD),
        k: alloc('k (T,KVH*D)', T * KVD),
        v: alloc('v (T,KVH*D)', T * KVD),
        att: alloc('attention (T,H*D)', T * HD),
        attLse: alloc('attention lse (H,T)', c.numHeads * T),
        // No-grad: the residual is updated in place and one normed buffer serves both norms.
        xMid: shared ? xIn : alloc('residual mid (T,C)', T * C),
        xn2: shared ? xn1 : alloc('xn2 (T,C)', T * C),
        rstd2: shared ? rstd1 : alloc('rstd2 (T)', T),
        gate: alloc('gate (T,F)', T * F),
        up: alloc('up (T,F)', T * F),
        hm: alloc('swiglu (T,F)', T * F),
        loraU,
      };
    };
    const inputs = [alloc('residual (T,C)', T * C)];
    if (!shared) for (let i = 1; i <= c.numLayers; i++) inputs.push(alloc('residual (T,C)', T * C));
    const first = layerSet(0, inputs[0]);
    const layers = [first];
    for (let i = 1; i < c.numLayers; i++) {
      if (mode === 'per-layer') layers.push(layerSet(i, inputs[i]));
      else layers.push({ ...first, xIn: shared ? first.xIn : inputs[i] });
    }
    const pack = packing(lengths);
    if (pack.T !== T) throw new RangeError(`allocActs: packed lengths sum to ${pack.T}, not T=${T}`);
    const cs = b.upload('rope table (T,D/2,2)', ropeTable(this.invFreq, pack.positions));
    const seg = b.upload('sequence starts (T)', pack.seg);
    live.push(cs, seg);
    return {
      T,
      mode,
      layers,
      xOut: shared ? first.xIn : inputs[c.numLayers],
      xnF: shared ? first.xn1 : alloc('final norm (T,C)', T * C),
      rstdF: shared ? first.rstd1 : alloc('final rstd (T)', T),
      cs,
      seg,
      xd: null,
    };
  }

  /** Record the forward pass (embedding → layers → final norm) into `enc`. */
  async encodeForward(
    enc: GPUCommandEncoder,
    ids: TrackedBuffer,
    acts: ForwardActs,
    dropout: DropoutSpec,
    live: TrackedBuffer[],
  ): Promise<void> {
    const c = this.config;
    if (dropout.rate > 0 && this.lora && !acts.xd) {
      acts.xd = this.buffers.create('lora dropout (T,in)', acts.T * Math.max(...this.lora.entries.map((e) => e.inF)) * 4);
      live.push(acts.xd);
    }
    await this.ops.embedding(enc, { ids, table: this.embed, out: acts.layers[0].xIn, T: acts.T });
    for (let i = 0; i < this.layers.length; i++) await this.encodeLayer(enc, i, acts, dropout);
    await this.ops.rmsnorm(enc, {
      x: acts.xOut,
      w: this.finalNorm,
      out: acts.xnF,
      rstd: acts.rstdF,
      T: acts.T,
      C: c.hiddenSize,
      eps: c.rmsNormEps,
    });
  }

  /**
   * Record layer i's forward from its input `acts.layers[i].xIn` into its activations and the
   * next layer's input (the backward pass of a checkpointed forward calls this again per layer).
   */
  async encodeLayer(enc: GPUCommandEncoder, i: number, acts: ForwardActs, dropout: DropoutSpec): Promise<void> {
    const { ops, config: c } = this;
    const { T, cs, seg } = acts;
    const [C, F, D] = [c.hiddenSize, c.intermediateSize, c.headDim];
    const linear = async (p: Projection, inp: TrackedBuffer, out: TrackedBuffer, beta: 0 | 1, u: TrackedBuffer | undefined) => {
      await ops.matmul(enc, { x: inp, w: this.layers[i].proj[p], out, T, beta });
      const e = this.lora?.entry(i, p);
      if (!e || !u) return;
      const { A, B } = this.lora!.weights(e);
      let x = inp;
      if (dropout.rate > 0) {
        await ops.dropout(enc, { x: inp, out: acts.xd!, n: T * e.inF, seed: dropoutSeed(dropout.seed, i, p), rate: dropout.rate });
        x = acts.xd!;
      }
      await ops.matmul(enc, { x, w: A, out: u, T });
      await ops.matmul(enc, { x: u, w: B, out, T, alpha: e.scale, beta: 1 });
    };
    const L = this.layers[i];
    const a = acts.layers[i];
    await ops.rmsnorm(enc, { x: a.xIn, w: L.inputNorm, out: a.xn1, rstd: a.rstd1, T, C, eps: c.rmsNormEps });
    await linear('q_proj', a.xn1, a.q, 0, a.loraU.q_proj);
    await linear('k_proj', a.xn1, a.k, 0, a.loraU.k_proj);
    await linear('v_proj', a.xn1, a.v, 0, a.loraU.v_proj);
    await ops.rope(enc, { x: a.q, cs, T, nHeads: c.numHeads, D });
    await ops.rope(enc, { x: a.k, cs, T, nHeads: c.numKvHeads, D });
    const kv = acts.kv;
    if (kv) {
      const row = c.numKvHeads * D * 4;
      enc.copyBufferToBuffer(a.k.buffer, 0, kv.cache.k[i].buffer, kv.start * row, T * row);
      enc.copyBufferToBuffer(a.v.buffer, 0, kv.cache.v[i].buffer, kv.start * row, T * row);
    }
    if (kv && kv.start > 0)
      await ops.attentionDecode(enc, {
        q: a.q,
        kc: kv.cache.k[i],
        vc: kv.cache.v[i],
        out: a.att,
        T: kv.start + 1,
        H: c.numHeads,
        KVH: c.numKvHeads,
        D,
      });
    else await ops.attention(enc, { q: a.q, k: a.k, v: a.v, out: a.att, lse: a.attLse, seg, T, H: c.numHeads, KVH: c.numKvHeads, D });
    if (a.xMid !== a.xIn) enc.copyBufferToBuffer(a.xIn.buffer, 0, a.xMid.buffer, 0, a.xIn.size);
    await linear('o_proj', a.att, a.xMid, 1, a.loraU.o_proj);
    await ops.rmsnorm(enc, { x: a.xMid, w: L.postNorm, out: a.xn2, rstd: a.rstd2, T, C, eps: c.rmsNormEps });
    await linear('gate_proj', a.xn2, a.gate, 0, a.loraU.gate_proj);
    await linear('up_proj', a.xn2, a.up, 0, a.loraU.up_proj);
    await ops.swiglu(enc, { gate: a.gate, up: a.up, h: a.hm, n: T * F });
    const xOut = i + 1 < this.layers.length ? acts.layers[i + 1].xIn : acts.xOut;
    if (xOut !== a.xMid) enc.copyBufferToBuffer(a.xMid.buffer, 0, xOut.buffer, 0, a.xMid.size);
    await linear('down_proj', a.hm, xOut, 1, a.loraU.down_proj);
  }

  /**
   * Record the fused lm-head over `rows` of the final hidden states; returns the (R) outputs
   * lse, logp, log1mq and the scratch the backward pass reuses (all registered in `live`).
   */
  async encodeScores(
    enc: GPUCommandEncoder,
    acts: ForwardActs,
    rows: TrackedBuffer,
    targets: TrackedBuffer,
    R: number,
    live: TrackedBuffer[],
  ): Promise<{ lse: TrackedBuffer; logp: TrackedBuffer; log1mq: TrackedBuffer; scratch: LmheadScratch }> {
    const b = this.buffers;
    const mk = (label: string) => b.f32In(live, label, R);
    const out = { lse: mk('lse (R)'), logp: mk('logp (R)'), log1mq: mk('log(1-q) (R)') };
    const scratch = this.ops.lmheadScratch(R, this.config.vocabSize);
    live.push(scratch.part, scratch.tlogit);
    await this.ops.lmhead(enc, { h: acts.xnF, rows, targets, R, w: this.lmHead, ...out, scratch });
    return { ...out, scratch };
  }

  /**
   * No-grad forward over `ids`; for each i, scores position `rows[i]` against `targets[i]`
   * (the id that position predicts). With `hidden`, also the final normed hidden states of the
   * scored rows (R, C) (the saliency clustering's `hb`).
   */
  async score(ids: number[], rows: number[], targets: number[], opts: { hidden?: boolean } = {}): Promise<ScoredSequence> {
    return (await this.scoreBatch([{ ids, rows, targets, hidden: opts.hidden }]))[0];
  }

  /**
   * `score` for several sequences in one packed pass (packing.ts): the weights are read once for
   * the batch and each sequence's results equal a pass of its own. The caller bounds the batch's
   * tokens (the activations grow with them; see `scoreBatchTokens`).
   */
  async scoreBatch(seqs: readonly ScoreRequest[]): Promise<ScoredSequence[]> {
    seqs.forEach((q) => this.checkInput(q.ids, q.rows, q.targets));
    const C = this.config.hiddenSize;
    const { T, starts } = packing(seqs.map((q) => q.ids.length));
    const rows = seqs.flatMap((q, i) => q.rows.map((r) => starts[i] + r));
    const R = rows.length;
    const b = this.buffers;
    const live: TrackedBuffer[] = [];
    const up = (label: string, data: Uint32Array) => b.uploadIn(live, label, data);
    try {
      let [logp, log1mq, lse, all]: Float32Array[] = [new Float32Array(0), new Float32Array(0), new Float32Array(0), new Float32Array(0)];
      if (R > 0) {
        const acts = this.allocActs(
          T,
          'shared',
          live,
          seqs.map((q) => q.ids.length),
        );
        const enc = b.device.createCommandEncoder({ label: 'forward' });
        await this.encodeForward(enc, up('ids', Uint32Array.from(seqs.flatMap((q) => q.ids))), acts, { rate: 0, seed: 0 }, live);
        const out = await this.encodeScores(
          enc,
          acts,
          up('rows', Uint32Array.from(rows)),
          up('targets', Uint32Array.from(seqs.flatMap((q) => q.targets))),
          R,
          live,
        );
        b.device.queue.submit([enc.finish()]);
        [logp, log1mq, lse] = await Promise.all([b.readF32(out.logp, R), b.readF32(out.log1mq, R), b.readF32(out.lse, R)]);
        if (seqs.some((q) => q.hidden)) all = await b.readF32(acts.xnF, T * C);
      }
      let at = 0;
      return seqs.map((q, i) => {
        const n = q.rows.length;
        const res: ScoredSequence = { logp: logp.slice(at, at + n), log1mq: log1mq.slice(at, at + n), lse: lse.slice(at, at + n) };
        if (q.hidden) {
          res.hidden = new Float32Array(n * C);
          q.rows.forEach((r, j) => res.hidden!.set(all.subarray((starts[i] + r) * C, (starts[i] + r + 1) * C), j * C));
        }
        at += n;
        return res;
      });
    } finally {
      for (const t of live) b.destroy(t);
    }
  }

  /**
   * Score many sequences in packed passes of at most `maxTokens` tokens each (in order; a longer
   * sequence runs alone). `onProgress` gets the number of sequences done after each pass.
   */
  async scoreAll(seqs: readonly ScoreRequest[], maxTokens: number, onProgress?: (done: number) => void): Promise<ScoredSequence[]> {
    const out: ScoredSequence[] = [];
    for (const group of groupByTokens(seqs, (q) => q.ids.length, maxTokens)) {
      out.push(...(await this.scoreBatch(group)));
      onProgress?.(out.length);
    }
    return out;
  }

  /** log p(y_t | prefix) for every response token, prompt and response tokenized separately. */
  async responseLogProbs(promptIds: number[], responseIds: number[]): Promise<Float32Array> {
    if (promptIds.length === 0)
      throw new NlftError('the prompt has no tokens: at least one token must precede the response', 'empty-prompt');
    if (responseIds.length === 0) return new Float32Array(0);
    // The last response token predicts nothing we score, so it is not fed.
    const ids = [...promptIds, ...responseIds.slice(0, -1)];
    const rows = responseIds.map((_, i) => promptIds.length + i - 1);
    return (await this.score(ids, rows, responseIds)).logp;
  }
}
