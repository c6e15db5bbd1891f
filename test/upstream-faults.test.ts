import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { deprecationHeaders } from '../src/deprecation-headers.js';
import { createMetrics, type Metrics } from '../src/metrics.js';
import { createRateLimiter, type RateLimiter } from '../src/rate-limit.js';
import { closedAfterEach, closeWithSockets } from './support/cleanup.js';
import { exchangeRaw, jsonBodyOf } from './support/raw-http.js';
import { type RunningShim, startShim } from './support/shim.js';
import {
  closedPort,
  listen,
  type RecordingUpstream,
  request,
  startUpstream,
  type UpgradeHandler,
  type UpstreamHandler,
  within,
} from './support/upstream.js';

/**
 * What a pass-through client gets when the upstream fails: 502 when it cannot be reached, 504 when it does
 * not answer within `upstream.timeoutMs`, a cut answer (never a fake success) when it breaks mid-body; and
 * the shim serves the next request normally.
 */

const TIMEOUT_MS = 300;
/** Distinctive enough that finding it anywhere in the logs can only mean a leak. */
const SECRET = 'Bearer 5ec7e7a1-0000-4b1d-9c0d-1eaked5ec7e7';

let upstream: RecordingUpstream | undefined;
let shim: RunningShim | undefined;
const track = closedAfterEach();

/** The first request meets `fault`; every later one is answered 200 `healthy`. */
function firstThen(fault: UpstreamHandler): UpstreamHandler {
  let calls = 0;
  return (req, res) => {
    calls += 1;
    if (calls === 1) return fault(req, res);
    req.resume();
    req.on('end', () => res.end('healthy'));
  };
}

async function through(handler: UpstreamHandler, onUpgrade?: UpgradeHandler) {
  upstream = track(await startUpstream(handler, onUpgrade ? { onUpgrade } : {}));
  shim = track(await startShim(upstream.url, { upstream: { timeoutMs: TIMEOUT_MS } }));
  return { upstream, shim };
}

async function timed<T>(work: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work;
  return { value, ms: performance.now() - started };
}

function expectNextRequestHealthy(shimUrl: string) {
  return expect(
    request(shimUrl, { path: '/providers' }).then((res) => [res.status, res.body.toString()]),
  ).resolves.toEqual([200, 'healthy']);
}

describe('an upstream that cannot be reached', () => {
  it('answers 502 upstream_unreachable at once, and again for the next request', async () => {
    shim = track(
      await startShim(`http://127.0.0.1:${await closedPort()}`, { upstream: { timeoutMs: 5_000 } }),
    );

    const { value: res, ms } = await timed(request(shim.url, { path: '/providers' }));

    expect(ms).toBeLessThan(1_000);
    expect(res.status).toBe(502);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const body = JSON.parse(res.body.toString());
    expect(Object.keys(body)).toEqual(['error']);
    expect(body.error).toEqual({ code: 'upstream_unreachable', message: expect.any(String) });
    // The shim is not left in a bad state: the next request is answered just as fast.
    const next = await timed(request(shim.url, { method: 'POST', path: '/connection', body: '{}' }));
    expect(next.value.status).toBe(502);
    expect(next.ms).toBeLessThan(1_000);
    expect(shim.shim.inFlight()).toBe(0);
  });
});

