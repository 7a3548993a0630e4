/**
 * Datasets (docs/method.md §1): UTF-8 bytes holding a JSON array of records or JSON Lines, each record in
 * the NLFT form `{input, output?, answer, judgment?, instruction?, score?, id?}` or GSM8K's
 * `{question, answer}`. Every problem of a file is reported at once, naming the record, its line
 * (JSON Lines) and the field; records are normalised to `DatasetRecord`. Also the final-number rule
 * used to grade responses (docs/method.md §6).
 */
import { DatasetError, type DatasetProblem } from '../errors.ts';
import { describeJsonValue, isRecord } from '../util/json.ts';

/** Largest file `parseDataset` accepts unless told otherwise: 64 MiB. */
export const DEFAULT_MAX_DATASET_BYTES = 64 * 1024 * 1024;

/** A record with `score >= POSITIVE_SCORE` is positive whatever its judgment (docs/method.md §1). */
export const POSITIVE_SCORE = 7;

/** At most this many problems are listed in a `DatasetError` message; the rest are counted. */
const MAX_LISTED_PROBLEMS = 20;

/** positive: trained to be more likely; negative: has a judgment of what is wrong; unknown: no output (not graded yet). */
export type Polarity = 'positive' | 'negative' | 'unknown';

/** A validated, normalised record. */
export interface DatasetRecord {
  /** 1-based position among the file's records: the "record N" of error messages. */
  index: number;
  /** The record's `id` as a string (a number id is written in decimal), else `#<index>`. */
  id: string;
  /** The task instruction (system prompt), or null for the product's default. */
  instruction: string | null;
  /** The question (`input`, or GSM8K's `question`). */
  input: string;
  /** The model's response, or null when there is none yet (blank counts as none). */
  output: string | null;
  /** The standard answer. */
  answer: string;
  /** The critique of `output`, or null when there is none (blank counts as none). */
  judgment: string | null;
  score: number | null;
  polarity: Polarity;
}

export interface DatasetOptions {
  /** Size limit in bytes; default `DEFAULT_MAX_DATASET_BYTES`. */
  maxBytes?: number;
  /** Every record must have an `output` (NLFT training scores it); default false. */
  requireOutput?: boolean;
  /** Called with the records read so far while a big file is parsed (every `PROGRESS_RECORDS`), and with the count at the end. */
  onProgress?: (records: number) => void;
}

/** Records between two `onProgress` calls. */
export const PROGRESS_RECORDS = 10_000;

export interface ParsedDataset {
  records: DatasetRecord[];
  /** `json` when the first non-space character is `[`, else `jsonl`. */
  format: 'json' | 'jsonl';
  /** `gsm8k` when every record uses `question`, `nlft` when every record uses `input`, else `mixed`. */
  kind: 'nlft' | 'gsm8k' | 'mixed';
}

/** A parsed record before validation, with its line in a JSON Lines file. */
interface RawRecord {
  value: unknown;
  line?: number;
}

/**
 * Reads a dataset file. A leading UTF-8 BOM is skipped. Unknown fields of a record are allowed
 * and dropped; `null` is accepted as "absent" for every optional field.
 *
 * @param bytes the file's contents
 * @param fileName names the file in error messages
 * @throws DatasetError when the file is too large, not UTF-8, empty, not JSON / JSON Lines (naming
 *   the line for JSON Lines), or when records are invalid: then every problem of every record is
 *   in `problems`, and the message lists them (the first 20)
 */
