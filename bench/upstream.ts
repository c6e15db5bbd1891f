/**
 * A minimal Nango-compatible upstream for the bench: just enough of Nango's answers, as cheap as node:http
 * allows, so that what the bench measures is the proxy in front of it.
 *
 * - `GET /connections/...` answers a fixed connection object (about 600 bytes of JSON);
 * - `PATCH /connections/metadata` (200) and any `POST` (201) echo the request body, as Nango does;
 * - anything else answers a small JSON 200.
 *
 * Env: BENCH_HOST (default 127.0.0.1), BENCH_PORT (default 0). The port is reported by bench/probe.ts.
 */
import http from 'node:http';

const JSON_TYPE = 'application/json; charset=utf-8';

const CONNECTION = Buffer.from(
  JSON.stringify({
    id: 1,
    connection_id: 'conn-1',
    provider_config_key: 'unauth',
    provider: 'unauthenticated',
    errors: [],
    end_user: null,
    tags: {},
    metadata: { name: 'conn-1', seeded: true, plan: 'enterprise', region: 'eu-west-1' },
    connection_config: { instance_url: 'https://example.my.salesforce.com', subdomain: 'example' },
    webhook_url_override: null,
    created_at: '2026-11-25T23:47:41.523+00:00',
    updated_at: '2026-11-25T23:47:41.523+00:00',
    last_fetched_at: '2026-11-25T23:47:41.523+00:00',
    credentials: { type: 'NONE', raw: {} },
    environment_id: 2,
    config_id: 7,
    auth_mode: 'NONE',
    deleted: false,
    deleted_at: null,
    last_refresh_failure: null,
    refresh_attempts: null,
  }),
);
const SMALL = Buffer.from('{"success":true}');

function answer(res: http.ServerResponse, status: number, body: Buffer): void {
  res.writeHead(status, { 'content-type': JSON_TYPE, 'content-length': body.length });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const { method = 'GET', url = '/' } = req;
  if (method === 'GET' || method === 'HEAD') {
    // The body of a GET is not read; drain it in case a client sent one.
    req.resume();
    answer(res, 200, url.startsWith('/connections/') ? CONNECTION : SMALL);
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
    const path = url.split('?', 1)[0];
    if (method === 'POST') answer(res, 201, body);
    else if (method === 'PATCH' && path === '/connections/metadata') answer(res, 200, body);
    else answer(res, 200, SMALL);
  });
});
// Longer than any proxy's idle timeout, so the upstream is never the side that closes a pooled socket.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
server.listen(Number(process.env.BENCH_PORT ?? 0), process.env.BENCH_HOST ?? '127.0.0.1');