describe('an upstream that never answers', () => {
  it('answers 504 upstream_timeout after about upstream.timeoutMs, then serves the next request', async () => {
    const { upstream, shim } = await through(firstThen(() => {}));

    const { value: res, ms } = await timed(request(shim.url, { path: '/providers?slow=1' }));

    expect(upstream.requests[0]?.url).toBe('/providers?slow=1');
    expect(res.status).toBe(504);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_timeout', message: expect.any(String) },
    });
    expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 20);
    expect(ms).toBeLessThan(TIMEOUT_MS + 1_000);
    await expectNextRequestHealthy(shim.url);
  });

  it('answers 504 to a request sent with Expect: 100-continue too', async () => {
    // http-proxy-3 does not announce such requests with `proxyReq`; the timeout must not depend on it.
    const { upstream, shim } = await through(firstThen((req) => req.resume()));

    const { value: res, ms } = await timed(
      within(
        5_000,
        'answer to an Expect request',
        request(shim.url, {
          method: 'POST',
          path: '/connection',
          headers: { expect: '100-continue', 'content-type': 'application/json' },
          body: '{"provider_config_key":"github"}',
        }),
      ),
    );

    expect(upstream.requests[0]?.headers.expect).toBe('100-continue');
    expect(res.status).toBe(504);
    expect(ms).toBeLessThan(TIMEOUT_MS + 1_000);
    await expectNextRequestHealthy(shim.url);
  });

  it('answers 504 to a WebSocket upgrade the upstream never answers, after about upstream.timeoutMs', async () => {
    // The upgrade request is never answered.
    const { upstream, shim } = await through(
      () => {},
      () => {},
    );
    const url = new URL(shim.url);

    let req: http.ClientRequest | undefined;
    const closed = new Promise<string>((resolve) => {
      req = http.request({
        host: url.hostname,
        port: url.port,
        path: '/ws',
        agent: false,
        headers: {
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
          'sec-websocket-version': '13',
        },
      });
      req.on('upgrade', (_res, socket) => {
        socket.destroy();
        resolve('upgraded');
      });
      req.on('response', (res) => resolve(`answered ${res.statusCode}`));
      req.on('error', (error) => resolve(error.message));
      req.end();
    });
    const { value: outcome, ms } = await timed(
      within(5_000, 'upgrade outcome', closed).finally(() => req?.destroy()),
    );

    expect(upstream.requests[0]?.headers.upgrade).toBe('websocket');
    expect(outcome).toBe('answered 504');
    expect(ms).toBeLessThan(TIMEOUT_MS + 1_000);
  });
});

describe('a pool of upstream sockets that is all in use', () => {
  it('answers 504 to a call still waiting for a socket after upstream.timeoutMs, and never sends it', async () => {
    // One socket, held by a download that trickles for ten times the timeout without ever going idle.
    upstream = track(
      await startUpstream((req, res) => {
        req.resume();
        if (req.url !== '/download') return void res.end('healthy');
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        let sent = 0;
        const drip = setInterval(() => {
          res.write('x');
          sent += 1;
          if (sent === 30) {
            clearInterval(drip);
            res.end();
          }
        }, TIMEOUT_MS / 3);
        res.once('close', () => clearInterval(drip));
      }),
    );
    shim = track(await startShim(upstream.url, { upstream: { timeoutMs: TIMEOUT_MS, maxSockets: 1 } }));
    const download = request(shim.url, { path: '/download' });
    await upstream.waitForRequests(1);

    // The wait for a socket is bounded too: it was not, and the call waited for the whole download.
    const { value: res, ms } = await timed(
      within(5_000, 'queued call', request(shim.url, { path: '/queued' })),
    );

    expect(res.status).toBe(504);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_timeout', message: expect.any(String) },
    });
    expect(ms).toBeLessThan(TIMEOUT_MS + 1_000);
    const downloaded = await within(10_000, 'download', download);
    expect([downloaded.status, downloaded.body.length]).toEqual([200, 30]);
    await expectNextRequestHealthy(shim.url);
    // Never sent once the socket came free, and reported once.
    expect(upstream.requests.map((seen) => seen.url)).toEqual(['/download', '/providers']);
    expect(shim.logs().filter((line) => line.msg === 'upstream request failed')).toEqual([
      expect.objectContaining({ failure: 'timeout', path: '/queued' }),
    ]);
  });
});

