/** Command-line option parsing with clear messages (node:util parseArgs, strict); bin/nlft.ts prefixes the command. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../../errors.ts';
import { isQuantFormat, QUANT_FORMATS, type QuantFormat } from '../../model/quant.ts';

export type Options = NonNullable<ParseArgsConfig['options']>;

export function parse(argv: string[], options: Options): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    throw new UsageError(`${(e as Error).message}`);
  }
}

export function required(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

export function quantOption(v: unknown): QuantFormat {
  const q = v ?? 'q8';
  if (!isQuantFormat(q))
    throw new UsageError(`--quant must be ${QUANT_FORMATS.slice(0, -1).join(', ')} or ${QUANT_FORMATS.at(-1)} (got "${q}")`);
  return q;
}

/** A numeric option: absent → `fallback`; otherwise a finite number satisfying `ok`, else a usage error. */
export function numberOption(
  values: Record<string, unknown>,
  name: string,
  fallback: number,
  ok: (v: number) => boolean,
  expected: string,
): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(v) || !ok(v))
    throw new UsageError(`--${name} must be ${expected} (got "${String(raw)}")`);
  return v;
}

/**
 * An option's value as the session's rules (src/session/options.ts) take it: a number when the text
 * is one, else the text itself (so a message shows what was typed), or undefined when absent.
 */
export function rawOption(values: Record<string, unknown>, name: string): unknown {
  const v = values[name];
  if (typeof v !== 'string') return v;
  const n = Number(v);
  return v.trim() !== '' && Number.isFinite(n) ? n : v;
}

export const isPositiveInt = (v: number) => Number.isInteger(v) && v > 0;
