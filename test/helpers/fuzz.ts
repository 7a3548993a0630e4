/**
 * The one seeded property-based harness for every parser of outside bytes (issue 13, part 1).
 *
 * A target gives a generator of valid inputs and the parser; the harness feeds the parser
 * `cases` inputs, each a valid one changed by a seeded mutator: truncated, bits flipped, a 32- or
 * 64-bit field overwritten with a huge, small or random value, invalid UTF-8 spliced in, a span
 * duplicated, or (for JSON) a node of the parsed tree replaced by a value of another type, a huge
 * number, a long string, a long array or a 10 000-deep nesting, a field removed or a `__proto__`
 * key added, then written back (and sometimes byte-mutated too). Every case must end in a parse
 * or the parser's typed error (an `NlftError`, non-empty message), nothing else; no case may run
 * longer than `CASE_TIME_BOUND_MS` (a hang detector, not a speed check) or leave more than
 * `allocFactor` bytes of new ArrayBuffer memory per input byte (plus 64 KiB) alive when it returns.
 */
import { NlftError } from '../../src/errors.ts';
import { ModelFormatError } from '../../src/errors.ts';
import type { FileSource } from '../../src/model/source.ts';
import { Rng } from '../../src/util/rng.ts';

/** No single case may take longer: far above any real parse of these small inputs, so only a hang trips it. */
export const CASE_TIME_BOUND_MS = 5000;

/** Slack of the allocation bound: V8 keeps small ArrayBuffers and pools of its own. */
const ALLOC_SLACK_BYTES = 64 * 1024;

/** How deep the "deep nesting" mutation nests. */
const DEEP_NESTING = 10_000;

/** A list nested `DEEP_NESTING` deep, as JSON text (JSON.parse reads it; V8's stringify and structuredClone overflow). */
const DEEP_TEXT = `${'['.repeat(DEEP_NESTING)}1${']'.repeat(DEEP_NESTING)}`;

/** Stands for a deep nesting in a tree until it is written as JSON text. */
const DEEP_MARK = '\u0001deep nesting\u0001';

/** What a fuzzed parser did over all cases. */
export interface FuzzOutcomes {
  cases: number;
  /** Parsed without error. */
  ok: number;
  /** Refused with the parser's typed error. */
  refused: number;
  /** The largest ArrayBuffer growth a case left, per byte of its input. */
  maxAllocPerByte: number;
  /** The slowest case. */
  slowestMs: number;
}

/** A parser under test. */
export interface FuzzTarget<T> {
  /** Names the parser in failures and in the summary line. */
  name: string;
  seed: number;
  cases: number;
  /** A fresh valid input. */
  valid(rng: Rng): T;
  /** A mutated copy of `input` (see `mutateBytes`, `mutateJsonText`, `mutateValue`). */
  mutate(input: T, rng: Rng): T;
  /** Runs the parser (and whatever reads its result) on one input. */
  parse(input: T): unknown;
  /** The input's size in bytes, for the allocation bound. */
  size(input: T): number;
  /** Bytes of new ArrayBuffer memory a case may keep per input byte; default 8. */
  allocFactor?: number;
  /** The text every refusal's message must contain (the file name), when the parser names one. */
  mentions?: string;
}

/**
 * Runs `target` over `target.cases` seeded cases (about one in ten the unmutated valid input) and
 * fails on the first case whose outcome is not allowed, naming it (case index and seed) so it can
 * be replayed. Returns the counts and prints them as one line (the README's figures).
 */
export async function fuzz<T>(target: FuzzTarget<T>): Promise<FuzzOutcomes> {
  const rng = new Rng(target.seed);
  const outcomes: FuzzOutcomes = { cases: 0, ok: 0, refused: 0, maxAllocPerByte: 0, slowestMs: 0 };
  const allocFactor = target.allocFactor ?? 8;
  const held: unknown[] = [];
  // Warm-up, not counted: lazily built tables and caches of the parser are not the input's doing.
  for (let i = 0; i < 20; i++) {
    try {
      await target.parse(target.valid(rng));
    } catch {}
  }
  let base = target.valid(rng);
  for (let i = 0; i < target.cases; i++) {
    if (i % 50 === 0) base = target.valid(rng);
    const input = rng.int(10) === 0 ? base : target.mutate(base, rng);
    const where = `${target.name}: case ${i} (seed ${target.seed})`;
    const size = Math.max(1, target.size(input));
    const before = process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    try {
      held[0] = await target.parse(input);
      outcomes.ok++;
    } catch (e) {
      if (!(e instanceof NlftError)) throw new Error(`${where}: threw ${String(e)}, not an NlftError`, { cause: e });
      if (e.message.trim() === '') throw new Error(`${where}: ${e.name} with an empty message`);
      if (target.mentions && !e.message.includes(target.mentions)) {
        throw new Error(`${where}: the message does not name ${target.mentions}: ${e.message}`);
      }
      outcomes.refused++;
    }
    const ms = performance.now() - t0;
    const grown = process.memoryUsage().arrayBuffers - before;
    held.length = 0; // the parse result counted above: it is what the parser allocated
    if (ms > CASE_TIME_BOUND_MS) throw new Error(`${where}: took ${ms.toFixed(0)} ms (bound ${CASE_TIME_BOUND_MS} ms)`);
    if (grown > allocFactor * size + ALLOC_SLACK_BYTES) {
      throw new Error(`${where}: kept ${grown} bytes of ArrayBuffers for a ${size}-byte input (bound ${allocFactor} per byte + 64 KiB)`);
    }
    outcomes.cases++;
    outcomes.maxAllocPerByte = Math.max(outcomes.maxAllocPerByte, grown / size);
    outcomes.slowestMs = Math.max(outcomes.slowestMs, ms);
  }
  console.log(
    `fuzz ${target.name}: ${outcomes.cases} cases, ${outcomes.ok} parsed, ${outcomes.refused} refused with a typed error; ` +
      `slowest ${outcomes.slowestMs.toFixed(1)} ms`,
  );
  return outcomes;
}