describe('an upstream that breaks the connection', () => {
  it('answers 502 upstream_response_lost when it resets before answering', async () => {
    const { upstream, shim } = await through(firstThen((req) => req.socket.resetAndDestroy()));

    const res = await request(shim.url, { method: 'PUT', path: '/connection/metadata', body: '{}' });

    expect(upstream.requests).toHaveLength(1);
    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_response_lost', message: expect.any(String) },
    });
    await expectNextRequestHealthy(shim.url);
  });

  it.each([
    ['a content-length answer', { 'content-length': '100000' }],
    ['a chunked answer', {}],
  ])('cuts the client’s answer when it resets in the middle of %s', async (_name, headers) => {
    const { shim } = await through(
      firstThen((req, res) => {
        req.resume();
        res.writeHead(200, { 'content-type': 'application/octet-stream', ...headers });
        res.write(Buffer.alloc(1000, 1));
        setTimeout(() => req.socket.resetAndDestroy(), 50);
      }),
    );

    // Never a complete answer: the client must see the break, not a short body passing for the whole.
    await expect(within(5_000, 'cut answer', request(shim.url, { path: '/files/1' }))).rejects.toThrow(
      /aborted|incomplete|ECONNRESET|socket hang up/,
    );
    // Reported once: the reset reaches the request's own error, and the cut answer is the same failure.
    await expect
      .poll(() => shim.logs().filter((line) => line.msg === 'upstream request failed'))
      .toEqual([expect.objectContaining({ failure: 'lost', path: '/files/1' })]);
    await expectNextRequestHealthy(shim.url);
  });
});

/** Answers 200 with `headers` and four bytes of the body, then closes its connection: a FIN, no reset. */
function closesMidAnswer(headers: http.OutgoingHttpHeaders): UpstreamHandler {
  return (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/octet-stream', ...headers });
    res.write('half', () => req.socket.destroy());
  };
}

describe('an upstream that closes its connection in the middle of an answer', () => {
  const framings: Array<[string, http.OutgoingHttpHeaders]> = [
    ['a content-length answer', { 'content-length': '100' }],
    ['a chunked answer without its last chunk', {}],
  ];

  it.each(framings)(
    'closes the client’s connection at once after %s, logs it and counts no 200',
    async (_name, headers) => {
      let metrics: Metrics | undefined;
      upstream = track(await startUpstream(firstThen(closesMidAnswer(headers))));
      shim = track(
        await startShim(upstream.url, { upstream: { timeoutMs: TIMEOUT_MS } }, [], ({ configs }) => {
          metrics = createMetrics({ configs });
          return { observer: metrics.observer };
        }),
      );

      // A keep-alive request: a connection the shim left open would hang the client (3 s is ten times
      // upstream.timeoutMs here).
      const reply = await exchangeRaw(shim.url, 'GET /files/1 HTTP/1.1\r\nHost: a\r\n\r\n', {
        timeoutMs: 3_000,
      });

      // RFC 9112 §8: the close is the client's only sign that the body it got is cut.
      expect(reply.status).toBe(200);
      expect(reply.text).toContain('half');
      expect(reply.closed).toBe(true);
      expect(shim.logs().filter((line) => line.msg === 'upstream request failed')).toEqual([
        expect.objectContaining({ failure: 'lost', path: '/files/1' }),
      ]);
      await expect.poll(() => shim?.shim.inFlight()).toBe(0);
      const rendered = (await metrics?.render()) ?? '';
      expect(rendered).toContain('nango_shim_passthrough_requests_total{method="GET",status_class="0xx"} 1');
      expect(rendered).not.toContain(
        'nango_shim_passthrough_requests_total{method="GET",status_class="2xx"}',
      );
      await expectNextRequestHealthy(shim.url);
    },
  );

  it('leaves nothing in flight for a shutdown to wait for', async () => {
    const { shim } = await through(closesMidAnswer({ 'content-length': '100' }));
    const reply = exchangeRaw(shim.url, 'GET /providers HTTP/1.1\r\nHost: a\r\n\r\n', { timeoutMs: 3_000 });
    await expect.poll(() => shim.logText()).toContain('upstream request failed');

    // Clean (true) well within the grace period, instead of cutting a response left open at its end.
    const started = performance.now();
    expect(await shim.shim.drain(2_000)).toBe(true);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect((await reply).closed).toBe(true);
  });
});

