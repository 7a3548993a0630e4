/**
 * The generic-framework baseline of the training benchmark (bench/train.ts): the same Llama and
 * LoRA adapters with @tensorflow/tfjs-core on @tensorflow/tfjs-backend-webgpu, run by Dawn in
 * Node. f32 weights; the loss is the mean cross-entropy over the scored positions, computed from
 * the full (T,V) logits (log-softmax over the vocabulary, then a gather); the LoRA gradients come
 * from tfjs autodiff (tf.variableGrads w.r.t. the A/B variables), then global-norm clipping and
 * a plain AdamW update with tf ops (the same hyper-parameters as src/train/optimizer.ts). The
 * model code is the tfjs reference of the tests (test/reference/llama-tf.ts), given tensors that
 * live on the webgpu backend.
 *
 * Gradient registration: the CommonJS bundle Node loads for tfjs-core (dist/tf-core.node.js)
 * registers no gradients, and `dist/register_all_gradients.js` (the ES module the tfjs union
 * package imports) uses extensionless and directory imports that Node's ES module resolver
 * refuses. Before loading it we register a module resolve hook (node:module `register`) that
 * adds the `.js` to relative imports inside tfjs-core's dist folder. That ES copy of tfjs-core
 * shares the CommonJS copy's engine and gradient registry (both live on the global object), so
 * its gradients serve the backend. `checkGradients` verifies it before any timing.
 */
import { register } from 'node:module';
import type * as TF from '@tensorflow/tfjs-core';
import type { LoraSet } from '../src/model/lora.ts';
import { projectionShapes } from '../src/model/size.ts';
import type { LlamaWeights, Projection } from '../src/model/weights.ts';
import { nodeGpu } from '../src/node/webgpu.ts';
import type { LlamaTensors, LoraTensors } from '../test/reference/llama-tf.ts';

type Tf = typeof TF;

/** Resolve hook: `./x` and `../x` imported from tfjs-core's dist folder mean `./x.js`. */
const RESOLVE_HOOK = `
export async function resolve(specifier, context, next) {
  if (context.parentURL && context.parentURL.includes('/@tensorflow/tfjs-core/dist/') && specifier.startsWith('.') && !specifier.endsWith('.js')) {
    try { return await next(specifier + '.js', context); } catch {}
  }
  return next(specifier, context);
}`;

let loading: Promise<{ tf: Tf; ref: typeof import('../test/reference/llama-tf.ts') }> | null = null;

/** tfjs-core with every gradient registered and the webgpu backend (on Dawn) selected. */
function loadTfjsWebgpu(): Promise<{ tf: Tf; ref: typeof import('../test/reference/llama-tf.ts') }> {
  loading ??= (async () => {
    register(`data:text/javascript,${encodeURIComponent(RESOLVE_HOOK)}`);
    const gpu = await nodeGpu();
    const g = globalThis as { navigator?: object };
    if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
    else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    const tf = await import('@tensorflow/tfjs-core');
    await import('@tensorflow/tfjs-backend-webgpu');
    await import('@tensorflow/tfjs-core/dist/register_all_gradients.js');
    const ref = await import('../test/reference/llama-tf.ts');
    if (!(await tf.setBackend('webgpu'))) throw new Error('tfjs: the webgpu backend failed to initialise');
    await tf.ready();
    await checkGradients(tf);
    return { tf, ref };
  })();
  return loading;
}

