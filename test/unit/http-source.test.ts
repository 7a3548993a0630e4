/** HttpFolderSource: files fetched once from a folder URL; 404 and a single-page-app's HTML fallback read as missing. */
import { describe, expect, it } from 'vitest';
import { ModelFormatError, NlftError } from '../../src/errors.ts';
import { HttpFolderSource } from '../../src/model/http-source.ts';

/** A fake server: `files` by URL; other URLs answer like vite's preview (index.html with 200) unless `spa` is false. */
function server(files: Record<string, string>, spa = true) {
  const requests: string[] = [];
  const fetchFn = (async (input: RequestInfo | URL) => {
    const url = String(input);
    requests.push(url);
    if (url in files) return new Response(files[url], { status: 200, headers: { 'content-type': 'application/octet-stream' } });
    if (spa) return new Response('<!doctype html><title>app</title>', { status: 200, headers: { 'content-type': 'text/html' } });
    return new Response('not found', { status: 404 });
  }) as typeof fetch;
  return { fetchFn, requests };
}

describe('HttpFolderSource', () => {
  const base = 'http://localhost/toy-math/model/';

  it('reads whole files and ranges, fetching each file once', async () => {
    const { fetchFn, requests } = server({ [`${base}config.json`]: '{"a":1}' });
    const src = new HttpFolderSource(base, 'toy-math', fetchFn);
    expect(await src.size('config.json')).toBe(7);
    expect(new TextDecoder().decode(await src.read('config.json'))).toBe('{"a":1}');
    expect(new TextDecoder().decode(await src.readRange('config.json', 1, 4))).toBe('"a"');
    expect(requests).toEqual([`${base}config.json`]);
    await expect(src.readRange('config.json', 0, 8)).rejects.toThrow(ModelFormatError);
  });

  it('takes a 404, or an HTML page served for a file that is not one, as a missing file', async () => {
    for (const spa of [true, false]) {
      const src = new HttpFolderSource(base, 'toy-math', server({}, spa).fetchFn);
      expect(await src.size('templates.json')).toBeNull();
      await expect(src.read('model.safetensors')).rejects.toThrow(
        `model.safetensors: not found in toy-math (${base}model.safetensors answered 404)`,
      );
    }
  });

  it('names the folder when the server cannot be reached, and keeps names inside the folder', async () => {
    const down = (async () => {
      throw new TypeError('Failed to fetch');
    }) as typeof fetch;
    const src = new HttpFolderSource(base, 'toy-math', down);
    await expect(src.read('config.json')).rejects.toThrow(
      new NlftError(`toy-math: cannot fetch ${base}config.json (Failed to fetch)`, 'fetch'),
    );
    await expect(src.read('../secret.json')).rejects.toThrow(/expected a file name inside toy-math/);
    expect(() => new HttpFolderSource('http://localhost/no-slash', 'x')).toThrow(RangeError);
  });
});