export function parseDataset(bytes: Uint8Array, fileName: string, opts: DatasetOptions = {}): ParsedDataset {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_DATASET_BYTES;
  if (bytes.length > maxBytes) {
    throw new DatasetError(fileName, `the file is ${formatSize(bytes.length)}, over the size limit of ${formatSize(maxBytes)}`);
  }
  const text = decodeUtf8(bytes, fileName);
  const start = text.search(/\S/);
  if (start < 0) {
    throw new DatasetError(fileName, 'the file is empty; expected a JSON array of records or JSON Lines (one record per line)');
  }
  const format = text[start] === '[' ? 'json' : 'jsonl';
  const raw = format === 'json' ? readJsonArray(text, fileName) : readJsonLines(text, fileName, opts.onProgress);
  if (raw.length === 0) throw new DatasetError(fileName, 'the JSON array is empty; expected at least one record');

  const problems: DatasetProblem[] = [];
  const records: DatasetRecord[] = [];
  /** Effective id → record number, for duplicates. */
  const ids = new Map<string, number>();
  let gsm8kRecords = 0;
  raw.forEach(({ value, line }, i) => {
    const index = i + 1;
    const report = (field: string, message: string): void => {
      problems.push({ record: index, ...(line !== undefined ? { line } : {}), field, message });
    };
    if (!isRecord(value)) {
      report('', `expected an object, found ${describeJsonValue(value)}`);
      return;
    }
    if (value.question !== undefined) gsm8kRecords++;
    const record = readRecord(value, report, opts.requireOutput ?? false);
    const explicitId = record.id !== null;
    const id = record.id ?? `#${index}`;
    const first = ids.get(id);
    if (first === undefined) ids.set(id, index);
    else if (explicitId) report('id', `duplicate of record ${first} (${JSON.stringify(id)})`);
    else report('id', `missing, and the default id ${JSON.stringify(id)} is already the id of record ${first}`);
    if (record.fields) records.push({ index, id, ...record.fields });
  });
  if (problems.length > 0) throw new DatasetError(fileName, listProblems(problems), problems);
  opts.onProgress?.(records.length);
  const kind = gsm8kRecords === records.length ? 'gsm8k' : gsm8kRecords === 0 ? 'nlft' : 'mixed';
  return { records, format, kind };
}

/* ------------------------------------------------------------------------------------ */
/* Bytes and syntax                                                                     */
/* ------------------------------------------------------------------------------------ */

/** `n` for a message: "N bytes" below 1 KiB, else KiB or MiB with one decimal and the exact count. */
function formatSize(n: number): string {
  if (n < 1024) return `${n} bytes`;
  const [value, unit] = n < 1024 * 1024 ? [n / 1024, 'KiB'] : [n / (1024 * 1024), 'MiB'];
  return `${value.toFixed(1)} ${unit} (${n} bytes)`;
}

/** Decodes UTF-8, skipping a BOM; an invalid sequence is an error naming its byte offset and line. */
function decodeUtf8(bytes: Uint8Array, fileName: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    const offset = invalidUtf8Offset(bytes);
    let line = 1;
    for (let i = 0; i < offset; i++) if (bytes[i] === 0x0a) line++;
    throw new DatasetError(fileName, `not valid UTF-8 at byte offset ${offset} (line ${line}); save the file as UTF-8`);
  }
}

/**
 * Offset of the first byte that starts an invalid UTF-8 sequence (a stray continuation byte, an
 * overlong form, a surrogate, a code point above U+10FFFF, or a sequence cut short), or
 * `bytes.length` when all are valid. The ranges are those of the WHATWG decoder.
 */
function invalidUtf8Offset(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i];
    if (lead < 0x80) {
      i++;
      continue;
    }
    // Continuation count and the allowed range of the first continuation byte.
    let count: number;
    let low = 0x80;
    let high = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) count = 1;
    else if (lead >= 0xe0 && lead <= 0xef) {
      count = 2;
      if (lead === 0xe0) low = 0xa0;
      if (lead === 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      count = 3;
      if (lead === 0xf0) low = 0x90;
      if (lead === 0xf4) high = 0x8f;
    } else return i;
    for (let k = 1; k <= count; k++) {
      const byte = bytes[i + k];
      if (i + k >= bytes.length || byte < (k === 1 ? low : 0x80) || byte > (k === 1 ? high : 0xbf)) return i;
    }
    i += count + 1;
  }
  return bytes.length;
}

