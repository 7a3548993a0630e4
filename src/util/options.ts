/**
 * Option rules: what a valid value of a named option is, in words and as a test, and the one
 * message a bad value gets, `<option>: expected <what>, found <value>`. The rules of an option live
 * beside what it controls (NLFT's constants in src/nlft/saliency.ts, a training run's in
 * src/session/options.ts); every host checks through them, so a bad value reads the same in a
 * terminal and in the page.
 */
import { UsageError } from '../errors.ts';
import { describeJsonValue } from './json.ts';

/** One option's rule. */
export interface OptionRule {
  expected: string;
  ok: (v: unknown) => boolean;
}

/** A rule test on finite numbers. */
export const finiteNumber = (test: (v: number) => boolean) => (v: unknown) => typeof v === 'number' && Number.isFinite(v) && test(v);
export const isPositive = finiteNumber((v) => v > 0);
export const isPositiveInt = finiteNumber((v) => Number.isInteger(v) && v > 0);
export const isNonNegative = finiteNumber((v) => v >= 0);
export const isOneOf =
  (...values: readonly string[]) =>
  (v: unknown) =>
    typeof v === 'string' && values.includes(v);
export const isBoolean = (v: unknown) => typeof v === 'boolean';

/** A value as messages show it: numbers as JavaScript prints them (NaN, Infinity), the rest as JSON. */
function shown(v: unknown): string {
  return typeof v === 'number' ? String(v) : describeJsonValue(v);
}

/**
 * Checks `value` against the rule of option `name`.
 *
 * @throws UsageError `<name>: expected <what>, found <value>`
 */
export function checkRule(name: string, rule: OptionRule, value: unknown): void {
  if (!rule.ok(value)) throw new UsageError(`${name}: expected ${rule.expected}, found ${shown(value)}`);
}
