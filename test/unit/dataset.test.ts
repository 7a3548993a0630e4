import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  gradeAnswer,
  DEFAULT_MAX_DATASET_BYTES,
  extractFinalNumber,
  parseDataset,
  type DatasetOptions,
  type DatasetRecord,
} from '../../src/data/dataset.ts';
import { DatasetError } from '../../src/errors.ts';
import { datasetSummary } from '../../src/data/summary.ts';
import { TextTokenizer } from '../../src/data/tokenizer.ts';
import { NlftError } from '../../src/errors.ts';

const root = new URL('../../', import.meta.url);
const read = (path: string): Uint8Array => new Uint8Array(readFileSync(new URL(path, root)));
const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
const bytes = (...parts: (string | number[])[]): Uint8Array =>
  new Uint8Array(parts.flatMap((p) => (typeof p === 'string' ? [...utf8(p)] : p)));

/** The DatasetError `fn` throws. */
function datasetError(fn: () => unknown): DatasetError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DatasetError);
    return e as DatasetError;
  }
  throw new Error('expected a DatasetError, nothing was thrown');
}

/** Expects parsing `data` as `file` to fail with exactly `message`. */
function expectFailure(data: Uint8Array, file: string, message: string, opts?: DatasetOptions): DatasetError {
  const error = datasetError(() => parseDataset(data, file, opts));
  expect(error.message).toBe(message);
  return error;
}

/** The message JSON.parse gives for `text`, as this Node version words it. */
function jsonParseMessage(text: string): string {
  try {
    JSON.parse(text);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`${text} is valid JSON`);
}

