/** The host gate: own origin always, chosen hosts only while a call that chose them runs, redirects checked. */
import { describe, expect, it } from 'vitest';
import { HostNotChosenError, NlftError } from '../../src/errors.ts';
import { chatJudge } from '../../src/eval/judge.ts';
import { HubSource, hubHosts } from '../../src/model/hub.ts';
import { HostGate } from '../../src/util/net.ts';

const APP = 'http://localhost:5173/index.html';

/** A fake network: answers every URL with `body`, or as redirected to `redirects[url]`; records what was sent. */
function network(redirects: Record<string, string> = {}) {
  const sent: string[] = [];
  const cancelled: string[] = [];
  const send = (async (input: RequestInfo | URL) => {
    const url = String(input);
    sent.push(url);
    const final = redirects[url];
    const res = new Response(
      new ReadableStream({
        start: (c) => c.enqueue(new TextEncoder().encode('{}')),
        cancel: () => void cancelled.push(url),
      }),
    );
    if (final) Object.defineProperties(res, { redirected: { value: true }, url: { value: final } });
    return res;
  }) as typeof fetch;
  return { send, sent, cancelled };
}

/** The error a promise rejects with. */
async function refusal(p: Promise<unknown>): Promise<NlftError> {
  const e = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(e).toBeInstanceOf(NlftError);
  return e as NlftError;
}

describe('HostGate', () => {
  it('lets requests go to its own origin (relative URLs too) and refuses any other host before sending, naming it and what is allowed', async () => {
    const net = network();
    const gate = new HostGate(APP, net.send);
    await gate.fetch('/samples/a.json');
    await gate.fetch('http://localhost:5173/toy-math/model/config.json');
    const e = await refusal(gate.fetch('https://telemetry.example.com/ping'));
    expect(e).toBeInstanceOf(HostNotChosenError);
    expect(e.code).toBe('host-not-chosen');
    expect(e.message).toBe(
      'https://telemetry.example.com/ping: not a host you chose; this app sends requests only to http://localhost:5173 (this app)',
    );
    // Same host, another port or scheme: another origin.
    await refusal(gate.fetch('http://localhost:8080/x'));
    await refusal(gate.fetch('https://localhost:5173/x'));
    await refusal(gate.fetch('data:text/plain,x'));
    expect(net.sent).toEqual(['/samples/a.json', 'http://localhost:5173/toy-math/model/config.json']);
  });

  it('allows a chosen host only while a call that chose it runs, overlapping calls included, and also after a failed call ends', async () => {
    const net = network();
    const gate = new HostGate(APP, net.send);
    const hub = { url: 'http://127.0.0.1:4000/', chosenAs: 'the Hub URL' };
    let release!: () => void;
    const held = new Promise<void>((ok) => (release = ok));
    const first = gate.during([hub], async () => {
      await gate.fetch('http://127.0.0.1:4000/org/m/resolve/main/config.json');
      await held;
    });
    await gate.during([hub], async () => {
      expect(gate.describe()).toBe('http://localhost:5173 (this app), http://127.0.0.1:4000 (the Hub URL)');
    });
    expect(gate.allows('http://127.0.0.1:4000/x')).toBe(true); // the first call still runs
    release();
    await first;
    expect(gate.allows('http://127.0.0.1:4000/x')).toBe(false);
    await expect(gate.during([hub], () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(gate.allows('http://127.0.0.1:4000/x')).toBe(false);
    expect(gate.describe()).toBe('http://localhost:5173 (this app)');
    // A choice that is not an http(s) address allows nothing.
    await gate.during(
      [
        { url: '', chosenAs: 'the judge endpoint' },
        { url: 'ftp://x.org', chosenAs: 'the judge endpoint' },
      ],
      async () => {
        expect(gate.describe()).toBe('http://localhost:5173 (this app)');
      },
    );
  });

  it('allows https subdomains only when the choice says so', async () => {
    const gate = new HostGate(APP, network().send);
    await gate.during([{ url: 'https://hub.example.org', chosenAs: 'the Hub URL', subdomains: true }], async () => {
      expect(gate.allows('https://cdn.hub.example.org/f')).toBe(true);
      expect(gate.allows('http://cdn.hub.example.org/f')).toBe(false);
      expect(gate.allows('https://evilhub.example.org/f')).toBe(false);
      expect(gate.allows('https://example.org/f')).toBe(false);
    });
    await gate.during([{ url: 'https://hub.example.org', chosenAs: 'the Hub URL' }], async () => {
      expect(gate.allows('https://cdn.hub.example.org/f')).toBe(false);
    });
  });

  it('refuses a response redirected to a host not chosen, leaving its body unread', async () => {
    const from = 'http://127.0.0.1:4000/org/m/resolve/main/model.safetensors';
    const net = network({ [from]: 'http://127.0.0.1:5000/cdn/model.safetensors' });
    const gate = new HostGate(APP, net.send);
    const e = await refusal(gate.during([{ url: 'http://127.0.0.1:4000', chosenAs: 'the Hub URL' }], () => gate.fetch(from)));
    expect(e.message).toBe(
      `${from} redirected to http://127.0.0.1:5000/cdn/model.safetensors, not a host you chose (its answer was not used); ` +
        'this app sends requests only to http://localhost:5173 (this app), http://127.0.0.1:4000 (the Hub URL)',
    );
    expect(net.cancelled).toEqual([from]);
  });

  it("lets the default Hub reach huggingface.co, its subdomains and hf.co's file servers, and nothing else", async () => {
    const gate = new HostGate(APP, network().send);
    await gate.during(hubHosts(''), async () => {
      for (const ok of [
        'https://huggingface.co/org/m/resolve/main/config.json',
        'https://cdn-lfs.huggingface.co/x',
        'https://cdn-lfs.hf.co/x',
        'https://cas-bridge.xethub.hf.co/x',
      ])
        expect(gate.allows(ok), ok).toBe(true);
      for (const no of ['http://huggingface.co/x', 'https://hf.co.evil.com/x', 'https://nothuggingface.co/x'])
        expect(gate.allows(no), no).toBe(false);
    });
    expect(hubHosts('http://127.0.0.1:4000')).toEqual([{ url: 'http://127.0.0.1:4000', chosenAs: 'the Hub URL', subdomains: false }]);
  });

  it('reaches the Hub and judge readers: a refusal keeps its message (a judge failure, so prepared records are kept)', async () => {
    const gate = new HostGate(APP, network().send);
    const hub = new HubSource({ repo: 'org/m', revision: 'main' }, { baseUrl: 'http://127.0.0.1:4000', fetch: gate.fetch });
    const e = await refusal(hub.read('config.json'));
    expect(e).toBeInstanceOf(HostNotChosenError);
    expect(e.message).toMatch(/^http:\/\/127\.0\.0\.1:4000\/org\/m\/resolve\/main\/config\.json: not a host you chose/);
    const judge = chatJudge({ url: 'https://api.example.com/v1', model: 'j', fetch: gate.fetch });
    const j = await refusal(judge.judge({ question: 'q', answer: 'a', output: 'o', expected: '1', got: '2' }));
    expect(j.code).toBe('judge');
    expect(j.message).toBe(
      'judge https://api.example.com/v1/chat/completions: https://api.example.com/v1/chat/completions: not a host you chose; ' +
        'this app sends requests only to http://localhost:5173 (this app)',
    );
  });
});