/** tf.grad and tf.variableGrads on the webgpu backend against hand-computed values. */
async function checkGradients(tf: Tf): Promise<void> {
  const close = (a: ArrayLike<number>, b: number[]) => b.every((x, i) => Math.abs(a[i] - x) <= 1e-4 * (1 + Math.abs(x)));
  // d/dx sum(x^2) = 2x
  const x = tf.tensor1d([1, -2, 3]);
  const dx = tf.grad((t: TF.Tensor) => tf.sum(tf.square(t)))(x);
  const got = await dx.data();
  // d/dw of -logsoftmax(w·h)[1] = (softmax - onehot) ⊗ h, through matMul, logSoftmax and gather
  const w = tf.variable(
    tf.tensor2d([
      [0.1, 0.2],
      [-0.3, 0.4],
      [0.5, -0.6],
    ]),
    true,
    'gradcheck.w',
  );
  const h = [1, 2];
  const { grads, value } = tf.variableGrads(
    () => tf.neg(tf.sum(tf.gather(tf.reshape(tf.logSoftmax(tf.matMul(tf.tensor2d([h], [1, 2]), w, false, true)), [3]), [1]))) as TF.Scalar,
    [w],
  );
  const z = [0.1 + 0.4, -0.3 + 0.8, 0.5 - 1.2];
  const lse = Math.log(z.reduce((s, v) => s + Math.exp(v), 0));
  const want = z.flatMap((zi, i) => h.map((hj) => (Math.exp(zi - lse) - (i === 1 ? 1 : 0)) * hj));
  const gw = await grads[w.name].data();
  const ok = close(got, [2, -4, 6]) && close(gw, want) && close(await value.data(), [lse - z[1]]);
  tf.dispose([x, dx, w, value, ...Object.values(grads)]);
  if (!ok)
    throw new Error(`tfjs gradients are wrong or missing: d sum(x^2) = [${Array.from(got)}], dW = [${Array.from(gw)}] (want [${want}])`);
}

export interface TfjsStepOptions {
  weights: LlamaWeights;
  lora: LoraSet;
  /**
   * The step's records: token ids (T) and the next-token target of each position (T), -1 where the
   * position is not scored. The loss is the mean over records of each record's mean cross-entropy.
   */
  sequences: Array<{ ids: number[]; targets: number[] }>;
  lr: number;
  /** Timed repetitions after one warm-up step (median reported; default 3). */
  reps?: number;
}

export interface TfjsStepResult {
  version: string;
  adapter: string;
  /** Median wall time of one step (forward, loss, autodiff backward, AdamW; queue drained). */
  ms: number;
  lossFirstStep: number;
  gradNormFirstStep: number;
  /** High-water marks over all steps of the backend's GPU bytes in use and allocated (pool included). */
  peakBytesInGpu: number;
  peakBytesAllocatedInGpu: number;
  /** GPU bytes held by live tensors after the steps (weights, adapters, AdamW moments). */
  residentBytes: number;
  /** tf.memory() after the steps. */
  memoryAfter: Record<string, unknown>;
}

/** The webgpu backend's internals the benchmark reads (tfjs-backend-webgpu 4.x). */
interface WebgpuBackendInternals {
  device: GPUDevice;
  adapterInfo?: { vendor?: string; architecture?: string };
  bufferManager: { numBytesUsed: number; numBytesAllocated: number; acquireBuffer: (...args: unknown[]) => GPUBuffer };
}

