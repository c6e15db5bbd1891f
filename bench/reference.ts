/**
 * The reference the shim is measured against: a bare http-proxy-3 reverse proxy with a keep-alive agent,
 * nothing else. Env: BENCH_UPSTREAM_URL, BENCH_HOST (default 127.0.0.1), BENCH_PORT (default 0).
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import { createProxyServer } from 'http-proxy-3';

const target = new URL(process.env.BENCH_UPSTREAM_URL ?? 'http://127.0.0.1:3003');
const proxy = createProxyServer({ target, agent: new http.Agent({ keepAlive: true, maxSockets: 256 }) });
const onError = (_error: Error, _req: http.IncomingMessage, res: http.ServerResponse | Socket) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502).end();
  else res.destroy();
};
http
  .createServer((req, res) => proxy.web(req, res, {}, onError))
  .listen(Number(process.env.BENCH_PORT ?? 0), process.env.BENCH_HOST ?? '127.0.0.1');
