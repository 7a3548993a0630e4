/**
 * The Llama forward pass on the GPU: frozen quantized base weights, optional LoRA adapters,
 * and the fused lm-head that scores chosen positions without a tokens x vocab buffer.
 *
 * Weights stay resident; activations are allocated per call for the sequence length and
 * freed afterwards, so the buffer manager's peak is what one pass really needs.
 */
import { NlftError } from '../errors.ts';
import type { LlamaConfig } from '../model/config.ts';
import { quantize, type QuantFormat } from '../model/quant.ts';
import { ropeInvFreq, ropeTable } from '../model/rope.ts';
import { checkQuantizable, projectionShapes, tableFormat } from '../model/size.ts';
import type { LlamaWeights, Projection } from '../model/weights.ts';
import type { BufferManager, TrackedBuffer } from './buffers.ts';
import type { GpuWeight, Ops } from './ops.ts';

/** LoRA factors of one projection: y += scale * (x A^T) B^T, A (r,in), B (out,r). */
export interface LoraFactors {
  A: Float32Array;
  B: Float32Array;
  r: number;
  scale: number;
}
/** Per layer, the adapted projections. */
export type LoraSet = Array<Partial<Record<Projection, LoraFactors>>>;

interface GpuLora {
  A: GpuWeight;
  B: GpuWeight;
  r: number;
  scale: number;
}

interface GpuLayer {
  inputNorm: TrackedBuffer;
  postNorm: TrackedBuffer;
  proj: Record<Projection, GpuWeight>;
  lora: Partial<Record<Projection, GpuLora>>;
}

/** Scores of chosen positions: log p(target), log(1 - p(target)) and the logsumexp of the logits. */
export interface PositionScores {
  logp: Float32Array;
  log1mq: Float32Array;
  lse: Float32Array;
}

