import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';

// Comments cite the project's own documents as `docs/<file>.md §N`: each citation must name a
// file of the repository and, when it gives a section, a heading of that file ("## §N …").
const ROOT = path.resolve(import.meta.dirname, '../..');
const sources = execFileSync('git', ['ls-files', 'src', 'workers', 'bin', 'bench', 'test', 'kernels', 'index.html'], {
  cwd: ROOT,
  encoding: 'utf8',
})
  .split('\n')
  .filter((f) => /\.(ts|wgsl|html)$/.test(f) && existsSync(path.join(ROOT, f)));

/** The section numbers (e.g. "3", "3b", "6.3") of a Markdown file's headings. */
function sectionsOf(file: string): Set<string> {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  return new Set([...text.matchAll(/^#{1,4} §([0-9]+[a-z]?(?:\.[0-9]+)?)\b/gm)].map((m) => m[1]));
}

it('every § citation in the code resolves to a section of a document in the repository', () => {
  const problems: string[] = [];
  let cited = 0;
  for (const f of sources) {
    const text = readFileSync(path.join(ROOT, f), 'utf8');
    for (const m of text.matchAll(/(\S*?)\b((?:nlft|architecture|method)\.md)( §[0-9][0-9a-z.]*)?/g)) {
      if (f === 'test/unit/citations.test.ts') continue;
      const doc = `${m[1]}${m[2]}`.replace(/^.*?(docs\/)/, '$1').replace(/^[`(]+/, '');
      cited++;
      if (!doc.startsWith('docs/') || !existsSync(path.join(ROOT, doc))) {
        problems.push(`${f}: cites ${doc}, which is not a file of the repository's docs/`);
        continue;
      }
      const section = m[3]
        ?.trim()
        .slice(1)
        .replace(/[.–]+$/, '');
      if (section && !sectionsOf(doc).has(section)) problems.push(`${f}: cites ${doc} §${section}, which has no such section`);
    }
  }
  expect(problems).toEqual([]);
  expect(cited).toBeGreaterThan(20);
});
