/**
 * One training pass over one sequence: the forward pass keeping every layer's activations, then
 * (after the caller has turned the scores into per-position coefficients) the backward pass,
 * which accumulates LoRA gradients into the model's flat gradient buffer. Base weights get no
 * gradient; activations' gradients flow through the dequantized base weights.
 *
 * The loss this differentiates is  L = sum_r c_r * (-log q_r)  for likelihood rows and
 * u_r * (-log(1 - q_r)) for unlikelihood rows; the lm-head backward needs two numbers per row
 * (`lossCoefficients`, from nlft.md §5): dz = a * softmax(z) off the target, and dz_y itself.
 */
import { NlftError } from '../errors.ts';
import type { Projection } from '../model/weights.ts';
import type { TrackedBuffer } from './buffers.ts';
import type { LmheadScratch } from './ops.ts';
import { dropoutSeed, type DropoutSpec, type ForwardActs, type GpuLlama, type PositionScores } from './llama.ts';

/** A loss term's kind at one scored position. */
export type TermKind = 'likelihood' | 'unlikelihood';

/** Cap on log(q/(1-q)) so the unlikelihood coefficient stays finite in f32 (q within e^-80 of 1). */
const MAX_LOG_ODDS = 80;

/**
 * Per-row coefficients of the lm-head backward, interleaved (R,2): a_r and dz at the target, so
 * that dz_v = a_r * softmax(z)_v for v != y_r. From nlft.md §5, with q = q_y:
 *   likelihood c*(-log q):       a = c,             dz_y = c*(q - 1) = -c * exp(log(1-q))
 *   unlikelihood u*(-log(1-q)):  a = -u * q/(1-q),  dz_y = -u*q/(1-q)*(q - 1) = u * q
 * The target entries are written from log q and log(1-q) directly, never as a difference of
 * nearly equal f32 numbers, so they stay exact as q -> 1.
 */
export function lossCoefficients(kinds: readonly TermKind[], weights: ArrayLike<number>, scores: PositionScores): Float32Array {
  const out = new Float32Array(kinds.length * 2);
  kinds.forEach((kind, r) => {
    const w = weights[r];
    const { [r]: logp } = scores.logp;
    const { [r]: log1mq } = scores.log1mq;
    if (kind === 'likelihood') {
      out[2 * r] = w;
      out[2 * r + 1] = -w * Math.exp(log1mq);
    } else {
      out[2 * r] = -w * Math.exp(Math.min(logp - log1mq, MAX_LOG_ODDS));
      out[2 * r + 1] = w * Math.exp(logp);
    }
  });
  return out;
}

/** The loss value of the same terms, from the forward's log-probabilities. */
export function lossValue(kinds: readonly TermKind[], weights: ArrayLike<number>, scores: PositionScores): number {
  let s = 0;
  for (let r = 0; r < kinds.length; r++) s += weights[r] * -(kinds[r] === 'likelihood' ? scores.logp[r] : scores.log1mq[r]);
  return s;
}

export class TrainPass {
  private constructor(
    private readonly model: GpuLlama,
    private readonly acts: ForwardActs,
    private readonly rows: TrackedBuffer,
    private readonly targets: TrackedBuffer,
    private readonly R: number,
    private readonly rowList: readonly number[],
    private readonly lse: TrackedBuffer,
    private readonly scratch: LmheadScratch,
    private readonly dropout: DropoutSpec,
    private readonly live: TrackedBuffer[],
    /** log q, log(1-q) and lse of each scored row. */
    readonly scores: PositionScores,
  ) {}

  /**
   * Forward over `ids` keeping activations; scores `rows` (distinct positions) against `targets`.
   * The model must have LoRA adapters (they are what is trained). With `recompute`, only each
   * layer's input is kept and the backward pass recomputes the layer (activation checkpointing).
   */
  static async forward(
    model: GpuLlama,
    ids: number[],
    rows: number[],
    targets: number[],
    dropout: DropoutSpec,
    recompute = false,
  ): Promise<TrainPass> {
    model.checkInput(ids, rows, targets);
    if (!model.lora) throw new NlftError('training needs LoRA adapters on the model', 'no-lora');
    if (new Set(rows).size !== rows.length) throw new NlftError('each position can be scored only once in a training pass', 'bad-position');
    if (rows.length === 0) throw new NlftError('a training pass needs at least one scored position', 'empty-input');
    model.lora.enableGradients();
    const b = model.buffers;
    const live: TrackedBuffer[] = [];
    try {
      const up = (label: string, data: Uint32Array) => b.uploadIn(live, label, data);
      const acts = model.allocActs(ids.length, recompute ? 'checkpointed' : 'per-layer', live);
      const enc = b.device.createCommandEncoder({ label: 'train forward' });
      await model.encodeForward(enc, up('ids', Uint32Array.from(ids)), acts, dropout, live);
      const rowsBuf = up('rows', Uint32Array.from(rows));
      const targetsBuf = up('targets', Uint32Array.from(targets));
      const out = await model.encodeScores(enc, acts, rowsBuf, targetsBuf, rows.length, live);
      b.device.queue.submit([enc.finish()]);
      const R = rows.length;
      const [logp, log1mq, lse] = await Promise.all([b.readF32(out.logp, R), b.readF32(out.log1mq, R), b.readF32(out.lse, R)]);
      return new TrainPass(model, acts, rowsBuf, targetsBuf, R, rows, out.lse, out.scratch, dropout, live, { logp, log1mq, lse });
    } catch (e) {
      for (const t of live) b.destroy(t);
      throw e;
    }
  }

