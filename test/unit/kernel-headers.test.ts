/**
 * Every kernel file's header names its CPU reference and its test file, and both exist: each
 * `path.ts name` it cites is a file that exports `name`, each `test/….test.ts` it cites is a file.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const KERNELS = path.join(ROOT, 'kernels');

/** The leading `//` comment block of a WGSL source, as one line of text. */
function header(src: string): string {
  const lines: string[] = [];
  for (const line of src.split('\n')) {
    if (!line.startsWith('//') || line.startsWith('///') || line.startsWith('//#')) break;
    lines.push(line.replace(/^\/\/ ?/, ''));
  }
  return lines.join(' ');
}

/** The `file.ts name` pairs a header cites (a reference function and the module it lives in). */
function citedFunctions(text: string): { file: string; name: string }[] {
  return [...text.matchAll(/\b((?:test|src)\/[\w/.-]+?(?<!\.test)\.ts) (\w+)/g)].map((m) => ({ file: m[1], name: m[2] }));
}

describe('kernel headers', () => {
  const files = readdirSync(KERNELS).filter((f) => f.endsWith('.wgsl'));
  it('finds the kernels', () => expect(files.length).toBeGreaterThan(10));
  for (const f of files) {
    it(f, () => {
      const text = header(readFileSync(path.join(KERNELS, f), 'utf8'));
      const refs = citedFunctions(text);
      const tests = [...text.matchAll(/\btest\/[\w/.-]+\.test\.ts/g)].map((m) => m[0]);
      if (/No CPU reference:/.test(text)) {
        expect(refs).toEqual([]);
        return;
      }
      expect(text, `${f}: no "CPU reference" line`).toMatch(/CPU references?:/);
      expect(refs.length, `${f}: no reference function named`).toBeGreaterThan(0);
      expect(tests.length, `${f}: no test file named`).toBeGreaterThan(0);
      for (const { file, name } of refs) {
        const src = readFileSync(path.join(ROOT, file), 'utf8');
        expect(src, `${f}: ${file} does not export ${name}`).toMatch(new RegExp(`export function ${name}\\b`));
      }
      for (const t of tests) {
        expect(existsSync(path.join(ROOT, t)), `${f}: ${t} does not exist`).toBe(true);
      }
    });
  }
});