/** The elements of a JSON array; a syntax error names its line and column. */
function readJsonArray(text: string, fileName: string): RawRecord[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new DatasetError(fileName, `not valid JSON: ${withLineAndColumn((e as Error).message, text)}`);
  }
  // The text starts with "[", so a successful parse is an array.
  return (value as unknown[]).map((v) => ({ value: v }));
}

/** Adds "(line L, column C)" to a JSON.parse message that gives only a character position (Node 20). */
function withLineAndColumn(message: string, text: string): string {
  const position = /at position (\d+)/.exec(message);
  if (!position || /\bline\b/.test(message)) return message;
  const before = text.slice(0, Number(position[1]));
  const line = before.split('\n').length;
  const column = before.length - before.lastIndexOf('\n');
  return `${message} (line ${line}, column ${column})`;
}

/** One value per non-blank line; the first line that is not valid JSON is an error naming it. */
function readJsonLines(text: string, fileName: string, onProgress?: (records: number) => void): RawRecord[] {
  const records: RawRecord[] = [];
  text.split('\n').forEach((content, i) => {
    if (content.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(content);
    } catch (e) {
      const detail = `line ${i + 1}: not valid JSON (${(e as Error).message}); JSON Lines needs one complete record per line`;
      throw new DatasetError(fileName, detail);
    }
    records.push({ value, line: i + 1 });
    if (records.length % PROGRESS_RECORDS === 0) onProgress?.(records.length);
  });
  return records;
}

/** "N problem(s):" and one indented line per problem, the first `MAX_LISTED_PROBLEMS` of them. */
function listProblems(problems: readonly DatasetProblem[]): string {
  const lines = problems.slice(0, MAX_LISTED_PROBLEMS).map(({ record, line, field, message }) => {
    const where = line !== undefined ? `record ${record} (line ${line})` : `record ${record}`;
    return `  ${where}: ${field ? `field "${field}": ` : ''}${message}`;
  });
  if (problems.length > MAX_LISTED_PROBLEMS) lines.push(`  … and ${problems.length - MAX_LISTED_PROBLEMS} more`);
  return `${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${lines.join('\n')}`;
}

/* ------------------------------------------------------------------------------------ */
/* Records                                                                              */
/* ------------------------------------------------------------------------------------ */

type RecordFields = Omit<DatasetRecord, 'index' | 'id'>;

/** A string with a non-space character. */
function isNonBlank(v: unknown): v is string {
  return typeof v === 'string' && v.trim() !== '';
}

/** A found value for messages; unlike JSON, shows an overflowing number as Infinity. */
function describe(v: unknown): string {
  return typeof v === 'number' ? String(v) : describeJsonValue(v);
}

/**
 * Validates one record object, reporting each problem. Returns its explicit id (null when absent
 * or invalid) and, when it has no problem, its normalised fields.
 */
