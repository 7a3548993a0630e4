/**
 * The evaluation, generation and scoring jobs of a loaded model, written once for the hosts: what
 * they read from a request, what they run and what they hand back (an evaluation's label
 * included), with no knowledge of where the request came from.
 */
import { type DatasetRecord, parseDataset } from '../data/dataset.ts';
import { type DatasetSummary, datasetSummary } from '../data/summary.ts';
import type { TextTokenizer } from '../data/tokenizer.ts';
import { type Generated, generate } from '../engine/generate.ts';
import type { GpuLlama } from '../engine/llama.ts';
import { NlftError } from '../errors.ts';
import { basePrompt, DEFAULT_INSTRUCTION, promptInput, scoringInput } from '../data/prompt.ts';
import { describeSystem, type EvalItem, evaluate, summarize } from '../eval/accuracy.ts';
import type { LoraConfig } from '../model/lora.ts';
import type { QuantFormat } from '../model/quant.ts';
import type { EvalOutcome, EvalRequest } from './requests.ts';

/** Polarities and token lengths of records under `tok`, prompts built as the base view (what a run's data summary holds). */
export function recordsSummary(records: readonly DatasetRecord[], tok: TextTokenizer, maxLen: number): DatasetSummary {
  return datasetSummary(records, tok, { maxLen, buildPrompt: (r) => basePrompt(tok, r) });
}

/** The model a job runs on: its GPU weights, tokenizer, name and weight format, and its trained adapters' settings (null: none). */
export interface LoadedJobModel {
  llama: GpuLlama;
  tok: TextTokenizer;
  name: string;
  quant: QuantFormat;
  trained: LoraConfig | null;
}

/**
 * Answers the first `limit` questions of the request's data greedily (records without an
 * instruction under the request's system text) and grades them; stops before the next question
 * when `signal` aborts. The label names the model, adapter, data and system text; the outcome also
 * holds each of them as a field (the app's Compare view reads them).
 */
export async function runEvaluation(
  m: LoadedJobModel,
  request: EvalRequest,
  o: { signal?: AbortSignal; check?: () => void; onItem?: (item: EvalItem, done: number, total: number) => void },
): Promise<EvalOutcome> {
  const records = parseDataset(request.data.bytes, request.data.name).records.slice(0, request.limit);
  const system = request.system ?? DEFAULT_INSTRUCTION;
  const items = await evaluate(
    m.llama,
    m.tok,
    records,
    { maxNewTokens: request.maxNewTokens, temperature: 0, seed: 0, system, signal: o.signal, check: o.check },
    (item, done) => o.onItem?.(item, done, records.length),
  );
  const t = m.trained;
  const adapter = t ? `trained adapter (r ${t.r} on ${t.targets.join(',')})` : null;
  const model = `${m.name}, ${m.quant}`;
  const label = `${model}, ${adapter ?? 'no adapter'}; ${request.data.name}, greedy, up to ${request.maxNewTokens} tokens, ${describeSystem(system)}`;
  return {
    label,
    at: new Date().toISOString(),
    summary: summarize(items),
    items,
    stopped: items.length < records.length,
    dataName: request.data.name,
    model,
    system,
    adapter: adapter === null ? null : { description: adapter },
  };
}

/** A generation: the prompt (raw, or a chat user turn) and how to sample. */
export interface GenerationRequest {
  prompt: string;
  chat: boolean;
  /** With `chat`: the system turn before the prompt ('' or absent: none). */
  system?: string;
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  seed: number;
}

/**
 * The model's continuation of the prompt, until an end-of-sequence token, `maxNewTokens` or the
 * context; `onText` gets the text so far after each token (end-of-sequence tokens left out).
 *
 * @throws NlftError ('empty-prompt') when the prompt has no tokens
 */
export async function generateText(
  llama: GpuLlama,
  tok: TextTokenizer,
  request: GenerationRequest,
  onText?: (text: string) => void,
): Promise<{ text: string; tokens: number; reason: Generated['reason'] }> {
  const { promptIds } = promptInput(tok, request.prompt, { chat: request.chat, system: request.system || undefined });
  if (promptIds.length === 0) throw new NlftError('The prompt is empty: type a question first.', 'empty-prompt');
  const stop = new Set(tok.eosTokenIds);
  const ids: number[] = [];
  const r = await generate(llama, promptIds, {
    maxNewTokens: request.maxNewTokens,
    temperature: request.temperature,
    seed: request.seed,
    stopIds: tok.eosTokenIds,
    onToken: (id) => {
      if (stop.has(id)) return;
      ids.push(id);
      onText?.(tok.decode(ids));
    },
  });
  return { text: tok.decode(ids), tokens: r.ids.length, reason: r.reason };
}

/** log p of every response token given the prompt (raw, or a chat user turn under `system`), with the tokens' ids and texts. */
export async function scoreResponse(
  llama: GpuLlama,
  tok: TextTokenizer,
  request: { prompt: string; response: string; chat: boolean; system?: string },
): Promise<{ promptTokens: number; ids: number[]; texts: string[]; logprobs: number[] }> {
  const { promptIds, responseIds: ids } = scoringInput(tok, request.prompt, request.response, {
    chat: request.chat,
    system: request.system || undefined,
  });
  const logp = await llama.responseLogProbs(promptIds, ids);
  return { promptTokens: promptIds.length, ids, texts: ids.map((id) => tok.tokenText(id)), logprobs: Array.from(logp) };
}