/**
 * A raw TCP upstream: the first request gets `bytes` (then the connection closes, or stays open without another
 * byte with `hold`), every later one `healthy`.
 */
async function rawFirstThenHealthy(bytes: string, then: 'close' | 'hold' = 'close'): Promise<string> {
  let calls = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('data', () => {
      calls += 1;
      if (calls === 1 && then === 'hold') socket.write(bytes);
      else
        socket.end(
          calls === 1 ? bytes : 'HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nhealthy',
        );
    });
  });
  const port = await listen(server);
  track({
    close: () => closeWithSockets(server, sockets),
  });
  return `http://127.0.0.1:${port}`;
}

/** A GET of `call` as raw bytes, for reading the status line exactly as the shim wrote it. */
function rawGet(call: { path: string; headers?: Record<string, string> }): string {
  const fields = Object.entries(call.headers ?? {}).map(([name, value]) => `${name}: ${value}\r\n`);
  return `GET ${call.path} HTTP/1.1\r\nHost: shim.test\r\n${fields.join('')}\r\n`;
}

const LEGACY_GET = {
  path: '/connection/conn-1?provider_config_key=github',
  headers: { authorization: 'Bearer 9b2f6a4e-8d3c-4b1a-9e7f-2c5d8a1b3e4f' },
};

