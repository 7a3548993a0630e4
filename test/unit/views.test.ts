import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseDataset, type DatasetRecord } from '../../src/data/dataset.ts';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { NlftError } from '../../src/errors.ts';
import {
  DEFAULT_TEMPLATES,
  checkTemplates,
  fillTemplate,
  parseTemplates,
  templatePlaceholders,
  type NlftTemplates,
} from '../../src/nlft/templates.ts';
import { TemplateError } from '../../src/errors.ts';
import { buildViews, viewPrompts, viewSequence } from '../../src/nlft/views.ts';
import { DEFAULT_INSTRUCTION, basePrompt, sequenceOf } from '../../src/data/prompt.ts';

const dir = new URL('../../public/tokenizers/smollm2/', import.meta.url);
const tokenizerJson = JSON.parse(readFileSync(new URL('tokenizer.json', dir), 'utf8')) as {
  model: { vocab: Record<string, number> };
};
const tok = TextTokenizer.fromJson(tokenizerJson, JSON.parse(readFileSync(new URL('tokenizer_config.json', dir), 'utf8')));
/** Id of a byte-level BPE vocabulary entry ("Ġ" = space, "Ċ" = newline). */
const vocab = (piece: string): number => tokenizerJson.model.vocab[piece];

const fixtures = new URL('../fixtures/templates/', import.meta.url);
const readFixture = (name: string): unknown => JSON.parse(readFileSync(new URL(name, fixtures), 'utf8'));

/** Records through the real dataset parser. */
function records(values: readonly object[]): DatasetRecord[] {
  return parseDataset(new TextEncoder().encode(JSON.stringify(values)), 'data.json').records;
}

const [negative, positive] = records([
  {
    id: 'pens',
    input: 'A box holds 12 pens. How many pens are in 2 boxes?',
    output: '12 + 2 = 14\n#### 14',
    answer: '2 boxes hold 2 * 12 = <<2*12=24>>24 pens.\n#### 24',
    judgment: 'The response adds the number of boxes instead of multiplying.',
  },
  {
    id: 'apples',
    instruction: 'Solve it and end with #### and the number.',
    input: 'Tom has 3 apples and buys 4 more. How many apples does he have?',
    output: '3 + 4 = 7\n#### 7',
    answer: 'Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7',
    judgment: null,
  },
]);

/** Expects `fn` to throw an instance of `cls` with exactly `message`. */
function expectError(fn: () => unknown, cls: new (...args: never[]) => Error, message: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(cls);
  expect((caught as Error).message).toBe(message);
}