  /** Final hidden states (after the last norm) of the scored rows, (R, C), for saliency clustering. */
  async hiddenRows(): Promise<Float32Array> {
    const C = this.model.config.hiddenSize;
    const all = await this.model.buffers.readF32(this.acts.xnF, this.acts.T * C);
    const out = new Float32Array(this.R * C);
    this.rowList.forEach((r, i) => out.set(all.subarray(r * C, (r + 1) * C), i * C));
    return out;
  }

  /**
   * Backward pass for per-row coefficients `coef` (R,2) (see `lossCoefficients`); adds the LoRA
   * gradients into `model.lora.grads`. Frees the pass's activations afterwards.
   */
  async backward(coef: Float32Array): Promise<void> {
    if (coef.length !== 2 * this.R)
      throw new NlftError(`${coef.length / 2} coefficient pairs for ${this.R} scored positions`, 'bad-position');
    const { model, acts } = this;
    const { ops, config: c } = model;
    const b = model.buffers;
    const lora = model.lora!;
    const T = acts.T;
    const [C, F, D, H, KVH] = [c.hiddenSize, c.intermediateSize, c.headDim, c.numHeads, c.numKvHeads];
    const tmp: TrackedBuffer[] = [];
    const alloc = (label: string, floats: number) => b.f32In(tmp, label, floats);
    try {
      const enc = b.device.createCommandEncoder({ label: 'backward' });
      // Loss -> d(final normed hidden), one vocabulary chunk at a time.
      const R = this.R;
      const V = c.vocabSize;
      const VC = Math.min(model.ops.tuning.ceChunk, Math.ceil(V / 4) * 4);
      const coefBuf = b.upload('loss coefficients (R,2)', coef);
      tmp.push(coefBuf);
      const dz = alloc('dlogits chunk (R,VC)', R * VC);
      const dh = alloc('dh (R,C)', R * C);
      for (let vOff = 0; vOff < V; vOff += VC) {
        await ops.lmheadDz(enc, {
          h: acts.xnF,
          rows: this.rows,
          targets: this.targets,
          R,
          w: model.lmHead,
          lse: this.lse,
          coef: coefBuf,
          dz,
          vOff,
          VC,
          scratch: this.scratch,
        });
        await ops.matmulDx(enc, { dy: dz, w: model.lmHead, dx: dh, T: R, N: VC, nOff: vOff, beta: vOff === 0 ? 0 : 1 });
      }
      const dxn = alloc('d final norm (T,C)', T * C);
      enc.clearBuffer(dxn.buffer);
      await ops.scatterRows(enc, { w: model.lmHead, rows: this.rows, dh, dxn, R });
      const dx = alloc('d residual (T,C)', T * C);
      enc.clearBuffer(dx.buffer);
      await ops.rmsnormBackward(enc, { x: acts.xOut, w: model.finalNorm, rstd: acts.rstdF, dy: dxn, dx, T, C });

      const dF = alloc('d hidden (T,F)', T * F);
      const dGate = alloc('d gate (T,F)', T * F);
      const dUp = alloc('d up (T,F)', T * F);
      const dXn = alloc('d normed (T,C)', T * C);
      const dAtt = alloc('d attention (T,H*D)', T * H * D);
      const dq = alloc('dq (T,H*D)', T * H * D);
      const dk = alloc('dk (T,KVH*D)', T * KVH * D);
      const dv = alloc('dv (T,KVH*D)', T * KVH * D);
      const delta = alloc('attention delta (H,T)', H * T);
      const maxR = Math.max(...lora.entries.map((e) => e.r));
      const maxIn = Math.max(...lora.entries.map((e) => e.inF));
      const g = alloc('lora g (T,r)', T * maxR);
      const gx = this.dropout.rate > 0 ? alloc('lora dx before dropout (T,in)', T * maxIn) : null;
      const xd = acts.xd;

      /** Input-gradient of a projection (base + LoRA) into dIn (beta 0 overwrites, 1 adds), and LoRA weight gradients. */
      const linearBack = async (i: number, p: Projection, input: TrackedBuffer, dOut: TrackedBuffer, dIn: TrackedBuffer, beta: 0 | 1) => {
        await ops.matmulDx(enc, { dy: dOut, w: model.layers[i].proj[p], dx: dIn, T, beta });
        const e = lora.entry(i, p);
        if (!e) return;
        const { A, B } = lora.weights(e);
        const { dA, dB } = lora.gradViews(e);
        const u = acts.layers[i].loraU[p]!;
        let x = input;
        if (this.dropout.rate > 0) {
          await ops.dropout(enc, { x: input, out: xd!, n: T * e.inF, seed: dropoutSeed(this.dropout.seed, i, p), rate: this.dropout.rate });
          x = xd!;
        }
        await ops.matmulTn(enc, { a: dOut, b: u, out: dB, T, M: e.outF, P: e.r, alpha: e.scale, beta: 1 }); // dB += s dY^T u
        await ops.matmulDx(enc, { dy: dOut, w: B, dx: g, T }); //                                          g = dY B
        await ops.matmulTn(enc, { a: g, b: x, out: dA, T, M: e.r, P: e.inF, alpha: e.scale, beta: 1 }); //  dA += s g^T dropout(x)
        if (this.dropout.rate > 0) {
          await ops.matmulDx(enc, { dy: g, w: A, dx: gx!, T, alpha: e.scale });
          await ops.dropout(enc, {
            x: gx!,
            out: dIn,
            n: T * e.inF,
            seed: dropoutSeed(this.dropout.seed, i, p),
            rate: this.dropout.rate,
            beta: 1,
          });
        } else {
          await ops.matmulDx(enc, { dy: g, w: A, dx: dIn, T, alpha: e.scale, beta: 1 });
        }
      };

      for (let i = model.layers.length - 1; i >= 0; i--) {
        const L = model.layers[i];
        const a = acts.layers[i];
        if (acts.mode === 'checkpointed') await model.encodeLayer(enc, i, acts, this.dropout); // refill the shared activations
        // MLP: x_out = x_mid + down(silu(gate(xn2)) * up(xn2)), xn2 = norm(x_mid)
        await linearBack(i, 'down_proj', a.hm, dx, dF, 0);
        await ops.swigluBackward(enc, { gate: a.gate, up: a.up, dh: dF, dgate: dGate, dup: dUp, n: T * F });
        await linearBack(i, 'gate_proj', a.xn2, dGate, dXn, 0);
        await linearBack(i, 'up_proj', a.xn2, dUp, dXn, 1);
        await ops.rmsnormBackward(enc, { x: a.xMid, w: L.postNorm, rstd: a.rstd2, dy: dXn, dx, T, C });
        // Attention: x_mid = x_in + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))), xn1 = norm(x_in)
        await linearBack(i, 'o_proj', a.att, dx, dAtt, 0);
        await ops.attentionBackward(enc, {
          q: a.q,
          k: a.k,
          v: a.v,
          out: a.att,
          lse: a.attLse,
          dout: dAtt,
          delta,
          dq,
          dk,
          dv,
          seg: acts.seg,
          T,
          H,
          KVH,
          D,
        });
        await ops.rope(enc, { x: dq, cs: acts.cs, T, nHeads: H, D, dir: -1 });
        await ops.rope(enc, { x: dk, cs: acts.cs, T, nHeads: KVH, D, dir: -1 });
        await linearBack(i, 'q_proj', a.xn1, dq, dXn, 0);
        await linearBack(i, 'k_proj', a.xn1, dk, dXn, 1);
        await linearBack(i, 'v_proj', a.xn1, dv, dXn, 1);
        await ops.rmsnormBackward(enc, { x: a.xIn, w: L.inputNorm, rstd: a.rstd1, dy: dXn, dx, T, C });
      }
      b.device.queue.submit([enc.finish()]);
      await b.device.queue.onSubmittedWorkDone();
    } finally {
      for (const t of tmp) b.destroy(t);
      this.release();
    }
  }

  /** Free the activations (also done by `backward`). */
  release(): void {
    for (const t of this.live) this.model.buffers.destroy(t);
    this.live.length = 0;
  }
}
