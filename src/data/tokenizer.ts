/**
 * Text ↔ token ids for a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json), with the
 * model's Jinja chat template. Built on `@huggingface/tokenizers` and `@huggingface/jinja`.
 */
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelFormatError } from '../errors.ts';
import { isRecord } from '../util/json.ts';

export type ChatRole = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export interface ChatTemplateOptions {
  /** Append the opening of an assistant turn, so the model's next tokens are its reply. */
  addGenerationPrompt: boolean;
}

/** Names of the two files as shown in error messages (e.g. full paths or URLs). */
export interface TokenizerFileNames {
  tokenizer: string;
  config: string;
}

const DEFAULT_FILES: TokenizerFileNames = { tokenizer: 'tokenizer.json', config: 'tokenizer_config.json' };

/** Special-token fields of tokenizer_config.json that the chat template may reference. */
const SPECIAL_FIELDS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;
type SpecialField = (typeof SPECIAL_FIELDS)[number];

interface SpecialToken {
  text: string;
  id: number;
}

/**
 * Reads a special token from tokenizer_config.json: a string, or an AddedToken object
 * (`{"content": "...", ...}`) as older configs store it; null when absent or null.
 */
function readSpecial(
  config: Record<string, unknown>,
  field: SpecialField,
  tokenizer: Tokenizer,
  files: TokenizerFileNames,
): SpecialToken | null {
  const raw = config[field];
  if (raw === undefined || raw === null) return null;
  const text = isRecord(raw) ? raw.content : raw;
  if (typeof text !== 'string') {
    throw new ModelFormatError(files.config, field, 'must be a token string or an object with a string "content"');
  }
  const id = tokenizer.token_to_id(text);
  if (id === undefined) {
    throw new ModelFormatError(files.config, field, `${JSON.stringify(text)} is not a token of ${files.tokenizer}`);
  }
  return { text, id };
}

/** Parses `chat_template`: a Jinja string, or a list of `{name, template}` of which "default" is used. */
function readChatTemplate(raw: unknown, files: TokenizerFileNames): Template | null {
  if (raw === undefined || raw === null) return null;
  let source: unknown = raw;
  if (Array.isArray(raw)) {
    const named = raw.find((t: unknown) => isRecord(t) && t.name === 'default');
    if (!isRecord(named)) {
      throw new ModelFormatError(files.config, 'chat_template', 'is a list of named templates without one named "default"');
    }
    source = named.template;
  }
  if (typeof source !== 'string') {
    throw new ModelFormatError(files.config, 'chat_template', 'must be a Jinja template string');
  }
  try {
    return new Template(source);
  } catch (e) {
    throw new ModelFormatError(files.config, 'chat_template', `cannot parse the Jinja template: ${(e as Error).message}`);
  }
}

/**
 * A loaded tokenizer. `encode` never adds special tokens: prompt and response are tokenized
 * separately and concatenated, and a chat is rendered by its template, which writes any BOS itself.
 * Special-token strings inside text (e.g. "<|im_end|>") are recognised as their single ids, as
 * Hugging Face tokenizers do by default.
 */
