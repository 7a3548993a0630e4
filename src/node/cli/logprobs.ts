/**
 * `nlft logprobs`: log p(y_t | prompt, y_<t) for every response token, of the base model or,
 * with `--adapter DIR`, of the model with a PEFT LoRA adapter.
 * Prompt and response are tokenized separately and concatenated (docs/method.md §2).
 */
import { writeFile } from 'node:fs/promises';
import { scoringInput } from '../../data/prompt.ts';
import { adapterName, describeAdapter } from '../../engine/gpu.ts';
import { GpuLlama } from '../../engine/llama.ts';
import { createTunedEngine } from '../engine.ts';
import { adapterOption, loadModelWithTokenizer } from './inputs.ts';
import { parse, quantOption, required } from './args.ts';

export interface LogprobsResult {
  model: string;
  quant: string;
  chat: boolean;
  /** The GPU adapter. */
  adapter: string;
  /** The `--adapter` folder of the PEFT LoRA adapter, or null for the base model. */
  lora_adapter: string | null;
  prompt_text: string;
  prompt_ids: number[];
  response_ids: number[];
  response_tokens: string[];
  logprobs: number[];
  sum_logprob: number;
}

export async function logprobsCommand(argv: string[], out: (line: string) => void): Promise<LogprobsResult> {
  const values = parse(argv, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    quant: { type: 'string' },
    chat: { type: 'boolean' },
    system: { type: 'string' },
    prompt: { type: 'string' },
    response: { type: 'string' },
    out: { type: 'string' },
  });
  const dir = required(values, 'model');
  const prompt = required(values, 'prompt');
  const response = required(values, 'response');
  const quant = quantOption(values.quant);
  const chat = values.chat === true;
  const { model, tok } = await loadModelWithTokenizer(dir, 'logprobs', out);
  const adapterDir = typeof values.adapter === 'string' ? values.adapter : null;
  const peft = await adapterOption(values, model.config);
  const { promptText, promptIds, responseIds } = scoringInput(tok, prompt, response, {
    chat,
    system: typeof values.system === 'string' ? values.system : undefined,
  });
  const { engine } = await createTunedEngine(model.config, quant);
  try {
    const llama = GpuLlama.create(engine.ops, model.weights, quant, peft?.lora);
    const logp = await llama.responseLogProbs(promptIds, responseIds);
    const result: LogprobsResult = {
      model: dir,
      quant,
      chat,
      adapter: describeAdapter(engine.ctx.adapter),
      lora_adapter: adapterDir,
      prompt_text: promptText,
      prompt_ids: promptIds,
      response_ids: responseIds,
      response_tokens: responseIds.map((id) => tok.tokenText(id)),
      logprobs: Array.from(logp),
      sum_logprob: logp.reduce((a, b) => a + b, 0),
    };
    const lora =
      peft === null ? '' : `LoRA ${adapterDir} (r ${peft.config.r}, alpha ${peft.config.alpha}, ${peft.config.targets.join(' ')}), `;
    const setting = `(${quant}, ${lora}${adapterName(engine.ctx.adapter)})`;
    if (typeof values.out === 'string') {
      await writeFile(values.out, JSON.stringify(result, null, 2));
      out(`wrote ${values.out}: ${responseIds.length} response tokens, sum log p = ${result.sum_logprob.toFixed(4)} ${setting}`);
    } else {
      out(`prompt ids (${promptIds.length}): ${promptIds.join(' ')}`);
      out('  t      id  token                 log p');
      result.response_ids.forEach((id, t) =>
        out(
          `${String(t).padStart(3)} ${String(id).padStart(7)}  ${JSON.stringify(result.response_tokens[t]).padEnd(20)} ${result.logprobs[t].toFixed(5)}`,
        ),
      );
      out(`${responseIds.length} response tokens, sum log p = ${result.sum_logprob.toFixed(4)} ${setting}`);
    }
    return result;
  } finally {
    engine.destroy();
  }
}