/** One SFT step with tfjs-webgpu autodiff, timed like bench/train.ts times ours. */
export async function tfjsTrainStep(o: TfjsStepOptions): Promise<TfjsStepResult> {
  const { tf, ref } = await loadTfjsWebgpu();
  const backend = tf.backend() as unknown as WebgpuBackendInternals;
  const bm = backend.bufferManager;
  let peakUsed = bm.numBytesUsed;
  let peakAllocated = bm.numBytesAllocated;
  const acquire = bm.acquireBuffer;
  bm.acquireBuffer = (...args: unknown[]) => {
    const b = acquire.apply(bm, args);
    peakUsed = Math.max(peakUsed, bm.numBytesUsed);
    peakAllocated = Math.max(peakAllocated, bm.numBytesAllocated);
    return b;
  };

  const { weights: w, lora } = o;
  const c = w.config;
  const { vocabSize: V, hiddenSize: C, intermediateSize: F, numHeads: H, numKvHeads: KVH, headDim: D } = c;
  const t2 = (a: Float32Array, r: number, k: number) => tf.tensor2d(a, [r, k], 'float32');
  const wt: LlamaTensors = {
    config: c,
    embed: t2(w.embed, V, C),
    layers: w.layers.map((l) => ({
      inputNorm: tf.tensor1d(l.inputNorm, 'float32'),
      q: t2(l.q, H * D, C),
      k: t2(l.k, KVH * D, C),
      v: t2(l.v, KVH * D, C),
      o: t2(l.o, C, H * D),
      postNorm: tf.tensor1d(l.postNorm, 'float32'),
      gate: t2(l.gate, F, C),
      up: t2(l.up, F, C),
      down: t2(l.down, C, F),
    })),
    finalNorm: tf.tensor1d(w.finalNorm, 'float32'),
    lmHead: c.tieWordEmbeddings || !w.lmHead ? null : t2(w.lmHead, V, C),
  };
  const shapes = projectionShapes(c);
  const vars: TF.Variable[] = [];
  const loraT: LoraTensors = lora.map((layer, i) => {
    const out: LoraTensors[number] = {};
    for (const [p, f] of Object.entries(layer) as Array<[Projection, LoraSet[number][Projection]]>) {
      if (!f) continue;
      const [outF, inF] = shapes[p];
      const A = tf.variable(t2(f.A, f.r, inF), true, `lora.${i}.${p}.A`);
      const B = tf.variable(t2(f.B, outF, f.r), true, `lora.${i}.${p}.B`);
      vars.push(A, B);
      out[p] = { A, B, scale: f.scale };
    }
    return out;
  });
  // AdamW (torch.optim.AdamW, as src/train/optimizer.ts): clip_grad_norm_ 1.0, betas 0.9/0.999, eps 1e-8, no decay.
  const [beta1, beta2, eps, weightDecay, maxGradNorm] = [0.9, 0.999, 1e-8, 0, 1.0];
  const m = vars.map((v) => tf.variable(tf.zerosLike(v), false));
  const s = vars.map((v) => tf.variable(tf.zerosLike(v), false));

  const loss = () =>
    tf.div(
      tf.addN(o.sequences.map((q) => tf.neg(tf.mean(ref.tokenLogProbsTf(ref.llamaLogitsTf(wt, q.ids, loraT), q.targets))))),
      o.sequences.length,
    ) as TF.Scalar;
  let t = 0;
  const losses: number[] = [];
  const norms: number[] = [];
  const step = async () => {
    t++;
    const { value, grads } = tf.variableGrads(loss, vars);
    const norm = tf.tidy(() => {
      const gs = vars.map((v) => grads[v.name]);
      const n = tf.sqrt(gs.map((g) => tf.sum(tf.square(g))).reduce((a, b) => tf.add(a, b)));
      const clip = tf.minimum(1, tf.div(maxGradNorm, tf.add(n, 1e-6)));
      const bc1 = 1 - beta1 ** t;
      const bc2 = 1 - beta2 ** t;
      vars.forEach((p, i) => {
        const g = tf.mul(gs[i], clip);
        m[i].assign(tf.add(tf.mul(m[i], beta1), tf.mul(g, 1 - beta1)));
        s[i].assign(tf.add(tf.mul(s[i], beta2), tf.mul(tf.square(g), 1 - beta2)));
        const update = tf.div(tf.div(m[i], bc1), tf.add(tf.sqrt(tf.div(s[i], bc2)), eps));
        p.assign(tf.sub(tf.mul(p, 1 - o.lr * weightDecay), tf.mul(update, o.lr)));
      });
      return n;
    });
    losses.push((await value.data())[0]);
    norms.push((await norm.data())[0]);
    await backend.device.queue.onSubmittedWorkDone();
    tf.dispose([value, norm, ...Object.values(grads)]);
  };

  await step(); // warm-up: uploads the weights, compiles the shaders
  const times: number[] = [];
  for (let i = 0; i < (o.reps ?? 3); i++) {
    const t0 = performance.now();
    await step();
    times.push(performance.now() - t0);
  }
  const ms = times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
  const memoryAfter = { ...tf.memory() } as unknown as Record<string, unknown>;
  const residentBytes = bm.numBytesUsed;
  bm.acquireBuffer = acquire;

  const info = backend.adapterInfo;
  const adapter = [info?.vendor, info?.architecture].filter((x) => x).join(' / ') || 'unknown adapter';
  tf.dispose([
    wt.embed,
    wt.finalNorm,
    ...(wt.lmHead ? [wt.lmHead] : []),
    ...wt.layers.flatMap((l) => Object.values(l)),
    ...vars,
    ...m,
    ...s,
  ]);
  return {
    version: tf.version_core,
    adapter,
    ms,
    lossFirstStep: losses[0],
    gradNormFirstStep: norms[0],
    peakBytesInGpu: peakUsed,
    peakBytesAllocatedInGpu: peakAllocated,
    residentBytes,
    memoryAfter,
  };
}