export class TextTokenizer {
  /** Number of token ids (largest id + 1), including added tokens. */
  readonly vocabSize: number;
  /** Ids that end a sequence: the config's eos_token. */
  readonly eosTokenIds: readonly number[];
  /** Id of the config's bos_token, or null when it has none. */
  readonly bosTokenId: number | null;
  /** The ids of "a" and their text, put before a token by `tokenText`. */
  private readonly tokenTextPrefix: { ids: number[]; text: string };

  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly specials: Partial<Record<SpecialField, SpecialToken>>,
    eos: SpecialToken,
    private readonly template: Template | null,
    private readonly cleanUpSpaces: boolean,
    private readonly files: TokenizerFileNames,
  ) {
    let maxId = -1;
    for (const id of tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.eosTokenIds = [eos.id];
    this.bosTokenId = specials.bos_token?.id ?? null;
    const prefixIds = this.encode('a');
    this.tokenTextPrefix = { ids: prefixIds, text: this.decode(prefixIds) };
  }

  /**
   * Builds a tokenizer from the parsed JSON of tokenizer.json and tokenizer_config.json.
   * `files` names them in error messages. Throws ModelFormatError naming the file and field at
   * fault; a missing chat_template is reported only when a chat is formatted.
   */
  static fromJson(tokenizerJson: unknown, tokenizerConfig: unknown, files: TokenizerFileNames = DEFAULT_FILES): TextTokenizer {
    if (!isRecord(tokenizerJson)) throw new ModelFormatError(files.tokenizer, undefined, 'must be a JSON object');
    if (!isRecord(tokenizerJson.model)) {
      const detail = 'missing; expected the tokenizer model object (e.g. BPE vocab and merges)';
      throw new ModelFormatError(files.tokenizer, 'model', detail);
    }
    const addedTokens = tokenizerJson.added_tokens ?? [];
    if (!Array.isArray(addedTokens)) throw new ModelFormatError(files.tokenizer, 'added_tokens', 'must be a list');
    if (!isRecord(tokenizerConfig)) throw new ModelFormatError(files.config, undefined, 'must be a JSON object');

    // tokenizer.json may omit pipeline stages it does not use; the library wants them present.
    const json = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      ...tokenizerJson,
      added_tokens: addedTokens,
    };
    // The library reads special tokens as plain strings; flatten AddedToken objects for it.
    const libConfig: Record<string, unknown> = { ...tokenizerConfig };
    for (const field of SPECIAL_FIELDS) {
      const raw = tokenizerConfig[field];
      if (isRecord(raw)) libConfig[field] = raw.content;
    }
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(json, libConfig);
    } catch (e) {
      throw new ModelFormatError(files.tokenizer, undefined, `unsupported or malformed tokenizer: ${(e as Error).message}`);
    }

    const specials: Partial<Record<SpecialField, SpecialToken>> = {};
    for (const field of SPECIAL_FIELDS) {
      const token = readSpecial(tokenizerConfig, field, tokenizer, files);
      if (token) specials[field] = token;
    }
    const eos = specials.eos_token;
    if (!eos) {
      const detail = 'missing; the end-of-sequence token is needed to end examples and stop generation';
      throw new ModelFormatError(files.config, 'eos_token', detail);
    }
    const template = readChatTemplate(tokenizerConfig.chat_template, files);
    // Off unless the config asks: the clean-up rewrites " ." to "." etc. and breaks decode(encode(x)) === x.
    const cleanUpSpaces = tokenizerConfig.clean_up_tokenization_spaces === true;
    return new TextTokenizer(tokenizer, specials, eos, template, cleanUpSpaces, files);
  }

  /** Token ids of `text`, with no BOS/EOS or other special tokens added. */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /** Text of a sequence of ids; special tokens are kept as their text. Throws RangeError on an unknown id. */
  decode(ids: readonly number[]): string {
    if (ids.length === 0) return '';
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
    }
    return this.tokenizer.decode([...ids], {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  /**
   * Readable text of one token as it reads inside a text (a partial UTF-8 byte sequence shows as
   * U+FFFD): decoded after the ids of "a" and cut after their text, so that a decoder that drops
   * the first space of a text (SentencePiece vocabularies' Strip) keeps this token's own space.
   */
  tokenText(id: number): string {
    const { ids, text: prefix } = this.tokenTextPrefix;
    const text = this.decode([...ids, id]);
    return text.startsWith(prefix) ? text.slice(prefix.length) : this.decode([id]);
  }

  /**
   * Renders `messages` with the config's chat_template, given `messages`, `add_generation_prompt` and
   * the special tokens (`bos_token`, `eos_token`, `pad_token`, `unk_token`) as Hugging Face
   * transformers does; `raise_exception(message)` is a global of the Jinja engine. A template
   * failure, raised or not, becomes a ModelFormatError on chat_template.
   */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ChatTemplateOptions): string {
    if (!this.template) {
      throw new ModelFormatError(
        this.files.config,
        'chat_template',
        'missing; this tokenizer has no chat template, so chat messages cannot be formatted',
      );
    }
    const vars: Record<string, unknown> = {
      messages: messages.map(({ role, content }) => ({ role, content })),
      add_generation_prompt: opts.addGenerationPrompt,
    };
    for (const [field, token] of Object.entries(this.specials)) vars[field] = token.text;
    try {
      return this.template.render(vars);
    } catch (e) {
      // Includes the template's own raise_exception(message), which the Jinja engine throws as an Error.
      throw new ModelFormatError(this.files.config, 'chat_template', `cannot render the messages: ${(e as Error).message}`);
    }
  }

  /** Token ids of the rendered chat; special-token strings become single ids, and no BOS is prepended. */
  encodeChat(messages: readonly ChatMessage[], opts: ChatTemplateOptions): number[] {
    return this.encode(this.applyChatTemplate(messages, opts));
  }
}
