/**
 * Loading a model from the Hub's URL layout (src/model/hub.ts) against the local mock hub: a
 * sharded BF16 checkpoint loads to the same weights as from its folder, each file is downloaded
 * once and then served from the cache, and missing, gated or unreachable repositories get clear
 * messages naming the repository and file. A folder picked in the browser (File objects) loads
 * like the folder.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PickedFilesSource } from '../../src/model/files-source.ts';
import { hubFileUrl, HubSource, parseHubId } from '../../src/model/hub.ts';
import { loadModelFolder } from '../../src/model/loader.ts';
import { FolderSource } from '../../src/node/fs-source.ts';
import { FolderFileCache } from '../../src/node/hub-cache.ts';
import { makeTmpDir, writeTinyLlamaFolder } from '../fixtures/tiny-llama.ts';
import { startMockHub, type MockHub } from '../helpers/mock-hub.ts';

const TINY = { seed: 3, vocabSize: 300, hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, tie: false };

let hub: MockHub;
let dir: string;
let cacheDir: string;
beforeAll(async () => {
  dir = await makeTmpDir('hub-model');
  await writeTinyLlamaFolder(dir, { ...TINY, dtype: 'BF16', shards: 3 });
  cacheDir = await mkdtemp(path.join(os.tmpdir(), 'nlft-hub-cache-'));
  hub = await startMockHub({ 'test-org/tiny@main': dir, 'test-org/tiny@v1.0': dir, 'test-org/locked@main': dir }, ['test-org/locked']);
});
afterAll(async () => {
  await hub?.close();
  if (cacheDir) await rm(cacheDir, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('hub ids and URLs', () => {
  it('parses org/name with an optional revision', () => {
    expect(parseHubId('HuggingFaceTB/SmolLM2-135M')).toEqual({ repo: 'HuggingFaceTB/SmolLM2-135M', revision: 'main' });
    expect(parseHubId('meta-llama/Llama-3.2-1B@refs/pr/3')).toEqual({ repo: 'meta-llama/Llama-3.2-1B', revision: 'refs/pr/3' });
    for (const bad of ['SmolLM2', './models/x', 'a/b/c', 'a/b@', 'a/../b', 'a/b@../x', '/abs/path'])
      expect(parseHubId(bad), bad).toBeNull();
  });
  it('builds resolve URLs as huggingface.co lays them out', () => {
    expect(hubFileUrl('https://huggingface.co/', { repo: 'org/m', revision: 'refs/pr/3' }, 'model.safetensors')).toBe(
      'https://huggingface.co/org/m/resolve/refs%2Fpr%2F3/model.safetensors',
    );
  });
});

it('a sharded BF16 model loads from the hub to the same weights as from its folder, downloading each file once', async () => {
  const local = await loadModelFolder(new FolderSource(dir));
  const downloads: string[] = [];
  const cache = new FolderFileCache(cacheDir);
  const source = new HubSource(
    { repo: 'test-org/tiny', revision: 'main' },
    { baseUrl: hub.url, cache, onDownload: (f, loaded) => void (loaded === 0 && downloads.push(f)) },
  );
  const progress: number[] = [];
  const remote = await loadModelFolder(source, { onProgress: (done) => progress.push(done) });
  expect(source.label).toBe('hub:test-org/tiny@main');
  expect(remote.config).toEqual(local.config);
  expect(remote.weights).toEqual(local.weights);
  expect(remote.files).toEqual(local.files);
  expect(downloads.filter((f) => f.endsWith('.safetensors')).sort()).toEqual([
    'model-00001-of-00003.safetensors',
    'model-00002-of-00003.safetensors',
    'model-00003-of-00003.safetensors',
  ]);
  for (const [file, n] of hub.gets) expect(n, file).toBe(1); // one request per file, ranges served from memory
  // A second source with the same cache makes no request at all.
  const before = [...hub.gets.values()].reduce((a, b) => a + b, 0);
  const again = await loadModelFolder(new HubSource({ repo: 'test-org/tiny', revision: 'main' }, { baseUrl: hub.url, cache }));
  expect(again.weights).toEqual(local.weights);
  expect([...hub.gets.values()].reduce((a, b) => a + b, 0)).toBe(before);
  // Another revision is another cache entry.
  await loadModelFolder(new HubSource({ repo: 'test-org/tiny', revision: 'v1.0' }, { baseUrl: hub.url, cache }));
  expect(hub.gets.get('test-org/tiny/v1.0/config.json')).toBe(1);
});

describe('errors name the repository and the file', () => {
  it('an unknown repository', async () => {
    await expect(loadModelFolder(new HubSource({ repo: 'test-org/missing', revision: 'main' }, { baseUrl: hub.url }))).rejects.toThrow(
      `config.json: not found in hub:test-org/missing@main (${hub.url}/test-org/missing/resolve/main/config.json answered 404)`,
    );
  });
  it('a gated repository', async () => {
    await expect(loadModelFolder(new HubSource({ repo: 'test-org/locked', revision: 'main' }, { baseUrl: hub.url }))).rejects.toThrow(
      'hub:test-org/locked@main: config.json: HTTP 401 — the repository is gated or private; a token is needed',
    );
  });
  it('an unreachable hub', async () => {
    await expect(
      loadModelFolder(new HubSource({ repo: 'test-org/tiny', revision: 'main' }, { baseUrl: 'http://127.0.0.1:9' })),
    ).rejects.toThrow(
      /^hub:test-org\/tiny@main: cannot reach http:\/\/127\.0\.0\.1:9\/test-org\/tiny\/resolve\/main\/config\.json \(.+\); check the network or the hub URL$/,
    );
  });
  it('a file name that leaves the repository (from a hostile shard index)', async () => {
    await expect(
      new HubSource({ repo: 'test-org/tiny', revision: 'main' }, { baseUrl: hub.url }).read('../other/model.safetensors'),
    ).rejects.toThrow('../other/model.safetensors: expected a file name inside hub:test-org/tiny@main');
  });
});

it('a picked folder (File objects with webkitRelativePath, as a browser gives them) loads like the folder itself', async () => {
  const names = await readdir(dir);
  const files = await Promise.all(
    names.map(async (n) => {
      const f = new File([await readFile(path.join(dir, n))], n);
      Object.defineProperty(f, 'webkitRelativePath', { value: `picked/${n}` });
      return f;
    }),
  );
  const source = new PickedFilesSource(files, 'picked');
  const local = await loadModelFolder(new FolderSource(dir));
  expect((await loadModelFolder(source)).weights).toEqual(local.weights);
  await expect(source.read('tokenizer.json')).rejects.toThrow('tokenizer.json: not found in picked');
  await expect(source.readRange('config.json', 0, 1e9)).rejects.toThrow(
    /^config\.json: file ends at byte \d+, before the requested range \[0, 1000000000\)$/,
  );
});
