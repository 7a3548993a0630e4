/**
 * A local OpenAI-compatible `/v1/chat/completions` endpoint for the judge tests: answers every
 * request with `reply(body)` (or an HTTP error status), and keeps the requests it got. It allows
 * any origin (CORS, preflight included), so the app's worker in a browser can call it too.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MockChat {
  url: string;
  requests: Array<{ headers: Record<string, unknown>; body: { model: string; messages: Array<{ role: string; content: string }> } }>;
  close(): Promise<void>;
}

export async function startMockChat(reply: (body: MockChat['requests'][number]['body']) => string | number): Promise<MockChat> {
  const requests: MockChat['requests'] = [];
  const server = createServer((req, res) => {
    res.setHeader('access-control-allow-origin', '*');
    res.setHeader('access-control-allow-headers', 'content-type, authorization');
    if (req.method === 'OPTIONS') return void res.writeHead(204).end();
    let text = '';
    req.on('data', (c) => (text += c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/chat/completions') return void res.writeHead(404).end('no such route');
      const body = JSON.parse(text);
      requests.push({ headers: req.headers, body });
      const r = reply(body);
      if (typeof r === 'number') return void res.writeHead(r).end('{"error": "refused"}');
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ choices: [{ message: { role: 'assistant', content: r } }] }));
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/v1`, requests, close: () => new Promise((ok) => server.close(() => ok())) };
}
