/**
 * nlft — the headless CLI of NLFT Studio, on the same engine as the app (Node + Dawn WebGPU).
 * Every command prints a one-line summary; bad input exits non-zero with a clear message.
 */
import { NlftError } from '../src/errors.ts';
import { infoCommand } from '../src/node/cli/info.ts';
import { tuneCommand } from '../src/node/cli/tune.ts';
import { logprobsCommand } from '../src/node/cli/logprobs.ts';
import { NLFT_USAGE } from '../src/node/cli/nlft-options.ts';
import { scoreCommand } from '../src/node/cli/score.ts';
import { trainCommand } from '../src/node/cli/train.ts';
import { generateCommand } from '../src/node/cli/generate.ts';
import { evalCommand } from '../src/node/cli/eval.ts';
import { prepareCommand } from '../src/node/cli/prepare.ts';
import { compareCommand } from '../src/node/cli/compare.ts';
import { exportCommand } from '../src/node/cli/export.ts';

const USAGE = `usage: nlft <command> [options]

commands:
  info      --model M                          config, parameter count, quantized size, GPU adapter
  tune      --model M [--quant q8]             measure the kernel tiles for this GPU and model now, print each
            candidate's speed and keep the fastest for later commands (a software adapter such as SwiftShader
            runs models of hidden size up to 128 on a preset unless measured here)
  logprobs  --model M --prompt TEXT --response TEXT [--adapter DIR] [--quant f32|q8|q4] [--chat] [--system TEXT] [--out FILE]
            log p of every response token given the prompt (raw, or built with the chat template),
            with a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) when --adapter is given
  score     --model M --data FILE --out dump.json [--adapter DIR] [--quant q8] [--max-len 512] [NLFT options]
            per record and token: pb, pc, pj, saliency class, coefficient, term kind; the record's loss; a summary;
            the cached view scores (log pb, log(1-pb), log pc, log pj, hidden states) for --from
  score     --from dump.json [--out new.json] [NLFT options]
            the dump's cached scores re-classified under the options on the CPU: no model, no GPU
  train     --model M --data FILE --out DIR [--method nlft|sft] [--epochs 3] [--steps N] [--lr 5e-5] [--batch 4]
            [--rank 16] [--alpha RANK] [--dropout 0.05] [--targets gate_proj,up_proj,down_proj] [--quant q8]
            [--max-len 512] [--seed 0] [--weight-decay 0] [--warmup 0.1] [--max-grad-norm 1] [--recompute]
            [--memory-budget MiB] [--packing on|off] [--resume DIR] [--checkpoint-seconds S] [--profile]
            [NLFT options] [--saliency dynamic|static] [--scorer MODEL]
            LoRA fine-tuning: NLFT on records with the model's outputs (and judgments), or SFT on answers;
            writes a PEFT adapter, adapter.gguf (the same adapter for llama.cpp and Ollama), metrics.jsonl,
            saliency.jsonl (NLFT), run.json and checkpoint.safetensors

  generate  --model M --prompt TEXT [--adapter DIR] [--chat] [--system TEXT] [--max-new 256] [--temperature 0] [--seed 0]
            [--quant q8] [--out FILE]
            text from the model (greedy, or sampled at a temperature), until end-of-sequence or --max-new tokens
  eval      --model M --data FILE [--adapter DIR] [--limit N] [--max-new 512] [--temperature 0] [--seed 0] [--quant q8]
            [--system TEXT | --templates FILE] [--out results.json]
            accuracy on {question, answer} (or NLFT) records: the final number of each answer vs the standard one;
            records without an instruction are asked under --system, else the baseSystem of --templates, else the
            text the --adapter's run (its run.json) trained with, else the default instruction
  compare   --model M --data FILE --eval TEST --arms sft,nlft,nlft:lambda=5,... [--seeds 0,1,2] [--limit N]
            [--max-new 512] [--system TEXT] [--out DIR] [training flags]
            trains every arm × seed with the same training flags (an arm's key=value pairs are its own flags),
            evaluates each adapter and the base model greedily, and prints (with --out, writes compare.json and
            compare.md) accuracy per seed, mean ± sd, the difference to sft with a paired bootstrap 95% interval
  export    --adapter DIR --format gguf [--out DIR/adapter.gguf] [--model M]
            a PEFT adapter folder as a GGUF LoRA adapter for llama.cpp (llama-cli --lora) and Ollama (ADAPTER),
            with a ready Modelfile; M (default: the adapter's base_model_name_or_path) gives the shapes to check
  prepare   --model M --data FILE --out nlft.json [--adapter DIR] [--limit N] [--temperature 0.6] [--max-new 512]
            [--seed 0] [--quant q8] [--system TEXT | --templates FILE] [--judge-url URL --judge-model NAME]
            NLFT records from {question, answer}: the model's own answers, graded, wrong ones judged (by a judge
            model behind an OpenAI-compatible endpoint, key in $JUDGE_API_KEY; else a template judgment from the grade)

NLFT options: ${NLFT_USAGE}

M (--model) is a local Hugging Face folder, or a Hub id org/name[@revision] whose files are downloaded once
into $NLFT_CACHE_DIR/hub (default ~/.cache/nlft-studio); $HF_ENDPOINT sets the Hub's URL, $HF_TOKEN its token.`;

const COMMANDS: Record<string, (argv: string[], out: (line: string) => void) => Promise<unknown>> = {
  info: infoCommand,
  logprobs: logprobsCommand,
  train: trainCommand,
  score: scoreCommand,
  generate: generateCommand,
  eval: evalCommand,
  prepare: prepareCommand,
  compare: compareCommand,
  export: exportCommand,
  tune: tuneCommand,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(USAGE);
    return cmd ? 0 : 2;
  }
  const run = COMMANDS[cmd];
  if (!run) {
    console.error(`nlft: unknown command "${cmd}"\n\n${USAGE}`);
    return 2;
  }
  try {
    await run(rest, (line) => console.log(line));
    return 0;
  } catch (e) {
    if (e instanceof NlftError) {
      console.error(`nlft ${cmd}: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
