import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { TextTokenizer, type ChatMessage } from '../../src/data/tokenizer.ts';
import { ModelFormatError } from '../../src/errors.ts';

const dir = new URL('../../public/tokenizers/smollm2/', import.meta.url);
const tokenizerJson = JSON.parse(readFileSync(new URL('tokenizer.json', dir), 'utf8')) as {
  added_tokens: { id: number; content: string }[];
  model: { vocab: Record<string, number> };
};
const config = JSON.parse(readFileSync(new URL('tokenizer_config.json', dir), 'utf8')) as Record<string, unknown>;
const tok = TextTokenizer.fromJson(tokenizerJson, config);

/** Id of an added (special) token, read from tokenizer.json itself. */
const special = (content: string): number => tokenizerJson.added_tokens.find((t) => t.content === content)!.id;
/** Id of a byte-level BPE vocabulary entry ("Ġ" = space, "Ċ" = newline). */
const vocab = (piece: string): number => tokenizerJson.model.vocab[piece];

const IM_START = special('<|im_start|>');
const IM_END = special('<|im_end|>');
const END_OF_TEXT = special('<|endoftext|>');

/** Expects `fn` to throw a ModelFormatError with exactly `message`. */
function expectModelFormatError(fn: () => unknown, message: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(ModelFormatError);
  expect((caught as Error).message).toBe(message);
}

