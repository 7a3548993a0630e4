/**
 * The layer rule of the source tree: an import may point to its own folder or to a folder of a
 * lower layer, never up and never sideways into another folder of the same layer. The layers,
 * lowest first, are the table below (docs/architecture.md, "Layers", says what each holds).
 * Imports are read with the TypeScript compiler's pre-processor (static, type-only, re-exports and
 * dynamic `import()` alike); `bench/` and `test/` may import anything and are not checked.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/** Folders (or single files) of the tree and their layer; a module belongs to the longest prefix that matches. */
export const LAYERS: Readonly<Record<string, number>> = {
  'src/errors.ts': 0,
  'src/util': 1,
  'src/model': 2,
  'src/data': 2,
  'src/engine': 3,
  'src/export': 3,
  'src/train': 4,
  'src/nlft': 5,
  'src/eval': 5,
  'src/session': 6,
  'src/storage': 7,
  'src/node': 8,
  workers: 8,
  'src/app': 9,
  bin: 10,
};

/** One import that breaks the rule. */
export interface LayerViolation {
  /** The importing file and the imported one, relative to the repository root. */
  from: string;
  to: string;
  message: string;
}

/** The layer entry (a key of `LAYERS`) a repository-relative path belongs to, or null for an unlayered one. */
export function unitOf(file: string): string | null {
  let best: string | null = null;
  for (const key of Object.keys(LAYERS)) {
    if ((file === key || file.startsWith(`${key}/`)) && (best === null || key.length > best.length)) best = key;
  }
  return best;
}

/** The relative imports of a TypeScript source, as written. */
function importsOf(text: string): string[] {
  return ts
    .preProcessFile(text, true, true)
    .importedFiles.map((f) => f.fileName)
    .filter((f) => f.startsWith('.'));
}

/**
 * Checks the given sources (repository-relative path → text) and returns every import that
 * points up or sideways. Imports of non-TypeScript files (kernels as text) are not layered.
 */
export function checkLayers(files: ReadonlyMap<string, string>): LayerViolation[] {
  const out: LayerViolation[] = [];
  for (const [from, text] of files) {
    const fromUnit = unitOf(from);
    if (fromUnit === null) continue;
    for (const spec of importsOf(text)) {
      const to = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec.replace(/\?.*$/, '')));
      if (!to.endsWith('.ts')) continue;
      const toUnit = unitOf(to);
      if (toUnit === null || toUnit === fromUnit) continue;
      const [a, b] = [LAYERS[fromUnit], LAYERS[toUnit]];
      if (b > a) out.push({ from, to, message: `${from} imports ${to}: ${toUnit} (layer ${b}) is above ${fromUnit} (layer ${a})` });
      else if (b === a)
        out.push({ from, to, message: `${from} imports ${to}: ${toUnit} and ${fromUnit} are apart in the same layer ${a}` });
    }
  }
  return out;
}

/** Every `.ts` file under the layered folders of the repository at `root`, with its text. */
export function readLayeredSources(root: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(rel);
      else if (e.name.endsWith('.ts') && unitOf(rel) !== null) files.set(rel, readFileSync(path.join(root, rel), 'utf8'));
    }
  };
  for (const top of ['src', 'workers', 'bin']) walk(top);
  return files;
}
