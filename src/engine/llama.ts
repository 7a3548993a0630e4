/**
 * The Llama model on the GPU: frozen quantized base weights, LoRA adapters in one flat buffer
 * (src/engine/lora-params.ts), and the model-level forward and backward side by side (llm.c's
 * gpt2_forward / gpt2_backward): `encodeForward` is embedding -> `layerForward` per layer -> final
 * norm, `encodeScores` the fused lm-head over the scored rows, and `encodeBackward` their reverse
 * (fused cross-entropy backward -> final norm -> `layerBackward` per layer, last to first). The
 * layer pairs live in decoder-layer.ts, lora-linear.ts and lm-head.ts; what a pass allocates, in
 * activations.ts. `score` is the no-grad forward (one set of activations reused by every layer);
 * training (src/engine/train-pass.ts) runs the same forward keeping each layer's activations.
 *
 * Weights stay resident; activations are allocated per call for the sequence length and freed
 * afterwards, so the buffer manager's peak is what one pass really needs.
 */
import { NlftError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { quantize, type QuantFormat } from '../model/quant.ts';
import { ropeInvFreq } from '../model/rope.ts';
import { checkQuantizable, projectionShapes, tableFormat } from '../model/size.ts';
import type { LoraSet } from '../model/lora.ts';
import { PROJECTIONS, type LlamaWeights, type Projection } from '../model/weights.ts';
import { type ActsMode, allocForwardActs, allocLayerGrads, type ForwardActs } from './activations.ts';
import type { BufferManager, TrackedBuffer } from './buffers.ts';
import { type GpuLayer, layerBackward, layerForward } from './decoder-layer.ts';
import { type LmHeadOut, type LmHeadTrainOut, lmHeadBackward, lmHeadForward, lmHeadForwardGrad, type ScoredRows } from './lm-head.ts';
import type { DropoutSpec, PassContext } from './lora-linear.ts';
import { LoraParams } from './lora-params.ts';
import type { GpuWeight, Ops } from './ops.ts';
import { groupByTokens, packing } from './packing.ts';

export type { ForwardActs, KvCache } from './activations.ts';

/** Scores of chosen positions: log p(target), log(1 - p(target)) and the logsumexp of the logits. */
export interface PositionScores {
  logp: Float32Array;
  log1mq: Float32Array;
  lse: Float32Array;
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

  /** Upload (quantizing, or as the file stored them: `storedBlocks`) the base weights and optional LoRA factors. */
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
      // Blocks the file held in this very format (a GGUF's Q8_0 / Q4_0) go up as they are.
      const stored = weights.storedBlocks?.get(w);
      const q = stored?.format === format ? stored : quantize(w, rows, cols, format);
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

  /** Allocate activations for T tokens (see `allocForwardActs`), registered in `live` for the caller to free. */
  allocActs(
    T: number,
    mode: ActsMode,
    live: TrackedBuffer[],
    lengths?: readonly number[],
    tables?: { cs: TrackedBuffer; seg: TrackedBuffer },
  ): ForwardActs {
    return allocForwardActs(this, T, mode, live, lengths, tables);
  }

  /**
   * The context the layer functions of one pass share. Its dropout seed buffer is made by the
   * pass's first call (registered in `live`) unless the pass brought it, and shared by its forward
   * and backward.
   */
  private pass(enc: GPUCommandEncoder, acts: ForwardActs, dropout: DropoutSpec, live: TrackedBuffer[]): PassContext {
    if (acts.seeds === undefined) {
      const seeds = dropout.seeds ?? acts.lengths.map(() => dropout.seed);
      acts.seeds = dropout.rate > 0 && this.lora ? this.ops.passSeed(seeds, acts.lengths, live) : null;
    }
    return { enc, ops: this.ops, config: this.config, lora: this.lora, dropout, seed: acts.seeds, acts };
  }

  /** Record the forward pass into `enc`: ids (T) -> embedding -> layers -> final norm xnF (T,C). */
  async encodeForward(
    enc: GPUCommandEncoder,
    ids: TrackedBuffer,
    acts: ForwardActs,
    dropout: DropoutSpec,
    live: TrackedBuffer[],
  ): Promise<void> {
    const c = this.config;
    const T = acts.T;
    if (dropout.rate > 0 && this.lora && !acts.xd) {
      acts.xd = this.buffers.create('lora dropout (T,in)', T * Math.max(...this.lora.entries.map((e) => e.inF)) * 4);
      live.push(acts.xd);
    }
    const ctx = this.pass(enc, acts, dropout, live);
    // ids (T) -> x (T,C)
    await this.ops.embedding(enc, { ids, table: this.embed, out: acts.layers[0].xIn, T });
    // x_in (T,C) -> x_out (T,C)
    for (let i = 0; i < this.layers.length; i++) await layerForward(ctx, i, this.layers[i]);
    // x_out (T,C) -> xnF (T,C), rstdF (T)
    await this.ops.rmsnorm(enc, {
      x: acts.xOut,
      w: this.finalNorm,
      out: acts.xnF,
      rstd: acts.rstdF,
      T,
      C: c.hiddenSize,
      eps: c.rmsNormEps,
    });
  }

  /**
   * Record the backward pass of `encodeForward` + `encodeTrainScores` into `enc`, for the loss
   * coefficients `coef` (R) of the scored rows (train-pass.ts `lossCoefficients`): the lm-head's
   * rows' gradient (coef times the unit gradient its forward made) -> final norm -> layers, last
   * to first, adding the LoRA gradients into `lora.grads`. The embedding is frozen, so the pass
   * stops at the first layer's input. Scratch buffers are registered in `live`.
   */
  async encodeBackward(
    enc: GPUCommandEncoder,
    acts: ForwardActs,
    scored: ScoredRows,
    head: LmHeadTrainOut,
    coef: TrackedBuffer,
    dropout: DropoutSpec,
    live: TrackedBuffer[],
  ): Promise<void> {
    const c = this.config;
    const T = acts.T;
    if (!this.lora) throw new NlftError('training needs LoRA adapters on the model', 'no-lora');
    // coef (R) -> dxn (T,C)
    const dxn = await lmHeadBackward(this.ops, enc, this.lmHead, T, scored, head, coef, live);
    const g = allocLayerGrads(this.buffers, c, this.lora, T, live);
    enc.clearBuffer(g.dx.buffer);
    // dxn -> dx (T,C) = d x_out of the last layer
    await this.ops.rmsnormBackward(enc, { x: acts.xOut, w: this.finalNorm, rstd: acts.rstdF, dy: dxn, dx: g.dx, T, C: c.hiddenSize });
    const ctx = this.pass(enc, acts, dropout, live);
    // d x_out -> d x_in
    for (let i = this.layers.length - 1; i >= 0; i--) await layerBackward(ctx, i, this.layers[i], g);
  }

  /**
   * Record the fused lm-head over the scored rows of the final hidden states; returns the (R)
   * outputs lse, logp, log1mq (registered in `live`).
   */
  encodeScores(enc: GPUCommandEncoder, acts: ForwardActs, scored: ScoredRows, live: TrackedBuffer[]): Promise<LmHeadOut> {
    return lmHeadForward(this.ops, enc, this.lmHead, acts.xnF, scored, live);
  }

  /**
   * `encodeScores` for a training pass: also each scored row's unit gradient, which the backward
   * pass scales by the loss coefficients (lm-head.ts `lmHeadForwardGrad`).
   */
  encodeTrainScores(enc: GPUCommandEncoder, acts: ForwardActs, scored: ScoredRows, live: TrackedBuffer[]): Promise<LmHeadTrainOut> {
    return lmHeadForwardGrad(this.ops, enc, this.lmHead, acts.xnF, acts.T, scored, live);
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
        const enc = b.device.createCommandEncoder({ label: 'no-grad forward' });
        await this.encodeForward(enc, up('ids', Uint32Array.from(seqs.flatMap((q) => q.ids))), acts, { rate: 0, seed: 0 }, live);
        const scored = {
          rows: up('rows', Uint32Array.from(rows)),
          targets: up('targets', Uint32Array.from(seqs.flatMap((q) => q.targets))),
          R,
        };
        const out = await this.encodeScores(enc, acts, scored, live);
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
