/**
 * Cached saliency scores as plain data (docs/method.md §3.1): a record's view scores
 * (`RecordScores`) written into a score dump — every array as base64 of little-endian f32, exact —
 * and read back with every field checked, so that `nlft score --from` (and the app's explorer)
 * re-classify a dataset under new constants without a model or a GPU.
 */
import { NlftError } from '../errors.ts';
import { describeJsonValue, isRecord } from '../util/json.ts';
import type { DatasetScores, RecordScores, ScoredRecord } from './method.ts';

/** How a dump stores its arrays (the `scoresFormat` field). */
export const SCORES_FORMAT = 'f32le-base64';

/** `RecordScores` as stored in a dump: each array base64 of its little-endian f32 bytes. */
export interface StoredScores {
  logpb: string;
  log1mpb: string;
  logpc: string;
  logpj: string | null;
  hb: string;
  /** A negative's anchor scored for `negatives anchor` (its token ids are the record's `anchor.tokens`). */
  anchor?: { logp: string; log1mq: string };
}

/** Base64 of the little-endian f32 bytes of `a`. */
export function f32ToBase64(a: Float32Array): string {
  const bytes = new Uint8Array(a.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < a.length; i++) view.setFloat32(4 * i, a[i], true);
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

/** The f32 values of base64 little-endian bytes, or null when `text` is not base64 of whole f32 values. */
export function base64ToF32(text: string): Float32Array | null {
  let bin: string;
  try {
    bin = atob(text);
  } catch {
    return null;
  }
  if (bin.length % 4 !== 0) return null;
  const view = new DataView(Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer);
  return Float32Array.from({ length: bin.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

/** A record's scores in their stored form. */
export function storeScores(s: RecordScores): StoredScores {
  return {
    logpb: f32ToBase64(s.logpb),
    log1mpb: f32ToBase64(s.log1mpb),
    logpc: f32ToBase64(s.logpc),
    logpj: s.logpj ? f32ToBase64(s.logpj) : null,
    hb: f32ToBase64(s.hb),
    ...(s.anchor ? { anchor: { logp: f32ToBase64(s.anchor.logp), log1mq: f32ToBase64(s.anchor.log1mq) } } : {}),
  };
}

/** What a dump gives back: the records to classify, their token texts and their scores. */
export interface ReadScoreDump {
  records: ScoredRecord[];
  /** Token text by id, from the dump's tokens (what `classifyScores` labels tokens with). */
  tokenText: (id: number) => string;
  scores: DatasetScores;
}

/**
 * Reads the cached scores of an `nlft score` dump (JSON already parsed; `file` names it).
 *
 * @throws NlftError ('score-dump') naming the record and field at fault and what was expected
 */
export function readScoreDump(dump: unknown, file: string): ReadScoreDump {
  const bad = (where: string, expected: string, found: unknown, said?: string) =>
    new NlftError(`${file}: ${where}: expected ${expected}, found ${said ?? describeJsonValue(found)}`, 'score-dump');
  if (!isRecord(dump)) throw bad('the dump', 'a JSON object written by nlft score', dump);
  if (dump.scoresFormat !== SCORES_FORMAT) {
    throw bad('field "scoresFormat"', `"${SCORES_FORMAT}" (a dump with cached scores: write it again with nlft score)`, dump.scoresFormat);
  }
  const C = dump.hiddenSize;
  if (typeof C !== 'number' || !Number.isInteger(C) || C < 1) throw bad('field "hiddenSize"', 'a positive integer', C);
  if (!Array.isArray(dump.records) || dump.records.length === 0) throw bad('field "records"', 'a non-empty array', dump.records);
  const texts = new Map<number, string>();
  const records: ScoredRecord[] = [];
  const scores: RecordScores[] = [];
  dump.records.forEach((r: unknown, i: number) => {
    const at = `record ${i + 1}`;
    if (!isRecord(r)) throw bad(at, 'an object', r);
    const where = `${at}${typeof r.id === 'string' ? ` (id ${r.id})` : ''}`;
    const field = <T>(name: string, expected: string, ok: (v: unknown) => v is T): T => {
      if (!ok(r[name])) throw bad(`${where}: field "${name}"`, expected, r[name]);
      return r[name] as T;
    };
    const id = field('id', 'a string', (v): v is string => typeof v === 'string');
    const index = field('index', 'a positive integer', (v): v is number => Number.isInteger(v) && (v as number) > 0);
    const polarity = field('polarity', 'positive or negative', (v): v is 'positive' | 'negative' => v === 'positive' || v === 'negative');
    const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x) && x >= 0);
    const responseIds = field('responseIds', 'a non-empty array of token ids', isIds);
    const N = responseIds.length;
    const tokens = field('tokens', `an array of ${N} tokens`, (v): v is unknown[] => Array.isArray(v) && v.length === N);
    tokens.forEach((t, k) => {
      if (!isRecord(t) || typeof t.text !== 'string')
        throw bad(`${where}: field "tokens[${k}].text"`, 'a string', isRecord(t) ? t.text : t);
      texts.set(responseIds[k], t.text);
    });
    const stored = field('scores', 'the cached scores (logpb, log1mpb, logpc, logpj, hb)', isRecord);
    const array = (name: string, length: number, what: string, from: Record<string, unknown> = stored): Float32Array => {
      const v = from[name.replace(/^anchor\./, '')];
      const values = typeof v === 'string' ? base64ToF32(v) : null;
      if (!values || values.length !== length) {
        const said = values ? `${values.length} values` : undefined;
        throw bad(`${where}: field "scores.${name}"`, `base64 of ${length} little-endian f32 values (${what})`, v, said);
      }
      return values;
    };
    // The anchor (negatives anchor): its token ids from the entry's anchor, its scores beside the others.
    const anchorIds = isRecord(r.anchor) && Array.isArray(r.anchor.tokens) ? r.anchor.tokens.map((t) => (isRecord(t) ? t.id : t)) : null;
    if (anchorIds && !isIds(anchorIds)) throw bad(`${where}: field "anchor.tokens"`, 'tokens with ids', r.anchor);
    const storedAnchor = isRecord(stored.anchor) ? stored.anchor : null;
    if ((anchorIds === null) !== (storedAnchor === null))
      throw bad(
        `${where}: field "scores.anchor"`,
        anchorIds ? 'the anchor scores of its anchor tokens' : 'absent (the record has no anchor)',
        stored.anchor,
      );
    const anchorScores =
      anchorIds && storedAnchor
        ? {
            logp: array('anchor.logp', anchorIds.length, `one per anchor token, ${anchorIds.length}`, storedAnchor),
            log1mq: array('anchor.log1mq', anchorIds.length, `one per anchor token, ${anchorIds.length}`, storedAnchor),
          }
        : null;
    const perToken = `one per response token, ${N}`;
    const logpj = polarity === 'negative' ? array('logpj', N, perToken) : null;
    if (polarity === 'positive' && stored.logpj !== null)
      throw bad(`${where}: field "scores.logpj"`, 'null (a positive record)', stored.logpj);
    scores.push({
      logpb: array('logpb', N, perToken),
      log1mpb: array('log1mpb', N, perToken),
      logpc: array('logpc', N, perToken),
      logpj,
      hb: array('hb', N * C, `${N} tokens x hidden size ${C}`),
      anchor: anchorScores,
    });
    const anchor = anchorIds ? { id, index, promptIds: [], responseIds: anchorIds, truncatedBy: 0 } : null;
    records.push({ id, index, polarity, responseIds, ...(anchor ? { anchor } : {}) });
  });
  return { records, tokenText: (id) => texts.get(id) ?? `<${id}>`, scores: { hiddenSize: C, records: scores } };
}