/* ------------------------------------------------------------------------------------ */
/* Byte mutations                                                                       */
/* ------------------------------------------------------------------------------------ */

/** Invalid or tricky UTF-8: a stray continuation, an overlong '/', a surrogate, a cut 3-byte sequence, U+110000, 0xFF. */
const BAD_UTF8 = [[0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80], [0xff]];

/** Values a length, count, offset or type field overwritten by a mutation takes. */
const HUGE_U64 = [2n ** 64n - 1n, 2n ** 63n, 2n ** 53n + 1n, 2n ** 32n, 10n ** 12n];
const ODD_U32 = [0, 1, 7, 31, 2 ** 31, 2 ** 32 - 1];

/**
 * A mutated copy of `bytes`: truncated, 1–4 bits flipped, a u64 or u32 overwritten (huge, small,
 * random or about the file's size), invalid UTF-8 spliced in, or a span duplicated.
 */
export function mutateBytes(bytes: Uint8Array, rng: Rng): Uint8Array {
  const kind = rng.int(7);
  if (kind === 0 || bytes.length < 9) return bytes.subarray(0, rng.int(bytes.length + 1));
  const at = rng.int(bytes.length - 8);
  if (kind === 5) {
    const bad = BAD_UTF8[rng.int(BAD_UTF8.length)];
    return concat(bytes.subarray(0, at), Uint8Array.from(bad), bytes.subarray(at + rng.int(2)));
  }
  if (kind === 6) {
    const end = at + rng.int(Math.min(64, bytes.length - at));
    return concat(bytes.subarray(0, end), bytes.subarray(at, end), bytes.subarray(end));
  }
  const out = bytes.slice();
  const view = new DataView(out.buffer);
  if (kind === 1) for (let i = 0; i <= rng.int(4); i++) out[rng.int(out.length)] ^= 1 << rng.int(8);
  if (kind === 2) view.setBigUint64(at, HUGE_U64[rng.int(HUGE_U64.length)], true);
  if (kind === 3) view.setUint32(at, ODD_U32[rng.int(ODD_U32.length)], true);
  if (kind === 4) view.setBigUint64(at, BigInt(rng.int(out.length * 2)), true);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/* ------------------------------------------------------------------------------------ */
/* JSON mutations                                                                       */
/* ------------------------------------------------------------------------------------ */

/** Replacement values: every JSON type, edge numbers, a long string, a long array, deep nesting (`DEEP_MARK` in text). */
function oddValue(rng: Rng, text: boolean): unknown {
  const pick = rng.int(12);
  if (pick === 0) return null;
  if (pick === 1) return rng.int(2) === 1;
  if (pick === 2) return [-1, 0, 0.5, 1e308, -1e308, 2 ** 53 + 2, 1e-320, 4096][rng.int(8)];
  if (pick === 3) return '';
  if (pick === 4) return 'x'.repeat(1 + rng.int(5000));
  if (pick === 5) return Array.from({ length: rng.int(3000) }, (_, i) => i);
  if (pick === 6) return {};
  if (pick === 7) return [];
  if (pick === 8) return { __proto__: null, nested: { a: [1, 'b'] } };
  if (pick === 9) return '\u0000\ud800€';
  if (pick === 10) return ['a', 1, null];
  return text ? DEEP_MARK : JSON.parse(DEEP_TEXT);
}

/** The containers of a JSON tree (objects and arrays), depth first, with typed arrays as leaves. */
function containers(v: unknown, out: (Record<string, unknown> | unknown[])[] = []): (Record<string, unknown> | unknown[])[] {
  if (typeof v !== 'object' || v === null || ArrayBuffer.isView(v)) return out;
  const c = v as Record<string, unknown> | unknown[];
  out.push(c);
  for (const child of Object.values(c)) containers(child, out);
  return out;
}

/**
 * A mutated deep copy of a structured value (what `JSON.parse` or IndexedDB gives): one to three
 * times, a random container gets a field or item replaced by an odd value, removed, or added
 * (`__proto__` among the added keys); typed arrays may be cut short. With `text`, a deep nesting is
 * left as `DEEP_MARK` for `mutateJsonText` to write.
 */
export function mutateValue<T>(value: T, rng: Rng, text = false): T {
  const copy = structuredClone(value) as unknown;
  const nodes = containers(copy);
  for (let n = 0; n <= rng.int(3) && nodes.length; n++) {
    const node = nodes[rng.int(nodes.length)];
    const keys = Object.keys(node);
    const kind = rng.int(4);
    if (kind === 0 || keys.length === 0) {
      const key = Array.isArray(node) ? String(node.length) : ['__proto__', 'constructor', 'extra', ''][rng.int(4)];
      Object.defineProperty(node, key, { value: oddValue(rng, text), enumerable: true, configurable: true, writable: true });
      continue;
    }
    const key = keys[rng.int(keys.length)];
    const slot = node as Record<string, unknown>;
    const old = slot[key];
    if (kind === 1) delete slot[key];
    else if (kind === 2 && ArrayBuffer.isView(old)) slot[key] = (old as Float32Array).subarray(0, rng.int((old as Float32Array).length));
    else slot[key] = oddValue(rng, text);
  }
  return copy as T;
}

/**
 * A mutated JSON text: two times in three, a tree mutation (`mutateValue`) written back; else, or
 * in addition one time in three, a byte mutation of the UTF-8 text.
 */
export function mutateJsonText(text: string, rng: Rng): Uint8Array {
  let bytes: Uint8Array = new TextEncoder().encode(text);
  const tree = rng.int(3) !== 0;
  if (tree)
    bytes = new TextEncoder().encode(
      JSON.stringify(mutateValue(JSON.parse(text), rng, true)).replaceAll(JSON.stringify(DEEP_MARK), DEEP_TEXT),
    );
  if (!tree || rng.int(3) === 0) bytes = mutateBytes(bytes, rng);
  return bytes;
}

/* ------------------------------------------------------------------------------------ */
/* Files                                                                                */
/* ------------------------------------------------------------------------------------ */

/** An in-memory folder; reading past a file's end is an error (the parsers must check sizes first); every read is recorded. */
export class MemorySource implements FileSource {
  readonly label = 'memory';
  /** [file, start, end] of every range read, in order. */
  readonly reads: [string, number, number][] = [];
  constructor(private readonly files: Record<string, Uint8Array>) {}
  async size(name: string): Promise<number | null> {
    return this.files[name]?.length ?? null;
  }
  async readRange(name: string, start: number, end: number): Promise<Uint8Array> {
    const file = this.files[name];
    if (file === undefined) throw new ModelFormatError(name, undefined, 'not found in memory');
    if (!(0 <= start && start <= end && end <= file.length))
      throw new Error(`read [${start}, ${end}) outside ${name} (${file.length} bytes)`);
    this.reads.push([name, start, end]);
    return file.subarray(start, end);
  }
  async read(name: string): Promise<Uint8Array> {
    return this.readRange(name, 0, (await this.size(name)) ?? 0);
  }
}

/** Mutates one file of a folder (picked at random) with `mutateBytes`, or `mutateJsonText` for a .json file. */
export function mutateFolder(files: Record<string, Uint8Array>, rng: Rng): Record<string, Uint8Array> {
  const names = Object.keys(files);
  const name = names[rng.int(names.length)];
  const file = files[name];
  const mutated = name.endsWith('.json') ? mutateJsonText(new TextDecoder().decode(file), rng) : mutateBytes(file, rng);
  return { ...files, [name]: mutated };
}

/** Total bytes of a folder. */
export function folderSize(files: Record<string, Uint8Array>): number {
  return Object.values(files).reduce((n, f) => n + f.length, 0);
}

/** About the bytes a structured value takes as JSON (typed arrays by their byte length), counted without recursion. */
export function valueSize(value: unknown): number {
  let size = 0;
  const stack = [value];
  while (stack.length) {
    const v = stack.pop();
    if (typeof v === 'string') size += v.length + 2;
    else if (ArrayBuffer.isView(v)) size += v.byteLength;
    else if (typeof v === 'object' && v !== null) {
      size += 2;
      for (const [key, child] of Object.entries(v)) {
        size += key.length + 3;
        stack.push(child);
      }
    } else size += 8;
  }
  return size;
}