describe('views: prompts', () => {
  it('renders the three views of a negative record through the chat template', () => {
    expect(negative.polarity).toBe('negative');
    const prompts = viewPrompts(tok, negative, DEFAULT_TEMPLATES);
    expect(prompts.base).toBe(
      '<|im_start|>system\n' +
        "Solve the problem step by step. End with the final answer on its own line, as '#### <number>'.<|im_end|>\n" +
        '<|im_start|>user\n' +
        'A box holds 12 pens. How many pens are in 2 boxes?<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
    expect(prompts.standard).toBe(
      '<|im_start|>system\n' +
        'You are an expert at solving problems like this one. You are given a question together with its standard answer. ' +
        'Use the standard answer as your reference and answer the question.<|im_end|>\n' +
        '<|im_start|>user\n' +
        'Question:\n' +
        'A box holds 12 pens. How many pens are in 2 boxes?\n' +
        '\n' +
        'Standard answer:\n' +
        '2 boxes hold 2 * 12 = <<2*12=24>>24 pens.\n' +
        '#### 24<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
    expect(prompts.judge).toBe(
      '<|im_start|>system\n' +
        'You are given a question and a judgment that criticises a response to it. ' +
        'Write a response to the question that has exactly the weaknesses the judgment describes.<|im_end|>\n' +
        '<|im_start|>user\n' +
        'Question:\n' +
        'A box holds 12 pens. How many pens are in 2 boxes?\n' +
        '\n' +
        'Judgment of the response:\n' +
        'The response adds the number of boxes instead of multiplying.<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  it('base view is the SFT base prompt; the record instruction replaces baseSystem', () => {
    expect(DEFAULT_TEMPLATES.baseSystem).toBe(DEFAULT_INSTRUCTION);
    for (const r of [negative, positive]) expect(viewPrompts(tok, r, DEFAULT_TEMPLATES).base).toBe(basePrompt(tok, r));
    const custom: NlftTemplates = { ...DEFAULT_TEMPLATES, baseSystem: 'Be brief {{really}}.' };
    expect(viewPrompts(tok, negative, custom).base).toContain('<|im_start|>system\nBe brief {really}.<|im_end|>');
    expect(viewPrompts(tok, positive, custom).base).toContain('<|im_start|>system\nSolve it and end with #### and the number.<|im_end|>');
  });

  it('a positive record has no judge view', () => {
    expect(positive.polarity).toBe('positive');
    expect(viewPrompts(tok, positive, DEFAULT_TEMPLATES).judge).toBeNull();
    const v = buildViews(tok, positive, DEFAULT_TEMPLATES, { maxLen: 512 });
    expect(v.judge).toBeNull();
    expect(v.standard.length).toBeGreaterThan(0);
    // A judgment overridden by score >= 7 makes the record positive too.
    const [graded] = records([{ input: 'q', output: 'o', answer: 'a', judgment: 'wrong', score: 8 }]);
    expect(buildViews(tok, graded, DEFAULT_TEMPLATES, { maxLen: 512 }).judge).toBeNull();
  });

  it('fills {instruction} with the effective instruction and keeps braces in values literal', () => {
    const t: NlftTemplates = {
      baseSystem: 'Default rules.',
      standard: { system: 'Expert. Task: {instruction}', user: '{input} => {answer} {{not a placeholder}}' },
      judge: { system: 'Task: {instruction}', user: '{input} / {judgment}' },
    };
    const [r] = records([{ input: 'What is {x}?', output: 'o', answer: '{answer}', judgment: 'uses {y}' }]);
    const p = viewPrompts(tok, r, t);
    expect(p.standard).toBe(
      '<|im_start|>system\nExpert. Task: Default rules.<|im_end|>\n<|im_start|>user\nWhat is {x}? => {answer} {not a placeholder}<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(p.judge).toBe(
      '<|im_start|>system\nTask: Default rules.<|im_end|>\n<|im_start|>user\nWhat is {x}? / uses {y}<|im_end|>\n<|im_start|>assistant\n',
    );
  });
});

describe('views: token ids', () => {
  it('every view is its prompt tokenized alone, followed by the same response ids', () => {
    const v = buildViews(tok, negative, DEFAULT_TEMPLATES, { maxLen: 1024 });
    const p = viewPrompts(tok, negative, DEFAULT_TEMPLATES);
    expect(v.base).toEqual(tok.encode(p.base));
    expect(v.standard).toEqual(tok.encode(p.standard));
    expect(v.judge).toEqual(tok.encode(p.judge!));
    expect(v.response).toEqual(tok.encode('12 + 2 = 14\n#### 14'));
    expect(v.truncatedBy).toBe(0);
    const N = v.response.length;
    for (const prompt of [v.base, v.standard, v.judge!]) {
      const s = viewSequence(prompt, v.response);
      expect(s.targets).toEqual(v.response);
      expect(s.ids.slice(prompt.length)).toEqual(v.response.slice(0, -1));
      expect(s.ids.length).toBe(prompt.length + N - 1);
      // Row i is the position that predicts response token i: the one holding the token before it.
      expect(s.rows).toEqual(v.response.map((_, i) => prompt.length - 1 + i));
      expect(s.ids[s.rows[0]]).toBe(prompt[prompt.length - 1]);
      expect(s).toEqual(sequenceOf({ id: '', index: 0, promptIds: prompt, responseIds: v.response, truncatedBy: 0 }));
    }
    // All three prompts end with the same generation prompt, and the three views really differ.
    expect(new Set([v.base.length, v.standard.length, v.judge!.length]).size).toBe(3);
  });

  it('keeps the separately tokenized ids where tokenizing prompt + output as one string would merge them', () => {
    // The assistant header ends with "\n"; a response that starts with a space merges with it
    // into the single BPE token "\n " when prompt and response are tokenized as one string.
    const [r] = records([{ input: 'Tom has 3 apples and buys 4 more. How many?', output: ' 3 + 4 = 7\n#### 7', answer: '#### 7' }]);
    const v = buildViews(tok, r, DEFAULT_TEMPLATES, { maxLen: 1024 });
    const prompt = basePrompt(tok, r);
    const joint = tok.encode(prompt + r.output!);
    const ours = [...v.base, ...v.response];
    expect(v.base.at(-1)).toBe(vocab('Ċ'));
    expect(v.response[0]).toBe(vocab('Ġ'));
    expect(joint[v.base.length - 1]).toBe(vocab('ĊĠ'));
    expect(joint.length).toBe(ours.length - 1);
    expect(joint.slice(0, v.base.length - 1)).toEqual(ours.slice(0, v.base.length - 1));
    expect(joint.slice(v.base.length)).toEqual(v.response.slice(1));
    // Ours: the response is exactly the output's own ids, the same in every view.
    expect(v.response).toEqual(tok.encode(' 3 + 4 = 7\n#### 7'));
    expect(tok.decode(v.response)).toBe(' 3 + 4 = 7\n#### 7');
    for (const prompt of [v.standard, v.judge]) if (prompt) expect(prompt.at(-1)).toBe(vocab('Ċ'));
  });

  it('appendEos adds the end-of-sequence id to the response', () => {
    const v = buildViews(tok, positive, DEFAULT_TEMPLATES, { maxLen: 512, appendEos: true });
    expect(v.response).toEqual([...tok.encode('3 + 4 = 7\n#### 7'), tok.eosTokenIds[0]]);
  });
});

describe('views: truncation and errors', () => {
  const longestPrompt = (v: { base: number[]; standard: number[]; judge: number[] | null }): number =>
    Math.max(v.base.length, v.standard.length, v.judge?.length ?? 0);

  it('cuts the response so that the longest view fits maxLen', () => {
    const whole = buildViews(tok, negative, DEFAULT_TEMPLATES, { maxLen: 1024, appendEos: true });
    const P = longestPrompt(whole);
    expect(P).toBe(whole.standard.length); // the standard prompt (with the answer) is the longest of this record
    const full = whole.response.length;
    expect(full).toBeGreaterThan(3);

    // Just fits: P + N - 1 === maxLen.
    const exact = buildViews(tok, negative, DEFAULT_TEMPLATES, { maxLen: P + full - 1, appendEos: true });
    expect(exact.response).toEqual(whole.response);
    expect(exact.truncatedBy).toBe(0);

    const cut = buildViews(tok, negative, DEFAULT_TEMPLATES, { maxLen: P + 2, appendEos: true });
    expect(cut.response).toEqual(whole.response.slice(0, 3));
    expect(cut.truncatedBy).toBe(full - 3);
    for (const prompt of [cut.base, cut.standard, cut.judge!]) {
      expect(viewSequence(prompt, cut.response).ids.length).toBeLessThanOrEqual(P + 2);
    }
    expect(viewSequence(cut.standard, cut.response).ids.length).toBe(P + 2);

    // A prompt of exactly maxLen tokens leaves room for one response token.
    const one = buildViews(tok, negative, DEFAULT_TEMPLATES, { maxLen: P });
    expect(one.response).toHaveLength(1);
    expect(one.truncatedBy).toBe(tok.encode(negative.output!).length - 1);
  });

  it('refuses a record whose longest prompt leaves no room, naming the record and the view', () => {
    // A long judgment makes the judge prompt the longest.
    const [, judged] = records([
      { input: 'q', output: 'o', answer: 'a' },
      { id: 'long', input: negative.input, output: negative.output, answer: '#### 24', judgment: `${negative.judgment} `.repeat(4) },
    ]);
    const v = buildViews(tok, judged, DEFAULT_TEMPLATES, { maxLen: 1024 });
    const P = v.judge!.length;
    expect(P).toBeGreaterThan(Math.max(v.base.length, v.standard.length));
    expect(buildViews(tok, judged, DEFAULT_TEMPLATES, { maxLen: P }).response).toHaveLength(1);
    expectError(
      () => buildViews(tok, judged, DEFAULT_TEMPLATES, { maxLen: P - 1 }),
      NlftError,
      `record 2 (id long): its judge prompt is ${P} tokens, which leaves no room for a response within --max-len ${P - 1}`,
    );
    // Positive: no judge view, so the standard prompt is the longest.
    const w = buildViews(tok, positive, DEFAULT_TEMPLATES, { maxLen: 1024 });
    expect(w.standard.length).toBeGreaterThan(w.base.length);
    expectError(
      () => buildViews(tok, positive, DEFAULT_TEMPLATES, { maxLen: w.base.length }),
      NlftError,
      `record 2 (id apples): its standard prompt is ${w.standard.length} tokens, which leaves no room for a response within --max-len ${w.base.length}`,
    );
    expect(() => buildViews(tok, positive, DEFAULT_TEMPLATES, { maxLen: 10 })).toThrow(expect.objectContaining({ code: 'too-long' }));
  });

  it('refuses a record without output, naming it', () => {
    const [, r] = records([
      { input: 'q', output: 'o', answer: 'a' },
      { question: 'How many?', answer: '#### 3' },
    ]);
    expect(r.output).toBeNull();
    expectError(
      () => buildViews(tok, r, DEFAULT_TEMPLATES, { maxLen: 512 }),
      NlftError,
      "record 2 (id #2): has no output; NLFT scores the model's own response to each question, so every record needs one (generate the outputs first)",
    );
  });

  it('names the field of a bad template given in code', () => {
    const t: NlftTemplates = { ...DEFAULT_TEMPLATES, judge: { system: 'x', user: '{input} {judgment} {oops}' } };
    expectError(
      () => viewPrompts(tok, negative, t),
      TemplateError,
      '(judge.user): unknown placeholder {oops}; it can use {instruction}, {input}, {answer}, {judgment}',
    );
    // The positive record never renders the judge view.
    expect(viewPrompts(tok, positive, t).judge).toBeNull();
  });
});

describe('templates: fillTemplate', () => {
  it('substitutes placeholders and unescapes doubled braces', () => {
    expect(fillTemplate('Q: {input}\nA: {answer}', { input: 'one', answer: 'two' })).toBe('Q: one\nA: two');
    expect(fillTemplate('{{input}} is {input}; {{}} }}{{', { input: 'x' })).toBe('{input} is x; {} }{');
    expect(fillTemplate('{input}{input}', { input: '{answer}' })).toBe('{answer}{answer}');
    expect(fillTemplate('', {})).toBe('');
    expect(templatePlaceholders('{a} {{b}} {c} {a}')).toEqual(['a', 'c']);
  });

  it('names an unknown placeholder and a stray brace', () => {
    expectError(
      () => fillTemplate('Q: {input} {foo}', { input: 'x', answer: 'y' }),
      TemplateError,
      'unknown placeholder {foo}; it can use {input}, {answer}',
    );
    expectError(() => fillTemplate('{foo}', {}), TemplateError, 'unknown placeholder {foo}; it can use no placeholders');
    expectError(
      () => fillTemplate('set { x }', { input: 'x' }),
      TemplateError,
      '"{" at character 5 ("{ x }") does not start a placeholder like {input}; write "{{" for a literal brace',
    );
    expectError(
      () => fillTemplate('{input', { input: 'x' }),
      TemplateError,
      '"{" at character 1 ("{input") does not start a placeholder like {input}; write "{{" for a literal brace',
    );
    expectError(() => fillTemplate('a}b', {}), TemplateError, '"}" at character 2 closes no placeholder; write "}}" for a literal brace');
  });
});

describe('templates: parseTemplates', () => {
  it('accepts the defaults and a stored full set as they are', () => {
    expect(() => checkTemplates(DEFAULT_TEMPLATES)).not.toThrow();
    expect(parseTemplates({}, 'empty.json')).toEqual(DEFAULT_TEMPLATES);
    const stored = JSON.parse(
      JSON.stringify({
        baseSystem: 'B',
        standard: { system: 'S', user: '{input}|{answer}' },
        judge: { system: 'J {input}', user: '{judgment}' },
      }),
    );
    expect(parseTemplates(stored, 'run.json')).toEqual(stored);
  });

  it('merges a partial file over the defaults', () => {
    const t = parseTemplates(readFixture('partial.json'), 'partial.json');
    expect(t).toEqual({
      baseSystem: DEFAULT_TEMPLATES.baseSystem,
      standard: DEFAULT_TEMPLATES.standard,
      judge: {
        system: 'Answer the question the way the judged response did: make exactly the mistakes the judgment points out.',
        user: DEFAULT_TEMPLATES.judge.user,
      },
    });
    expect(viewPrompts(tok, negative, t).judge).toContain('<|im_start|>system\nAnswer the question the way the judged response did');
    // The defaults are not modified.
    expect(DEFAULT_TEMPLATES.judge.system).toMatch(/^You are given a question and a judgment/);
  });

  it('names the file and field of a value of the wrong type', () => {
    expectError(
      () => parseTemplates(readFixture('bad-field.json'), 'templates.json'),
      TemplateError,
      'templates.json (judge.user): expected a string, found 3',
    );
    expectError(() => parseTemplates({ baseSystem: null }, 't.json'), TemplateError, 't.json (baseSystem): expected a string, found null');
    expectError(
      () => parseTemplates({ standard: 'x' }, 't.json'),
      TemplateError,
      't.json (standard): expected an object with fields "system" and "user", found "x"',
    );
    expectError(
      () => parseTemplates([1], 't.json'),
      TemplateError,
      't.json: expected a JSON object with fields "baseSystem", "standard" and "judge", found [1]',
    );
    expectError(
      () => parseTemplates({ standart: {} }, 't.json'),
      TemplateError,
      't.json (standart): unknown field; expected "baseSystem", "standard" or "judge"',
    );
    expectError(
      () => parseTemplates({ judge: { usr: 'x' } }, 't.json'),
      TemplateError,
      't.json (judge.usr): unknown field; expected "system" or "user"',
    );
  });

  it('refuses a template that lacks a placeholder its view needs', () => {
    expectError(
      () => parseTemplates(readFixture('missing-placeholder.json'), 'missing-placeholder.json'),
      TemplateError,
      'missing-placeholder.json (standard.user): lacks the placeholder {answer}; the standard view must show the standard answer',
    );
    expectError(
      () => parseTemplates({ judge: { user: 'Question: {input}' } }, 't.json'),
      TemplateError,
      't.json (judge.user): lacks the placeholder {judgment}; the judge view must show the judgment',
    );
    expectError(
      () => parseTemplates({ standard: { user: 'Reference: {answer}' } }, 't.json'),
      TemplateError,
      't.json (standard.user): lacks the placeholder {input}, and standard.system has none either; the standard view must show the question',
    );
    // The question may be given in the system text instead.
    const t = parseTemplates({ judge: { system: 'Question: {input}', user: 'Judgment: {judgment}' } }, 't.json');
    expect(t.judge.user).toBe('Judgment: {judgment}');
  });

  it('refuses an unknown placeholder or a stray brace, naming the field', () => {
    expectError(
      () => parseTemplates(readFixture('unknown-placeholder.json'), 'unknown-placeholder.json'),
      TemplateError,
      'unknown-placeholder.json (judge.user): unknown placeholder {critique}; judge.user can use {instruction}, {input}, {answer}, {judgment}',
    );
    expectError(
      () => parseTemplates({ standard: { system: 'Use {judgment}.' } }, 't.json'),
      TemplateError,
      't.json (standard.system): unknown placeholder {judgment}; standard.system can use {instruction}, {input}, {answer}',
    );
    expectError(
      () => parseTemplates({ baseSystem: 'Answer {input}' }, 't.json'),
      TemplateError,
      't.json (baseSystem): unknown placeholder {input}; baseSystem can use no placeholders',
    );
    expectError(
      () => parseTemplates({ standard: { user: '{input} {answer} }' } }, 't.json'),
      TemplateError,
      't.json (standard.user): "}" at character 18 closes no placeholder; write "}}" for a literal brace',
    );
  });
});
