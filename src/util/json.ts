/** Small helpers for validating parsed JSON. */

/** A JSON object (not null, not an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A found JSON value for messages, as JSON cut to 60 characters, or `nothing` when absent; a value
 * JSON cannot write (nested deeper than the stack allows, a BigInt) is named by its type.
 */
export function describeJsonValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    return Array.isArray(v)
      ? 'a list nested too deeply to show'
      : typeof v === 'object'
        ? 'an object nested too deeply to show'
        : `a ${typeof v}`;
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