describe('parseDataset: formats', () => {
  it('reads a JSON array of NLFT records and normalises them', () => {
    const { records, format, kind } = parseDataset(read('test/fixtures/data/nlft-small.json'), 'nlft-small.json');
    expect(format).toBe('json');
    expect(kind).toBe('nlft');
    expect(records[0]).toEqual({
      index: 1,
      id: 'add-1',
      instruction: 'Solve the problem step by step and end with #### and the number.',
      input: 'Tom has 3 apples and buys 4 more. How many apples does he have?',
      output: '3 + 4 = 7\n#### 7',
      answer: 'Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7',
      judgment: null,
      score: null,
      polarity: 'positive',
    } satisfies DatasetRecord);
    expect(records.map((r) => r.id)).toEqual(['add-1', 'add-2', '3', '#4', '#5']);
    expect(records.map((r) => r.index)).toEqual([1, 2, 3, 4, 5]);
  });

  it('normalises polarity: score >= 7 wins over a judgment, blank judgment is none, no output is unknown', () => {
    const { records } = parseDataset(read('test/fixtures/data/nlft-small.json'), 'nlft-small.json');
    const table = records.map(({ score, judgment, output, polarity }) => ({
      score,
      judgment: judgment !== null,
      output: output !== null,
      polarity,
    }));
    expect(table).toEqual([
      { score: null, judgment: false, output: true, polarity: 'positive' }, // judgment null
      { score: 7, judgment: true, output: true, polarity: 'positive' }, // score 7 with a judgment
      { score: 6.9, judgment: true, output: true, polarity: 'negative' }, // score 6.9 with a judgment
      { score: null, judgment: false, output: true, polarity: 'positive' }, // judgment "  "
      { score: null, judgment: false, output: false, polarity: 'unknown' }, // no output
    ]);
  });

  it('normalises the remaining cases: absent, empty and non-empty judgments; blank output; score without output', () => {
    const lines = [
      { input: 'q', output: 'o', answer: 'a' },
      { input: 'q', output: 'o', answer: 'a', judgment: '' },
      { input: 'q', output: 'o', answer: 'a', judgment: 'wrong sum' },
      { input: 'q', output: 'o', answer: 'a', judgment: 'wrong sum', score: 9 },
      { input: 'q', output: ' \n', answer: 'a', judgment: 'wrong sum' },
      { input: 'q', answer: 'a', score: 10 },
      { input: 'q', output: null, answer: 'a', judgment: null, instruction: null, score: null, id: null },
    ];
    const { records } = parseDataset(utf8(lines.map((l) => JSON.stringify(l)).join('\n')), 'table.jsonl');
    expect(records.map((r) => r.polarity)).toEqual(['positive', 'positive', 'negative', 'positive', 'unknown', 'unknown', 'unknown']);
    expect(records[1].judgment).toBeNull();
    expect(records[4].output).toBeNull();
    expect(records[6]).toEqual({
      index: 7,
      id: '#7',
      instruction: null,
      input: 'q',
      output: null,
      answer: 'a',
      judgment: null,
      score: null,
      polarity: 'unknown',
    } satisfies DatasetRecord);
  });

  it('reads GSM8K JSON Lines, mapping question to input', () => {
    const { records, format, kind } = parseDataset(read('public/samples/gsm8k-sample.jsonl'), 'gsm8k-sample.jsonl');
    expect(format).toBe('jsonl');
    expect(kind).toBe('gsm8k');
    expect(records).toHaveLength(20);
    expect(records[0].input).toMatch(/^Janet’s ducks lay 16 eggs per day\./);
    expect(records[0].answer).toMatch(/#### 18$/);
    expect(records.every((r) => r.output === null && r.polarity === 'unknown')).toBe(true);
    expect(records.map((r) => r.id)).toEqual(Array.from({ length: 20 }, (_, i) => `#${i + 1}`));
  });

  it('reads JSON Lines with blank lines and CRLF endings, and tells GSM8K, NLFT and mixed files apart', () => {
    const text = '\r\n{"question": "q1", "answer": "a1"}\r\n\r\n   \n{"input": "q2", "answer": "a2", "extra": [1]}\r\n';
    const { records, format, kind } = parseDataset(utf8(text), 'mixed.jsonl');
    expect([format, kind]).toEqual(['jsonl', 'mixed']);
    expect(records.map((r) => [r.index, r.input, r.answer])).toEqual([
      [1, 'q1', 'a1'],
      [2, 'q2', 'a2'],
    ]);
    expect(parseDataset(utf8('  [{"question": "q", "answer": "a"}]'), 'g.json')).toMatchObject({ format: 'json', kind: 'gsm8k' });
    expect(parseDataset(utf8('{"input": "q", "answer": "a"}'), 'n.jsonl')).toMatchObject({ format: 'jsonl', kind: 'nlft' });
  });

  it('accepts and skips a UTF-8 BOM', () => {
    const { records } = parseDataset(bytes([0xef, 0xbb, 0xbf], '{"input": "caf\u00e9", "answer": "a"}\n'), 'bom.jsonl');
    expect(records[0].input).toBe('café');
    expect(parseDataset(bytes([0xef, 0xbb, 0xbf], '[{"input": "q", "answer": "a"}]'), 'bom.json').format).toBe('json');
  });
});

describe('parseDataset: file errors', () => {
  it('rejects an empty or blank file, also after a BOM', () => {
    const message = 'e.jsonl: the file is empty; expected a JSON array of records or JSON Lines (one record per line)';
    const error = expectFailure(new Uint8Array(0), 'e.jsonl', message);
    expect(error).toBeInstanceOf(NlftError);
    expect(error.code).toBe('dataset');
    expect(error.problems).toEqual([]);
    expectFailure(utf8(' \n\t\r\n'), 'e.jsonl', message);
    expectFailure(bytes([0xef, 0xbb, 0xbf], '\n'), 'e.jsonl', message);
  });

  it('rejects an empty JSON array', () => {
    expectFailure(utf8(' [ ]\n'), 'e.json', 'e.json: the JSON array is empty; expected at least one record');
  });

  it('rejects invalid UTF-8, naming the byte offset and line', () => {
    // Latin-1 "é" (0xE9) followed by an ASCII quote is not a valid sequence.
    const latin1 = bytes('{"input": "q", "answer": "a"}\n{"input": "caf', [0xe9], '", "answer": "a"}\n');
    expectFailure(latin1, 'latin1.jsonl', 'latin1.jsonl: not valid UTF-8 at byte offset 44 (line 2); save the file as UTF-8');
    // Offsets count the BOM; a valid 4-byte emoji before the fault is skipped correctly.
    const cases: [number[], number][] = [
      [[0xc0, 0xaf], 7], // overlong "/"
      [[0xed, 0xa0, 0x80], 7], // UTF-16 surrogate
      [[0xf4, 0x90, 0x80, 0x80], 7], // above U+10FFFF
      [[0x80], 7], // stray continuation byte
      [[0xe2, 0x82], 7], // cut short at the end of the file
    ];
    for (const [bad, offset] of cases) {
      const data = bytes([0xef, 0xbb, 0xbf], '😀', bad);
      expectFailure(data, 'x.jsonl', `x.jsonl: not valid UTF-8 at byte offset ${offset} (line 1); save the file as UTF-8`);
    }
  });

  it('enforces the size limit, giving both sizes', () => {
    const data = utf8(`[${'{"input": "q", "answer": "a"},'.repeat(50)}{"input": "q", "answer": "a"}]`);
    expect(data.length).toBe(1531);
    expectFailure(data, 'big.json', 'big.json: the file is 1.5 KiB (1531 bytes), over the size limit of 1.0 KiB (1024 bytes)', {
      maxBytes: 1024,
    });
    expectFailure(utf8('0123456789a'), 'tiny.jsonl', 'tiny.jsonl: the file is 11 bytes, over the size limit of 10 bytes', { maxBytes: 10 });
    expect(parseDataset(data, 'big.json', { maxBytes: 1531 }).records).toHaveLength(51);
    // The default is 64 MiB, checked before the bytes are decoded.
    expect(DEFAULT_MAX_DATASET_BYTES).toBe(64 * 1024 * 1024);
    expectFailure(
      new Uint8Array(DEFAULT_MAX_DATASET_BYTES + 1),
      'huge.jsonl',
      'huge.jsonl: the file is 64.0 MiB (67108865 bytes), over the size limit of 64.0 MiB (67108864 bytes)',
    );
  });

  it('names the first JSON Lines line that is not valid JSON, with the parser message', () => {
    const bad = '{"input": "q2" "answer": "a2"}';
    const text = `{"input": "q1", "answer": "a1"}\n\n${bad}\n{"input": }\n`;
    expectFailure(
      utf8(text),
      'bad.jsonl',
      `bad.jsonl: line 3: not valid JSON (${jsonParseMessage(bad)}); JSON Lines needs one complete record per line`,
    );
    // A pretty-printed object is JSON Lines to the reader (it does not start with "["), so line 1 fails.
    const pretty = '{\n  "input": "q",\n  "answer": "a"\n}\n';
    expectFailure(
      utf8(pretty),
      'pretty.json',
      `pretty.json: line 1: not valid JSON (${jsonParseMessage('{')}); JSON Lines needs one complete record per line`,
    );
  });

  it('reports a JSON array syntax error with its line and column', () => {
    const text = '[\n  {"input": "q", "answer": "a"},\n  {"input" "q"}\n]';
    const error = datasetError(() => parseDataset(utf8(text), 'bad.json'));
    expect(error.message).toMatch(/^bad\.json: not valid JSON: .*\(line 3,? column 12\)$/);
  });
});

describe('parseDataset: record validation', () => {
  it('reports every problem of every record at once', () => {
    const error = datasetError(() => parseDataset(read('test/fixtures/data/problems.jsonl'), 'problems.jsonl'));
    expect(error.message).toBe(
      [
        'problems.jsonl: 15 problems:',
        '  record 2 (line 2): field "input": missing; expected a non-empty string',
        '  record 3 (line 4): expected an object, found "just a string"',
        '  record 4 (line 5): field "question": given together with "input"; expected one of them (GSM8K "question" or NLFT "input")',
        '  record 5 (line 6): field "output": expected a string, found 12',
        '  record 5 (line 6): field "answer": expected a non-empty string, found ""',
        '  record 6 (line 7): field "judgment": expected a string or null, found false',
        '  record 6 (line 7): field "instruction": expected a string, found 3',
        '  record 6 (line 7): field "score": expected a finite number, found "7"',
        '  record 7 (line 8): field "id": duplicate of record 1 ("q-1")',
        '  record 8 (line 9): field "input": expected a non-empty string, found "  "',
        '  record 8 (line 9): field "id": expected a non-empty string or a number, found true',
        '  record 9 (line 10): expected an object, found [1,2]',
        '  record 10 (line 11): field "score": expected a finite number, found Infinity',
        '  record 10 (line 11): field "id": duplicate of record 2 ("#2")',
        '  record 12 (line 13): field "id": missing, and the default id "#12" is already the id of record 11',
      ].join('\n'),
    );
    expect(error.problems).toHaveLength(15);
    expect(error.problems[0]).toEqual({ record: 2, line: 2, field: 'input', message: 'missing; expected a non-empty string' });
    expect(error.problems[1]).toEqual({ record: 3, line: 4, field: '', message: 'expected an object, found "just a string"' });
  });

  it('names records of a JSON array without lines, and duplicates across string and number ids', () => {
    const records = [{ id: 17, input: 'q', answer: 'a' }, 'text', { id: '17', input: 'q', output: 12, answer: 'a' }];
    expectFailure(
      utf8(JSON.stringify(records)),
      'ids.json',
      [
        'ids.json: 3 problems:',
        '  record 2: expected an object, found "text"',
        '  record 3: field "output": expected a string, found 12',
        '  record 3: field "id": duplicate of record 1 ("17")',
      ].join('\n'),
    );
    expectFailure(
      utf8('[{"input": "q"}]'),
      'one.json',
      'one.json: 1 problem:\n  record 1: field "answer": missing; expected a non-empty string',
    );
  });

  it('requires an output when asked to (NLFT training)', () => {
    const text = [
      '{"input": "q", "output": "o", "answer": "a"}',
      '{"question": "q", "answer": "a"}',
      '{"input": "q", "output": " ", "answer": "a"}',
    ].join('\n');
    expect(parseDataset(utf8(text), 'train.jsonl').records).toHaveLength(3);
    expectFailure(
      utf8(text),
      'train.jsonl',
      [
        'train.jsonl: 2 problems:',
        `  record 2 (line 2): field "output": missing; NLFT training needs the model's response (a non-empty string): generate it first`,
        `  record 3 (line 3): field "output": expected the model's response (a non-empty string), found " "`,
      ].join('\n'),
      { requireOutput: true },
    );
  });

  it('lists at most 20 problems, then counts the rest', () => {
    const text = Array.from({ length: 25 }, () => '{"input": "q"}').join('\n');
    const error = datasetError(() => parseDataset(utf8(text), 'many.jsonl'));
    const lines = error.message.split('\n');
    expect(lines[0]).toBe('many.jsonl: 25 problems:');
    expect(lines).toHaveLength(22);
    expect(lines[20]).toBe('  record 20 (line 20): field "answer": missing; expected a non-empty string');
    expect(lines[21]).toBe('  … and 5 more');
    expect(error.problems).toHaveLength(25);
  });
});

describe('final answers', () => {
  it.each([
    ['#### 1,234', '1234'],
    ['the answer is 42.', '42'],
    ['-3.50', '-3.5'],
    ['It costs $3.0 in total', '3'],
    ['-0', '0'],
    ['-0.00', '0'],
    ['0.50 and then 007', '7'],
    ['half is .5', '0.5'],
    ['He made $70,000 profit.', '70000'],
    ['16 - 3 - 4 = 9 eggs; 5-3', '3'],
    ['from 12,34', '34'],
    ['#### 18\nbut later 99', '18'],
    ['Step 1 gives 10.\n#### The total is 72 dollars\n(check: 70 + 2)', '72'],
    ['5 apples\n####\nno number after the marker, so 6', '6'],
    ['no digits here', null],
    ['', null],
  ])('extractFinalNumber(%j) → %j', (text, expected) => {
    expect(extractFinalNumber(text)).toBe(expected);
  });

  it('gradeAnswer compares final numbers', () => {
    const answer = 'Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18';
    expect(gradeAnswer('She makes $18.00 a day.', answer).correct).toBe(true);
    expect(gradeAnswer('#### 18', answer).correct).toBe(true);
    expect(gradeAnswer('She makes 9 * 2 = 18, minus 2 = 16', answer).correct).toBe(false);
    expect(gradeAnswer('I do not know.', answer).correct).toBe(false);
    expect(gradeAnswer('#### 1,000', '#### 1000').correct).toBe(true);
    expect(gradeAnswer('no number', 'none either').correct).toBe(false);
  });
});

describe('datasetSummary', () => {
  /** A tokenizer with one token per whitespace-separated word. */
  const words = {
    encode: (text: string): number[] =>
      text
        .split(/\s+/)
        .filter(Boolean)
        .map(() => 0),
  };

  it('counts polarities, token percentiles (nearest rank) and truncated records', () => {
    const { records } = parseDataset(read('test/fixtures/data/nlft-small.json'), 'nlft-small.json');
    const summary = datasetSummary(records, words, { maxLen: 22, buildPrompt: (r) => `Q: ${r.input}` });
    // Prompts ("Q:" + the question): 15, 13, 16, 16, 14 words. Responses (the output, or the answer
    // for record 5): 7, 7, 7, 7, 10. Totals: 22, 20, 23, 23, 24, of which three exceed 22.
    expect(summary).toEqual({
      records: 5,
      positives: 3,
      negatives: 1,
      unknown: 1,
      promptTokens: { p50: 15, p90: 16, p99: 16, max: 16 },
      responseTokens: { p50: 7, p90: 10, p99: 10, max: 10 },
      totalTokens: { p50: 23, p90: 24, p99: 24, max: 24 },
      truncated: 3,
    });
  });

  it('gives zeros for no records', () => {
    const zero = { p50: 0, p90: 0, p99: 0, max: 0 };
    expect(datasetSummary([], words, { maxLen: 8, buildPrompt: (r) => r.input })).toEqual({
      records: 0,
      positives: 0,
      negatives: 0,
      unknown: 0,
      promptTokens: zero,
      responseTokens: zero,
      totalTokens: zero,
      truncated: 0,
    });
  });

  it('summarises the GSM8K sample with the SmolLM2 tokenizer and its chat template', () => {
    const dir = new URL('public/tokenizers/smollm2/', root);
    const tok = TextTokenizer.fromJson(
      JSON.parse(readFileSync(new URL('tokenizer.json', dir), 'utf8')),
      JSON.parse(readFileSync(new URL('tokenizer_config.json', dir), 'utf8')),
    );
    const { records } = parseDataset(read('public/samples/gsm8k-sample.jsonl'), 'gsm8k-sample.jsonl');
    const buildPrompt = (r: DatasetRecord): string =>
      tok.applyChatTemplate([{ role: 'user', content: r.input }], { addGenerationPrompt: true });
    const summary = datasetSummary(records, tok, { maxLen: 256, buildPrompt });
    // Pinned: the sample's 20 totals run from 93 to 321 tokens, 7 of them above 256.
    expect(summary).toEqual({
      records: 20,
      positives: 0,
      negatives: 0,
      unknown: 20,
      promptTokens: { p50: 79, p90: 114, p99: 130, max: 130 },
      responseTokens: { p50: 156, p90: 196, p99: 213, max: 213 },
      totalTokens: { p50: 237, p90: 287, p99: 321, max: 321 },
      truncated: 7,
    });
    for (const stats of [summary.promptTokens, summary.responseTokens, summary.totalTokens]) {
      expect(stats.p50).toBeGreaterThan(0);
      expect(stats.p50).toBeLessThanOrEqual(stats.p90);
      expect(stats.p90).toBeLessThanOrEqual(stats.p99);
      expect(stats.p99).toBeLessThanOrEqual(stats.max);
    }
    expect(summary.totalTokens.max).toBeLessThanOrEqual(summary.promptTokens.max + summary.responseTokens.max);
    // The chat template wraps each question in more tokens than the question alone.
    const bare = datasetSummary(records, tok, { maxLen: 1024, buildPrompt: (r) => r.input });
    expect(summary.promptTokens.max).toBeGreaterThan(bare.promptTokens.max);
    expect(summary.responseTokens).toEqual(bare.responseTokens);
    // The first record, counted directly: prompt and answer tokenized separately.
    const first = tok.encode(buildPrompt(records[0])).length + tok.encode(records[0].answer).length;
    expect(datasetSummary(records.slice(0, 1), tok, { maxLen: first, buildPrompt }).truncated).toBe(0);
    expect(datasetSummary(records.slice(0, 1), tok, { maxLen: first - 1, buildPrompt }).truncated).toBe(1);
    // With the median total as maxLen, at most half the records exceed it; with 0, all do.
    const atMedian = datasetSummary(records, tok, { maxLen: summary.totalTokens.p50, buildPrompt }).truncated;
    expect(atMedian).toBeGreaterThan(0);
    expect(atMedian).toBeLessThanOrEqual(10);
    expect(datasetSummary(records, tok, { maxLen: 0, buildPrompt }).truncated).toBe(20);
    expect(datasetSummary(records, tok, { maxLen: summary.totalTokens.max, buildPrompt }).truncated).toBe(0);
  });
});