function readRecord(
  obj: Record<string, unknown>,
  report: (field: string, message: string) => void,
  requireOutput: boolean,
): { id: string | null; fields: RecordFields | null } {
  let problems = 0;
  const fail = (field: string, message: string): void => {
    problems++;
    report(field, message);
  };
  /** A required non-blank string field; "" when it is not one. */
  const required = (field: string): string => {
    const v = obj[field];
    if (isNonBlank(v)) return v;
    fail(field, v === undefined ? 'missing; expected a non-empty string' : `expected a non-empty string, found ${describe(v)}`);
    return '';
  };
  /** An optional field: absent or null → null; otherwise `accept` it or report `expected`. */
  const optional = <T>(field: string, accept: (v: unknown) => v is T, expected: string): T | null => {
    const v = obj[field];
    if (v === undefined || v === null) return null;
    if (accept(v)) return v;
    fail(field, `expected ${expected}, found ${describe(v)}`);
    return null;
  };
  const isString = (v: unknown): v is string => typeof v === 'string';
  const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  const isId = (v: unknown): v is string | number => isNonBlank(v) || isFiniteNumber(v);

  if (obj.question !== undefined && obj.input !== undefined) {
    fail('question', 'given together with "input"; expected one of them (GSM8K "question" or NLFT "input")');
  }
  const input = required(obj.question !== undefined ? 'question' : 'input');
  const output = optional('output', isString, 'a string');
  if (requireOutput && (obj.output === undefined || obj.output === null)) {
    fail('output', "missing; NLFT training needs the model's response (a non-empty string): generate it first");
  } else if (requireOutput && output !== null && !isNonBlank(output)) {
    fail('output', `expected the model's response (a non-empty string), found ${describe(output)}`);
  }
  const answer = required('answer');
  const judgment = optional('judgment', isString, 'a string or null');
  const instruction = optional('instruction', isString, 'a string');
  const score = optional('score', isFiniteNumber, 'a finite number');
  const rawId = optional('id', isId, 'a non-empty string or a number');
  const id = rawId === null ? null : String(rawId);
  if (problems > 0) return { id, fields: null };
  const normalised = {
    instruction,
    input,
    output: isNonBlank(output) ? output : null,
    answer,
    judgment: isNonBlank(judgment) ? judgment : null,
    score,
  };
  return { id, fields: { ...normalised, polarity: polarityOf(normalised) } };
}

/**
 * No output → unknown (nothing graded yet); `score >= 7` → positive, judgment ignored; otherwise a
 * non-blank judgment → negative, none → positive.
 */
function polarityOf(r: Pick<DatasetRecord, 'output' | 'judgment' | 'score'>): Polarity {
  if (r.output === null) return 'unknown';
  if (r.score !== null && r.score >= POSITIVE_SCORE) return 'positive';
  return r.judgment === null ? 'positive' : 'negative';
}

/* ------------------------------------------------------------------------------------ */
/* Final answers (docs/method.md §6)                                                           */
/* ------------------------------------------------------------------------------------ */

/**
 * A number in text: optional minus (not right after a digit, so "5-3" is 5 and 3), an integer part
 * with or without thousands commas ("1,234"), an optional fraction; or a bare fraction (".5").
 */
const NUMBER = /(?<!\d)-?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)/g;

/**
 * The final number of a response or standard answer: the first number after the last "####" on
 * its line when there is one, else the last number in the text; null when there is none.
 * Canonical form, so that equal numbers compare equal as strings: no commas, no leading zeros,
 * no trailing zeros of the fraction (nor a fraction of zeros), no sign on zero.
 * E.g. "#### 1,234" → "1234", "… is 42." → "42", "-3.50" → "-3.5", "3.0" → "3", "-0" → "0".
 */
export function extractFinalNumber(text: string): string | null {
  const marker = text.lastIndexOf('####');
  if (marker >= 0) {
    const [afterMarker] = [
      ...text
        .slice(marker + 4)
        .split('\n')[0]
        .matchAll(NUMBER),
    ];
    if (afterMarker) return canonicalNumber(afterMarker[0]);
  }
  const all = [...text.matchAll(NUMBER)];
  return all.length > 0 ? canonicalNumber(all[all.length - 1][0]) : null;
}

/** Canonical form of a NUMBER match (see extractFinalNumber). */
function canonicalNumber(match: string): string {
  const [intPart, fraction = ''] = match.replace(/[-,]/g, '').split('.');
  const integer = intPart.replace(/^0+(?=\d)/, '') || '0';
  const trimmedFraction = fraction.replace(/0+$/, '');
  const body = trimmedFraction ? `${integer}.${trimmedFraction}` : integer;
  return match.startsWith('-') && body !== '0' ? `-${body}` : body;
}

/** A response graded against the standard answer by their final numbers (wrong when either has none). */
export function gradeAnswer(output: string, answer: string): { expected: string | null; got: string | null; correct: boolean } {
  const expected = extractFinalNumber(answer);
  const got = extractFinalNumber(output);
  return { expected, got, correct: expected !== null && got === expected };
}