describe('an upstream that fails after the head of its answer, before any of its body', () => {
  const PROVIDERS: { path: string; headers?: Record<string, string> } = { path: '/providers' };
  const HEAD_ONLY =
    'HTTP/1.1 200 Fine\r\nContent-Type: text/csv\r\nContent-Encoding: gzip\r\nSet-Cookie: session=upstream\r\n' +
    'ETag: "v1"\r\nCache-Control: max-age=600\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 100\r\n\r\n';

  it.each([
    ['closes its connection', 'pass-through', 'close', 502, 'upstream_response_lost', PROVIDERS],
    ['closes its connection', 'a streamed translation', 'close', 502, 'upstream_response_lost', LEGACY_GET],
    ['goes silent', 'pass-through', 'hold', 504, 'upstream_timeout', PROVIDERS],
  ] as const)(
    'answers its own error without that head when it %s, on %s',
    async (_fault, route, then, status, code, call) => {
      const upstreamUrl = await rawFirstThenHealthy(HEAD_ONLY, then);
      shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

      // node:http sends a head with the first byte of the body: until then it is only set on the response,
      // and the shim's own error went out as `502 Fine` with the upstream's Content-Encoding (a client then
      // fails to decode the JSON error), its cookie, validator and caching.
      const headers = { ...call.headers, connection: 'close' };
      const reply = await exchangeRaw(shim.url, rawGet({ path: call.path, headers }), { timeoutMs: 3_000 });

      expect(reply.closed).toBe(true);
      const [head = '', body = ''] = reply.text.split('\r\n\r\n');
      expect(head.split('\r\n')[0]).toBe(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}`);
      expect(head).not.toMatch(/^(content-encoding|set-cookie|etag|cache-control):/im);
      expect(head).toMatch(/^content-type: application\/json; charset=utf-8$/im);
      // What node:http says of every answer it writes stays: the time it is written, and that it closes.
      expect(head).toMatch(/^date: (?!Mon, 01 Jan 2024).+ GMT$/im);
      expect(head).toMatch(/^connection: close$/im);
      expect(JSON.parse(body)).toEqual({ error: { code, message: expect.any(String) } });
      // The headers the shim itself gives every answer of a deprecated route stay.
      if (route === 'a streamed translation') expect(head).toMatch(/^deprecation: @\d+$/im);
      await expectNextRequestHealthy(shim.url);
    },
  );

  it('keeps a keep-alive client’s connection, and says so as on any other answer', async () => {
    const upstreamUrl = await rawFirstThenHealthy(HEAD_ONLY, 'close');
    shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

    const reply = await exchangeRaw(
      shim.url,
      rawGet(PROVIDERS) + rawGet({ ...PROVIDERS, headers: { connection: 'close' } }),
      { timeoutMs: 3_000 },
    );

    const [head = ''] = reply.text.split('\r\n\r\n');
    expect(reply.status).toBe(502);
    // The Keep-Alive hint is the client connection's, like Connection (forward.ts setAnswerConnection): the
    // upstream's head is forgotten, the shim's own words about the client's connection are not.
    expect(head).toMatch(/^connection: keep-alive$/im);
    expect(head).toMatch(/^keep-alive: timeout=61$/im);
    expect(reply.text).toMatch(/\r\n\r\nhealthy$/);
  });

  it("keeps the headers the shim set before forwarding, every deprecation header and the rate limit's", async () => {
    const upstreamUrl = await rawFirstThenHealthy(
      'HTTP/1.1 200 Fine\r\nContent-Type: text/csv\r\nContent-Length: 100\r\n\r\n',
      'close',
    );
    const limit = { routes: { 'connection-get': { rateLimit: { windowMs: 60_000, limit: 5 } } } };
    let limiter: RateLimiter | undefined;
    shim = track(
      await startShim(
        upstreamUrl,
        { upstream: { timeoutMs: TIMEOUT_MS }, ...limit },
        [],
        ({ configs, logger }) => {
          limiter = createRateLimiter({ configs, logger });
          return { limiter };
        },
      ),
    );
    track({ close: async () => limiter?.close() });
    const route = shim.configs.current.config.routes['connection-get'];

    const headers = { ...LEGACY_GET.headers, connection: 'close' };
    const reply = await exchangeRaw(shim.url, rawGet({ path: LEGACY_GET.path, headers }), {
      timeoutMs: 3_000,
    });

    expect(reply.status).toBe(502);
    const head = reply.text.slice(0, reply.text.indexOf('\r\n\r\n') + 2).toLowerCase();
    // Every header deprecation-headers.ts gives a deprecated route, whatever it is one day: RFC 9745, RFC 8594.
    for (const [name, value] of Object.entries(deprecationHeaders(route)))
      expect(head).toContain(`\r\n${name}: ${value.toLowerCase()}\r\n`);
    expect(head).toMatch(/\r\nratelimit: "connection-get"; r=4; t=\d+\r\n/);
    expect(head).toMatch(/\r\nratelimit-policy: "connection-get"; q=5; w=60; pk=:[^\r]+:\r\n/);
  });
});

describe('an upstream answer node:http cannot pass on', () => {
  it.each([
    ['000', 'pass-through', { path: '/providers' }],
    ['099', 'pass-through', { path: '/providers' }],
    ['000', 'a streamed translation', LEGACY_GET],
  ])('answers 502 upstream_response_lost to status %s on %s, and stays up', async (status, _path, call) => {
    const upstreamUrl = await rawFirstThenHealthy(
      `HTTP/1.1 ${status} Odd\r\nContent-Length: 4\r\nConnection: close\r\n\r\nodd!`,
    );
    shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

    // node:http cannot write a status under 100: passed on, it threw from inside the answer's stream and
    // the process died with every request in it.
    const res = await within(5_000, 'answer', request(shim.url, call));

    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_response_lost', message: expect.any(String) },
    });
    expect(shim.logs().filter((line) => line.msg === 'upstream request failed')).toEqual([
      expect.objectContaining({ failure: 'lost' }),
    ]);
    await expectNextRequestHealthy(shim.url);
  });

  it.each([
    ['pass-through', { path: '/providers' }],
    ['a streamed translation', LEGACY_GET],
  ])(
    'passes on an answer whose reason phrase has a control character, on %s, with the standard one',
    async (_path, call) => {
      const upstreamUrl = await rawFirstThenHealthy(
        'HTTP/1.1 200 O\x7fK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nodd!',
      );
      shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

      // node:http will not write a control character in a reason phrase: copied, it threw from inside the
      // answer's stream and the process died.
      const reply = await exchangeRaw(shim.url, rawGet(call), { untilAnswer: true });

      expect(reply.text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      await expectNextRequestHealthy(shim.url);
    },
  );

  const CHUNKED_WITH_TRAILER =
    'HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
    '4\r\nodd!\r\n0\r\nX-Checksum: 1f\r\n\r\n';
  it.each([
    [
      'a Content-Length answer, on pass-through',
      'HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nContent-Length: 4\r\nConnection: close\r\n\r\nodd!',
      rawGet({ path: '/providers' }),
      'odd!',
    ],
    [
      'a Content-Length answer, on a streamed translation',
      'HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nContent-Length: 4\r\nConnection: close\r\n\r\nodd!',
      rawGet(LEGACY_GET),
      'odd!',
    ],
    [
      'a 204, on pass-through',
      'HTTP/1.1 204 No Content\r\nTrailer: X-Checksum\r\nConnection: close\r\n\r\n',
      rawGet({ path: '/providers' }),
      '',
    ],
    [
      'a chunked answer to an HTTP/1.0 client, on pass-through',
      CHUNKED_WITH_TRAILER,
      'GET /providers HTTP/1.0\r\n\r\n',
      'odd!',
    ],
    [
      'a chunked answer to a HEAD, on pass-through',
      'HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n',
      'HEAD /providers HTTP/1.1\r\nHost: shim.test\r\n\r\n',
      '',
    ],
  ])(
    'passes on a Trailer field on %s, where nothing can follow the body, without it',
    async (_case, answer, call, body) => {
      const upstreamUrl = await rawFirstThenHealthy(answer);
      shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

      // node:http throws on a Trailer field when the answer it writes is not chunked: copied, it threw from
      // inside the answer's stream (or the 502 written after it) and the process died.
      const reply = await exchangeRaw(shim.url, call, { timeoutMs: 2_000 });

      expect(reply.status).toBe(answer.includes('204') ? 204 : 200);
      const [head = '', rest = ''] = reply.text.split('\r\n\r\n');
      expect(head).not.toMatch(/^trailer:/im);
      expect(rest.replace(/^4\r\n(.*)\r\n0\r\n\r\n$/s, '$1')).toBe(body);
      await expectNextRequestHealthy(shim.url);
    },
  );

  it.each([
    ['a chunk size that is not hex', 'pass-through', { path: '/providers' }, '4\r\nodd!\r\nzz\r\n'],
    ['a chunk size that is not hex', 'a streamed translation', LEGACY_GET, '4\r\nodd!\r\nzz\r\n'],
  ])(
    'answers 502 and stays up when a chunked answer breaks with %s in its first packet, on %s',
    async (_fault, _path, call, chunks) => {
      const upstreamUrl = await rawFirstThenHealthy(
        `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunks}`,
      );
      shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

      // The parse error comes while the body that came with the head is still on its way to the client: the
      // shim answered 502, and then the piped body was written into that finished answer, whose unheard
      // `error` killed the process.
      const res = await within(5_000, 'answer', request(shim.url, call));

      expect(res.status).toBe(502);
      expect(JSON.parse(res.body.toString())).toEqual({
        error: { code: 'upstream_response_lost', message: expect.any(String) },
      });
      await expectNextRequestHealthy(shim.url);
    },
  );

  // llhttp 9 (Node 20.20+, 22, 24) refuses a trailer line without a name; llhttp 8 (Node 20.19.0) reads it as a
  // field named "", which node:http then refuses to write: addTrailers threw from the answer's end.
  const NAMELESS_TRAILER_IS_PARSED = Number(process.versions.llhttp?.split('.')[0]) < 9;

  it('stays up on a chunked answer with a trailer field without a name, as its Node reads it', async () => {
    const upstreamUrl = await rawFirstThenHealthy(
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nodd!\r\n0\r\n: x\r\nX-Sum: 1\r\n\r\n',
    );
    shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

    const reply = await within(
      5_000,
      'answer',
      exchangeRaw(shim.url, 'GET /providers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'),
    );

    if (NAMELESS_TRAILER_IS_PARSED) {
      // The answer is whole to this parser: passed on, with the trailer fields node:http can write.
      expect(reply.status).toBe(200);
      expect(reply.text).toMatch(/\r\n\r\n4\r\nodd!\r\n0\r\nx-sum: 1\r\n\r\n$/i);
    } else {
      expect(reply.status).toBe(502);
      expect(jsonBodyOf(reply.text)).toEqual({
        error: { code: 'upstream_response_lost', message: expect.any(String) },
      });
    }
    await expectNextRequestHealthy(shim.url);
  });

  it('answers 502 and stays up when a 429 read whole on a streamed translation is followed by bytes that are not HTTP', async () => {
    const body = '{"error":{"code":"too_many_request","method":"GET","path":"/connections/conn-1"}}';
    // A body longer than its Content-Length (one counted in characters, not bytes) leaves such bytes behind.
    const upstreamUrl = await rawFirstThenHealthy(
      `HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}é!\r\n`,
    );
    shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

    // The parse error came while the 429 was being read: the shim answered 502, then the 429's end copied its
    // head onto that sent answer, and node:http's ERR_HTTP_HEADERS_SENT killed the process.
    const res = await within(5_000, 'answer', request(shim.url, LEGACY_GET));

    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_response_lost', message: expect.any(String) },
    });
    await expectNextRequestHealthy(shim.url);
  });

  it.each([
    ['pass-through', { path: '/providers' }],
    ['a streamed translation', LEGACY_GET],
  ])('answers 502 at once to a protocol switch no request asked for, on %s', async (_path, call) => {
    const upstreamUrl = await rawFirstThenHealthy(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: something\r\nConnection: upgrade\r\n\r\n',
    );
    shim = track(await startShim(upstreamUrl, { upstream: { timeoutMs: TIMEOUT_MS } }));

    // node:http dropped the switched socket without telling the request: the client waited for ever, past
    // upstream.timeoutMs, and stayed in flight.
    const { value: res, ms } = await timed(within(5_000, 'answer', request(shim.url, call)));

    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_response_lost', message: expect.any(String) },
    });
    expect(ms).toBeLessThan(TIMEOUT_MS);
    expect(shim.shim.inFlight()).toBe(0);
    await expectNextRequestHealthy(shim.url);
  });
});

describe('logs', () => {
  it('never contain an Authorization header, passed through or failed', async () => {
    let calls = 0;
    const { shim: healthyShim } = await through((req, res) => {
      calls += 1;
      req.resume();
      // The second request is never answered (504), the third is reset (502), the others succeed.
      if (calls === 3) req.socket.resetAndDestroy();
      else if (calls !== 2) res.end('ok');
    });
    const unreachable = await startShim(`http://127.0.0.1:${await closedPort()}`);
    try {
      const headers = { authorization: SECRET, 'content-type': 'application/json' };
      const statuses = [
        (await request(healthyShim.url, { path: '/providers', headers })).status,
        (await request(healthyShim.url, { path: '/providers', headers })).status,
        (await request(healthyShim.url, { method: 'PUT', path: '/connection/metadata', headers, body: '{}' }))
          .status,
        (await request(unreachable.url, { path: '/providers', headers })).status,
        // A translated (owned) route failing on the unreachable upstream.
        (
          await request(unreachable.url, {
            method: 'PATCH',
            path: '/connection/metadata',
            headers,
            body: '{"connection_id":"c","provider_config_key":"p","metadata":{}}',
          })
        ).status,
      ];
      expect(statuses).toEqual([200, 504, 502, 502, 502]);

      const logText = healthyShim.logText() + unreachable.logText();
      // The failures were logged, so the scan below reads real lines.
      expect(logText).toContain('upstream request failed');
      expect(logText).not.toContain(SECRET.slice('Bearer '.length));
      expect(logText.toLowerCase()).not.toContain('bearer');
    } finally {
      await unreachable.close();
    }
  });
});