describe('TextTokenizer (SmolLM2 tokenizer.json + our tokenizer_config.json)', () => {
  it('exposes vocabulary size and the ChatML special ids', () => {
    expect([END_OF_TEXT, IM_START, IM_END]).toEqual([0, 1, 2]);
    expect(tok.vocabSize).toBe(49152);
    expect(tok.bosTokenId).toBe(IM_START);
    expect(tok.eosTokenIds).toEqual([IM_END]);
  });

  it('maps each special token to a single id and back to its text', () => {
    for (const [text, id] of [
      ['<|im_start|>', IM_START],
      ['<|im_end|>', IM_END],
      ['<|endoftext|>', END_OF_TEXT],
    ] as const) {
      expect(tok.encode(text)).toEqual([id]);
      expect(tok.tokenText(id)).toBe(text);
    }
    expect(tok.encode('<|im_start|>user\nhi<|im_end|>')).toEqual([IM_START, vocab('user'), vocab('Ċ'), vocab('hi'), IM_END]);
  });

  it('round-trips text through encode/decode without adding special tokens', () => {
    const samples = [
      'Hello world',
      'Natalia sold clips to 48 of her friends in April.',
      '3141592653 + 2718281828 = 5859874481',
      'héllo wörld — 日本語 🙂 Ωμέγα',
      'a   b\n\n\tc  \n',
      '  leading and trailing  ',
      'a , b . c ! (spaces before punctuation are kept)',
      '#### 42',
      '',
    ];
    for (const s of samples) {
      const ids = tok.encode(s);
      expect(ids).not.toContain(IM_START);
      expect(tok.decode(ids)).toBe(s);
    }
  });

  it('splits digits into single tokens, e.g. "#### 42"', () => {
    expect(tok.encode('#### 42')).toEqual([vocab('####'), vocab('Ġ'), vocab('4'), vocab('2')]);
    expect(tok.tokenText(vocab('####'))).toBe('####');
    expect(tok.tokenText(vocab('Ġworld'))).toBe(' world');
  });

  it('decodes an empty list to "" and rejects ids outside the vocabulary', () => {
    expect(tok.decode([])).toBe('');
    expect(() => tok.decode([49152])).toThrow(new RangeError('token id 49152 is outside the vocabulary [0, 49152)'));
    expect(() => tok.tokenText(-1)).toThrow(RangeError);
  });

  it('tokenizing prompt and response separately differs from tokenizing their concatenation', () => {
    const prompt = 'Question: What is 5 + 7?\nAnswer: '; // ends in a space
    const response = 'The answer is 12.';
    const promptIds = tok.encode(prompt);
    const responseIds = tok.encode(response);
    const joined = tok.encode(prompt + response);
    // Apart, the space is a token of its own ("Ġ") and the response starts with "The"; together BPE merges "ĠThe".
    expect(promptIds.at(-1)).toBe(vocab('Ġ'));
    expect(responseIds[0]).toBe(vocab('The'));
    expect(joined).toContain(vocab('ĠThe'));
    const separate = [...promptIds, ...responseIds]; // what training uses: labels start exactly at the response
    expect(separate).not.toEqual(joined);
    expect(separate.length).toBe(joined.length + 1);
    expect(tok.decode(separate)).toBe(prompt + response);
    expect(tok.decode(joined)).toBe(prompt + response);
  });

  describe('chat template', () => {
    const user: ChatMessage = { role: 'user', content: 'What is 5 + 7?' };

    it('renders system + user with a generation prompt in ChatML', () => {
      const text = tok.applyChatTemplate([{ role: 'system', content: 'Answer briefly.' }, user], { addGenerationPrompt: true });
      expect(text).toBe(
        '<|im_start|>system\nAnswer briefly.<|im_end|>\n' + '<|im_start|>user\nWhat is 5 + 7?<|im_end|>\n' + '<|im_start|>assistant\n',
      );
    });

    it('inserts the default system message when the first message is not a system message', () => {
      const text = tok.applyChatTemplate([user, { role: 'assistant', content: '12' }], { addGenerationPrompt: false });
      expect(text).toBe(
        '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
          '<|im_start|>user\nWhat is 5 + 7?<|im_end|>\n' +
          '<|im_start|>assistant\n12<|im_end|>\n',
      );
    });

    it('encodeChat starts with <|im_start|>, recognises specials as single ids and adds no BOS', () => {
      const ids = tok.encodeChat([user], { addGenerationPrompt: true });
      expect(ids[0]).toBe(IM_START);
      expect(ids[1]).toBe(vocab('system'));
      expect(ids.filter((id) => id === IM_START)).toHaveLength(3);
      expect(ids.filter((id) => id === IM_END)).toHaveLength(2);
      const tail = [IM_START, ...tok.encode('assistant\n')];
      expect(ids.slice(-tail.length)).toEqual(tail);
      expect(tok.decode(ids)).toBe(tok.applyChatTemplate([user], { addGenerationPrompt: true }));
    });

    it('turns raise_exception in the template into a ModelFormatError', () => {
      const tool = { role: 'tool', content: 'x' } as unknown as ChatMessage;
      expectModelFormatError(
        () => tok.applyChatTemplate([user, tool], { addGenerationPrompt: false }),
        'tokenizer_config.json (chat_template): cannot render the messages: chat roles must be system, user or assistant, got tool',
      );
    });

    it('gives the template bos_token and eos_token, and accepts a list of named templates', () => {
      const custom = TextTokenizer.fromJson(tokenizerJson, {
        ...config,
        chat_template: [
          { name: 'tool_use', template: 'unused' },
          { name: 'default', template: '{{ bos_token }}{% for m in messages %}{{ m.content + eos_token }}{% endfor %}' },
        ],
      });
      expect(custom.applyChatTemplate([user], { addGenerationPrompt: false })).toBe('<|im_start|>What is 5 + 7?<|im_end|>');
    });
  });

  describe('configuration errors', () => {
    it('reports a missing chat_template only when a chat is formatted, naming the given file', () => {
      const { chat_template: _unused, ...noTemplate } = config;
      const t = TextTokenizer.fromJson(tokenizerJson, noTemplate, {
        tokenizer: 'models/x/tokenizer.json',
        config: 'models/x/tokenizer_config.json',
      });
      expect(t.encode('hi')).toEqual([vocab('hi')]);
      expectModelFormatError(
        () => t.encodeChat([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }),
        'models/x/tokenizer_config.json (chat_template): missing; this tokenizer has no chat template, so chat messages cannot be formatted',
      );
    });

    it('rejects a missing or unknown eos_token', () => {
      const { eos_token: _unused, ...noEos } = config;
      expectModelFormatError(
        () => TextTokenizer.fromJson(tokenizerJson, noEos),
        'tokenizer_config.json (eos_token): missing; the end-of-sequence token is needed to end examples and stop generation',
      );
      expectModelFormatError(
        () => TextTokenizer.fromJson(tokenizerJson, { ...config, eos_token: '<|nope|>' }),
        'tokenizer_config.json (eos_token): "<|nope|>" is not a token of tokenizer.json',
      );
      expectModelFormatError(
        () => TextTokenizer.fromJson(tokenizerJson, { ...config, bos_token: 7 }),
        'tokenizer_config.json (bos_token): must be a token string or an object with a string "content"',
      );
    });

    it('accepts special tokens stored as AddedToken objects and a null bos_token', () => {
      const t = TextTokenizer.fromJson(tokenizerJson, {
        ...config,
        bos_token: null,
        eos_token: { __type: 'AddedToken', content: '<|endoftext|>', special: true },
      });
      expect(t.bosTokenId).toBeNull();
      expect(t.eosTokenIds).toEqual([END_OF_TEXT]);
    });

    it('rejects malformed files and templates', () => {
      expectModelFormatError(() => TextTokenizer.fromJson([], config), 'tokenizer.json: must be a JSON object');
      const { model: _unused, ...noModel } = tokenizerJson;
      expectModelFormatError(
        () => TextTokenizer.fromJson(noModel, config),
        'tokenizer.json (model): missing; expected the tokenizer model object (e.g. BPE vocab and merges)',
      );
      expectModelFormatError(
        () => TextTokenizer.fromJson({ ...tokenizerJson, added_tokens: {} }, config),
        'tokenizer.json (added_tokens): must be a list',
      );
      expectModelFormatError(() => TextTokenizer.fromJson(tokenizerJson, null), 'tokenizer_config.json: must be a JSON object');
      expectModelFormatError(
        () => TextTokenizer.fromJson(tokenizerJson, { ...config, chat_template: 42 }),
        'tokenizer_config.json (chat_template): must be a Jinja template string',
      );
      expectModelFormatError(
        () => TextTokenizer.fromJson(tokenizerJson, { ...config, chat_template: [{ name: 'rag', template: 'x' }] }),
        'tokenizer_config.json (chat_template): is a list of named templates without one named "default"',
      );
      expect(() => TextTokenizer.fromJson(tokenizerJson, { ...config, chat_template: '{% if %}' })).toThrow(
        /^tokenizer_config\.json \(chat_template\): cannot parse the Jinja template: /,
      );
    });
  });
});