export class GpuLlama {
  private constructor(
    readonly config: LlamaConfig,
    readonly quant: QuantFormat,
    private readonly ops: Ops,
    private readonly buffers: BufferManager,
    private readonly embed: GpuWeight,
    private readonly lmHead: GpuWeight,
    private readonly layers: GpuLayer[],
    private readonly finalNorm: TrackedBuffer,
    private readonly invFreq: Float64Array,
  ) {}

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
      for (const f of Object.values(l.lora)) {
        dropW(f!.A);
        dropW(f!.B);
      }
    }
  }

  /** Upload (quantizing) the base weights and optional LoRA factors. */
  static create(ops: Ops, weights: LlamaWeights, quant: QuantFormat, lora?: LoraSet): GpuLlama {
    const b = ops.buffers;
    const c = weights.config;
    checkQuantizable(c, quant);
    // On failure part-way (a buffer over the device limit, a bad LoRA rank), free what was made.
    const made: TrackedBuffer[] = [];
    const keep = (t: TrackedBuffer) => (made.push(t), t);
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
        const src: Record<Projection, Float32Array> = { q_proj: lw.q, k_proj: lw.k, v_proj: lw.v, o_proj: lw.o, gate_proj: lw.gate, up_proj: lw.up, down_proj: lw.down };
        const proj = {} as Record<Projection, GpuWeight>;
        const gl: Partial<Record<Projection, GpuLora>> = {};
        for (const p of Object.keys(shapes) as Projection[]) {
          const [n, k] = shapes[p];
          proj[p] = upload(`layers.${i}.${p}`, src[p], n, k, quant);
          const f = lora?.[i]?.[p];
          if (f) {
            if (f.r % 4 !== 0) throw new NlftError(`LoRA rank ${f.r} is not supported: the rank must be a multiple of 4`, 'lora-rank');
            gl[p] = { A: upload(`layers.${i}.${p}.lora_A`, f.A, f.r, k, 'f32'), B: upload(`layers.${i}.${p}.lora_B`, f.B, n, f.r, 'f32'), r: f.r, scale: f.scale };
          }
        }
        return { inputNorm: keep(b.upload(`layers.${i}.input_layernorm`, lw.inputNorm)), postNorm: keep(b.upload(`layers.${i}.post_attention_layernorm`, lw.postNorm)), proj, lora: gl };
      });
      return new GpuLlama(c, quant, ops, b, embed, lmHead, layers, keep(b.upload('norm', weights.finalNorm)), ropeInvFreq(c));
    } catch (e) {
      for (const t of made) b.destroy(t);
      throw e;
    }
  }

  /**
   * Forward pass over `ids`; for each i, scores position `rows[i]` against `targets[i]`
   * (the id that position predicts): log p and the logsumexp of its logits.
   */
  async score(ids: number[], rows: number[], targets: number[]): Promise<PositionScores> {
    const c = this.config;
    const T = ids.length;
    const R = rows.length;
    if (T === 0) throw new NlftError('cannot run the model on an empty token sequence', 'empty-input');
    if (T > c.maxPositionEmbeddings) throw new NlftError(`sequence of ${T} tokens is longer than the model's max_position_embeddings (${c.maxPositionEmbeddings})`, 'too-long');
    for (const [what, list] of [['token id', ids], ['target id', targets]] as const) {
      for (const id of list) if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new NlftError(`${what} ${id} is outside the vocabulary [0, ${c.vocabSize})`, 'bad-token');
    }
    for (const r of rows) if (!Number.isInteger(r) || r < 0 || r >= T) throw new NlftError(`position ${r} is outside the sequence [0, ${T})`, 'bad-position');
    if (R === 0) return { logp: new Float32Array(0), log1mq: new Float32Array(0), lse: new Float32Array(0) };

    const { ops, buffers: b } = this;
    const C = c.hiddenSize;
    const D = c.headDim;
    const F = c.intermediateSize;
    const maxR = Math.max(0, ...this.layers.flatMap((l) => Object.values(l.lora).map((f) => f!.r)));
    const live: TrackedBuffer[] = [];
    const alloc = (label: string, floats: number) => {
      const t = b.create(label, floats * 4);
      live.push(t);
      return t;
    };
    const upload = (label: string, data: Uint32Array | Float32Array) => {
      const t = b.upload(label, data);
      live.push(t);
      return t;
    };
    try {
      const idsBuf = upload('ids', Uint32Array.from(ids));
      const cs = upload('rope table', ropeTable(this.invFreq, T));
      const x = alloc('residual (T,C)', T * C);
      const xn = alloc('normed (T,C)', T * C);
      const rstd = alloc('rstd (T)', T);
      const q = alloc('q (T,H*D)', T * c.numHeads * D);
      const k = alloc('k (T,KVH*D)', T * c.numKvHeads * D);
      const v = alloc('v (T,KVH*D)', T * c.numKvHeads * D);
      const att = alloc('attention out (T,H*D)', T * c.numHeads * D);
      const attLse = alloc('attention lse (H,T)', c.numHeads * T);
      const gate = alloc('gate (T,F)', T * F);
      const up = alloc('up (T,F)', T * F);
      const hm = alloc('swiglu (T,F)', T * F);
      const loraTmp = maxR ? alloc('lora (T,r)', T * maxR) : null;

      const enc = b.device.createCommandEncoder({ label: 'forward' });
      const linear = async (layer: GpuLayer, p: Projection, inp: TrackedBuffer, out: TrackedBuffer, beta: 0 | 1) => {
        await ops.matmul(enc, { x: inp, w: layer.proj[p], out, T, beta });
        const f = layer.lora[p];
        if (f) {
          await ops.matmul(enc, { x: inp, w: f.A, out: loraTmp!, T });
          await ops.matmul(enc, { x: loraTmp!, w: f.B, out, T, alpha: f.scale, beta: 1 });
        }
      };
      await ops.embedding(enc, { ids: idsBuf, table: this.embed, out: x, T });
      for (const layer of this.layers) {
        await ops.rmsnorm(enc, { x, w: layer.inputNorm, out: xn, rstd, T, C, eps: c.rmsNormEps });
        await linear(layer, 'q_proj', xn, q, 0);
        await linear(layer, 'k_proj', xn, k, 0);
        await linear(layer, 'v_proj', xn, v, 0);
        await ops.rope(enc, { x: q, cs, T, nHeads: c.numHeads, D });
        await ops.rope(enc, { x: k, cs, T, nHeads: c.numKvHeads, D });
        await ops.attention(enc, { q, k, v, out: att, lse: attLse, T, H: c.numHeads, KVH: c.numKvHeads, D });
        await linear(layer, 'o_proj', att, x, 1);
        await ops.rmsnorm(enc, { x, w: layer.postNorm, out: xn, rstd, T, C, eps: c.rmsNormEps });
        await linear(layer, 'gate_proj', xn, gate, 0);
        await linear(layer, 'up_proj', xn, up, 0);
        await ops.swiglu(enc, { gate, up, h: hm, n: T * F });
        await linear(layer, 'down_proj', hm, x, 1);
      }
      await ops.rmsnorm(enc, { x, w: this.finalNorm, out: xn, rstd, T, C, eps: c.rmsNormEps });
      const rowsBuf = upload('rows', Uint32Array.from(rows));
      const targetsBuf = upload('targets', Uint32Array.from(targets));
      const lse = alloc('lse (R)', R);
      const logp = alloc('logp (R)', R);
      const log1mq = alloc('log(1-q) (R)', R);
      const scratch = ops.lmheadScratch(R, c.vocabSize);
      live.push(scratch.part, scratch.tlogit);
      await ops.lmhead(enc, { h: xn, rows: rowsBuf, targets: targetsBuf, R, w: this.lmHead, lse, logp, log1mq, scratch });
      b.device.queue.submit([enc.finish()]);
      const [lp, l1, ls] = await Promise.all([b.readF32(logp, R), b.readF32(log1mq, R), b.readF32(lse, R)]);
      return { logp: lp, log1mq: l1, lse: ls };
    } finally {
      for (const t of live) b.destroy(t);
    }
  }

  /** log p(y_t | prefix) for every response token, prompt and response tokenized separately. */
  async responseLogProbs(promptIds: number[], responseIds: number[]): Promise<Float32Array> {
    if (promptIds.length === 0) throw new NlftError('the prompt has no tokens: at least one token must precede the response', 'empty-prompt');
    if (responseIds.length === 0) return new Float32Array(0);
    // The last response token predicts nothing we score, so it is not fed.
    const ids = [...promptIds, ...responseIds.slice(0, -1)];
    const rows = responseIds.map((_, i) => promptIds.length + i - 1);
    return (await this.score(ids, rows, responseIds)).logp;
  }
}
