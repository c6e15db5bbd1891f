import type { ServerResponse } from 'node:http';
import { brotliCompressSync, constants, deflateSync, gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { DEV_KEY } from './support/fake-nango.js';
import { type FaultUpstream, type RequestFault, startFaultUpstream } from './support/fault-upstream.js';
import { exchangeRaw } from './support/raw-http.js';
import { type RunningShim, startShim } from './support/shim.js';
import { closedPort, type RawResponse, request } from './support/upstream.js';

const TIMEOUT_MS = 300;
const BODY = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"plan":"pro","seats":3}}';
const RAW_METADATA = '{"plan":"pro","seats":3}';
const JSON_TYPE = { 'content-type': 'application/json; charset=utf-8' };

type Route = 'body-style' | 'path-style';
const ROUTES: Route[] = ['body-style', 'path-style'];

let shim: RunningShim | undefined;
let upstream: FaultUpstream | undefined;

afterEach(async () => {
  await shim?.close();
  await upstream?.close();
  shim = undefined;
  upstream = undefined;
});

async function setUp(
  upstreamUrl?: string,
  overrides: Record<string, unknown> = {},
): Promise<{ shim: RunningShim; upstream: FaultUpstream }> {
  upstream = await startFaultUpstream();
  shim = await startShim(upstreamUrl ?? upstream.url, { upstream: { timeoutMs: TIMEOUT_MS }, ...overrides });
  return { shim, upstream };
}

/** A legacy metadata write as an old SDK sends it, on either deprecated route. */
function legacyWrite(shimUrl: string, route: Route = 'body-style', method = 'PATCH'): Promise<RawResponse> {
  const headers = { authorization: `Bearer ${DEV_KEY}`, 'content-type': 'application/json' };
  return route === 'body-style'
    ? request(shimUrl, { method, path: '/connection/metadata', headers, body: BODY })
    : request(shimUrl, {
        method,
        path: '/connection/conn-1/metadata?provider_config_key=unauth',
        headers,
        body: RAW_METADATA,
      });
}

/** What the legacy route answers to `legacyWrite` when the write succeeded: the echo of the request. */
function legacyEcho(route: Route): string {
  return route === 'body-style' ? BODY : RAW_METADATA;
}

function errorCode(response: RawResponse): unknown {
  return (JSON.parse(response.body.toString('utf8')) as { error?: { code?: unknown } }).error?.code;
}

/** The answer is a well-formed one: Content-Length says the body's length, and nothing claims a coding. */
function expectPlainFraming(response: RawResponse): void {
  expect(response.headers['content-encoding']).toBeUndefined();
  expect(response.headers['transfer-encoding']).toBeUndefined();
  expect(Number(response.headers['content-length'])).toBe(response.body.length);
}

/** The fault did not stick: the very next call is served normally. */
async function expectNextServed(shimUrl: string, route: Route = 'body-style'): Promise<void> {
  const next = await legacyWrite(shimUrl, route);
  expect(next.status).toBe(200);
  expect(next.body.toString('utf8')).toBe(legacyEcho(route));
}

/** The shim's own 502/504, in Nango's error shape. */
function expectShimFailure(response: RawResponse, status: number, code: string): void {
  expect(response.status).toBe(status);
  expect(response.headers['content-type']).toBe('application/json; charset=utf-8');
  const body = JSON.parse(response.body.toString('utf8')) as { error: { code: string; message: string } };
  expect(body).toEqual({ error: { code, message: expect.any(String) } });
}

function answerWith(status: number, headers: Record<string, string>, body: Buffer | string): RequestFault {
  return (_req, res) => {
    res.writeHead(status, { ...headers, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
}

/** The successor's echo, compressed with `coding` (a list is applied left to right, RFC 9110 §8.4). */
function compressedEcho(coding: string): RequestFault {
  return (req, res, body) => {
    let encoded = body;
    for (const step of coding.split(',').map((token) => token.trim().toLowerCase())) {
      if (step === 'gzip' || step === 'x-gzip') encoded = gzipSync(encoded);
      else if (step === 'deflate') encoded = deflateSync(encoded);
      else if (step === 'br') encoded = brotliCompressSync(encoded);
    }
    res.writeHead(req.method === 'POST' ? 201 : 200, {
      ...JSON_TYPE,
      'content-encoding': coding,
      'content-length': encoded.length,
    });
    res.end(encoded);
  };
}

/** The echo without Content-Length: node:http then frames it chunked, in several chunks. */
const chunkedEcho: RequestFault = (_req, res, body) => {
  res.writeHead(200, JSON_TYPE);
  const half = Math.floor(body.length / 2);
  res.write(body.subarray(0, half));
  setTimeout(() => res.end(body.subarray(half)), 20);
};

describe('a successor that answers with an error page that is not JSON', () => {
  it.each(ROUTES)('passes a gateway 502 text/html page back unchanged on the %s route', async (route) => {
    const { shim, upstream } = await setUp();
    const page = '<html><body><h1>502 Bad Gateway</h1></body></html>';
    upstream.nextRequest(answerWith(502, { 'content-type': 'text/html' }, page));

    const response = await legacyWrite(shim.url, route);

    expect(response.status).toBe(502);
    expect(response.headers['content-type']).toBe('text/html');
    expect(response.body.toString('utf8')).toBe(page);
    expectPlainFraming(response);
    expect(response.headers.deprecation).toBeDefined();
    expect(shim.logs().filter((line) => line.msg === 'migration failed')).toEqual([]);
    await expectNextServed(shim.url, route);
  });

  it('passes an empty 503 with no Content-Type back unchanged', async () => {
    const { shim, upstream } = await setUp();
    upstream.nextRequest(answerWith(503, {}, ''));

    const response = await legacyWrite(shim.url);

    expect(response.status).toBe(503);
    expect(response.body.length).toBe(0);
    await expectNextServed(shim.url);
  });
});

describe('a successor whose answer is compressed or chunked', () => {
  it.each(['gzip', 'x-gzip', 'deflate', 'br', 'gzip, br', 'GZIP'])(
    'gives the legacy client the plain echo of a %s answer, without the stale coding and length',
    async (coding) => {
      const { shim, upstream } = await setUp();
      upstream.nextRequest(compressedEcho(coding));

      const response = await legacyWrite(shim.url);

      expect(response.status).toBe(200);
      expect(response.body.toString('utf8')).toBe(BODY);
      expectPlainFraming(response);
      await expectNextServed(shim.url);
    },
  );

  it.each(ROUTES)(
    'gives the legacy client the plain echo of a chunked answer on the %s route',
    async (route) => {
      const { shim, upstream } = await setUp();
      upstream.nextRequest(chunkedEcho);

      const response = await legacyWrite(shim.url, route);

      expect(response.status).toBe(200);
      expect(response.body.toString('utf8')).toBe(legacyEcho(route));
      expectPlainFraming(response);
    },
  );

  it('gives the path-style client its legacy echo of a gzip answer, and its legacy 404 of a gzip 404', async () => {
    const { shim, upstream } = await setUp();
    const notFound = gzipSync(
      '{"error":{"code":"unknown_connection","message":"Connection with connection id conn-1 not found"}}',
    );
    upstream.nextRequest(compressedEcho('gzip'), (_req, res) => {
      res.writeHead(404, { ...JSON_TYPE, 'content-encoding': 'gzip', 'content-length': notFound.length });
      res.end(notFound);
    });

    const success = await legacyWrite(shim.url, 'path-style', 'POST');
    const missing = await legacyWrite(shim.url, 'path-style');

    expect(success.status).toBe(201);
    expect(success.body.toString('utf8')).toBe(RAW_METADATA);
    expectPlainFraming(success);
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body.toString('utf8'))).toMatchObject({
      error: { code: 'unknown_connection', payload: { connectionId: 'conn-1', providerConfigKey: 'unauth' } },
    });
    expectPlainFraming(missing);
  });

  it('rebuilds the echo of a success in a coding it cannot read, and does not claim that coding', async () => {
    const { shim, upstream } = await setUp();
    upstream.nextRequest(answerWith(200, { ...JSON_TYPE, 'content-encoding': 'zstd' }, 'not zstd either'));

    const response = await legacyWrite(shim.url);

    expect(response.status).toBe(200);
    expect(response.body.toString('utf8')).toBe(BODY);
    expectPlainFraming(response);
  });

  it.each([
    ['body-style', 'text/plain', { 'content-type': 'text/plain' }],
    ['body-style', 'no type', {}],
    ['path-style', 'text/plain', { 'content-type': 'text/plain' }],
    ['path-style', 'no type', {}],
  ] as const)(
    'labels the echo it writes on the %s route as JSON when the successor said %s',
    async (route, _said, type) => {
      // The legacy echo is res.send(object): Express labels it application/json (path-style.json). The bytes
      // are the shim's own, so the successor's label (or its lack of one) no longer describes them.
      const { shim, upstream } = await setUp();
      upstream.nextRequest((req, res, body) => {
        res.writeHead(req.method === 'POST' ? 201 : 200, { ...type, 'content-length': body.length + 1 });
        res.end(Buffer.concat([body, Buffer.from('\n')]));
      });

      const response = await legacyWrite(shim.url, route);

      expect(response.status).toBe(200);
      expect(response.body.toString('utf8')).toBe(legacyEcho(route));
      expect(response.headers['content-type']).toBe('application/json; charset=utf-8');
    },
  );
});

describe('a successor whose compressed answer cannot be decoded', () => {
  const echo = Buffer.from(BODY);
  const corrupt = gzipSync(echo);
  corrupt.fill(0x41, 12, corrupt.length - 8);
  const cases: Array<[string, string, Buffer]> = [
    ['corrupt gzip', 'gzip', corrupt],
    ['truncated gzip', 'gzip', gzipSync(echo).subarray(0, 20)],
    ['garbage claiming deflate', 'deflate', Buffer.from('definitely not deflate')],
    ['garbage claiming br', 'br', Buffer.from('definitely not brotli, not at all')],
  ];

  it.each(cases)(
    'answers a defined 502 for a %s answer, and serves the next call',
    async (_name, coding, bytes) => {
      const { shim, upstream } = await setUp();
      upstream.nextRequest(answerWith(200, { ...JSON_TYPE, 'content-encoding': coding }, bytes));

      const response = await legacyWrite(shim.url);

      expectShimFailure(response, 502, 'upstream_response_lost');
      expect(shim.logs().filter((line) => line.msg === 'migration failed')).toEqual([]);
      await expectNextServed(shim.url);
    },
  );
});

/**
 * 1 GiB of zeros as 64 concatenated gzip members of 16 MiB each (RFC 1952 §2.2: a gzip file is a series
 * of members, and node:zlib decodes them all): a megabyte on the wire, a gigabyte once decoded.
 */
function gzipBomb(): Buffer {
  const member = gzipSync(Buffer.alloc(16 * 1024 * 1024), { level: constants.Z_BEST_COMPRESSION });
  return Buffer.concat(Array.from({ length: 64 }, () => member));
}

describe('a successor that answers a compression bomb', () => {
  const bombs: Array<[string, string, () => Buffer]> = [
    ['gzip, 1 GiB', 'gzip', gzipBomb],
    ['deflate, 256 MiB', 'deflate', () => deflateSync(Buffer.alloc(256 * 1024 * 1024), { level: 1 })],
    [
      'br, 256 MiB',
      'br',
      () =>
        brotliCompressSync(Buffer.alloc(256 * 1024 * 1024), {
          params: { [constants.BROTLI_PARAM_QUALITY]: 1 },
        }),
    ],
  ];

  it.each(bombs)(
    'answers 502 to a %s bomb without decoding it whole',
    async (_name, coding, build) => {
      const bomb = build();
      const { shim, upstream } = await setUp();
      upstream.nextRequest(answerWith(200, { ...JSON_TYPE, 'content-encoding': coding }, bomb));
      const before = process.memoryUsage().rss;

      const response = await legacyWrite(shim.url);

      const grownMiB = (process.memoryUsage().rss - before) / 1024 / 1024;
      expectShimFailure(response, 502, 'upstream_response_lost');
      expect(grownMiB).toBeLessThan(128);
      await expectNextServed(shim.url);
    },
    30_000,
  );
});

describe('a successor that answers more than a translated call can need', () => {
  it('answers 502 to a plain 17 MiB answer instead of reshaping it', async () => {
    const { shim, upstream } = await setUp();
    const huge = Buffer.alloc(17 * 1024 * 1024, 0x20);
    upstream.nextRequest(answerWith(200, JSON_TYPE, huge));

    const response = await legacyWrite(shim.url);

    expectShimFailure(response, 502, 'upstream_response_lost');
    await expectNextServed(shim.url);
  });
});

describe('a successor that answers too slowly', () => {
  it.each(ROUTES)('answers 504 on the %s route once upstream.timeoutMs has passed', async (route) => {
    const { shim, upstream } = await setUp();
    const late: ServerResponse[] = [];
    upstream.nextRequest((req, res, body) => {
      late.push(res);
      setTimeout(() => {
        if (!res.destroyed) res.writeHead(req.method === 'POST' ? 201 : 200, JSON_TYPE).end(body);
      }, 3_000);
    });
    const started = performance.now();

    const response = await legacyWrite(shim.url, route);

    const elapsed = performance.now() - started;
    expectShimFailure(response, 504, 'upstream_timeout');
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT_MS - 20);
    expect(elapsed).toBeLessThan(TIMEOUT_MS + 1_500);
    await expectNextServed(shim.url, route);
    for (const res of late) res.destroy();
  });

  it('answers 504 when the answer head arrives in time but the body never ends', async () => {
    const { shim, upstream } = await setUp();
    upstream.nextRequest((_req, res, body) => {
      res.writeHead(200, { ...JSON_TYPE, 'content-length': body.length });
      res.write(body.subarray(0, 5));
    });

    const response = await legacyWrite(shim.url);

    expectShimFailure(response, 504, 'upstream_timeout');
    await expectNextServed(shim.url);
  });
});

describe('a successor that trickles its answer', () => {
  // An idle timeout alone never fires for an upstream that sends a byte every 50 ms: a translated call
  // has a deadline for the whole exchange.
  it('answers 504 once upstream.timeoutMs has passed, even though bytes keep coming', async () => {
    const { shim, upstream } = await setUp();
    const error = Buffer.from('{"error":{"code":"server_error"}}');
    upstream.nextRequest((_req, res) => {
      res.writeHead(500, { ...JSON_TYPE, 'content-length': error.length });
      let sent = 0;
      const drip = setInterval(() => {
        if (sent >= error.length || res.destroyed) return void clearInterval(drip);
        res.write(error.subarray(sent, sent + 1));
        sent += 1;
      }, 50);
    });
    const started = performance.now();

    const response = await legacyWrite(shim.url);

    expect(performance.now() - started).toBeLessThan(TIMEOUT_MS + 1_000);
    expectShimFailure(response, 504, 'upstream_timeout');
  });
});

describe('a successor whose connection breaks', () => {
  const breaks: Array<[string, RequestFault]> = [
    ['closes the connection after reading the whole request', (req) => req.socket.destroy()],
    ['resets the connection (RST) after reading the whole request', (req) => req.socket.resetAndDestroy()],
    [
      'cuts its 200 answer halfway through the body',
      (_req, res, body) => {
        res.writeHead(200, { ...JSON_TYPE, 'content-length': body.length });
        res.write(body.subarray(0, 10), () => res.socket?.destroy());
      },
    ],
    [
      'closes the connection after the status line',
      (_req, res) => {
        res.socket?.write('HTTP/1.1 200 OK\r\n', () => res.socket?.destroy());
      },
    ],
  ];

  it.each(breaks)('answers 502 upstream_response_lost, never a success, when it %s', async (_name, fault) => {
    const { shim, upstream } = await setUp();
    upstream.nextRequest(fault);

    const response = await legacyWrite(shim.url);

    expectShimFailure(response, 502, 'upstream_response_lost');
    await expectNextServed(shim.url);
  });

  it('answers 502 when it accepts the connection and closes it without answering', async () => {
    const { shim, upstream } = await setUp();
    upstream.closeOnAccept();

    const response = await legacyWrite(shim.url);

    expect(upstream.connections()).toBe(1);
    expect(response.status).toBe(502);
    expect(errorCode(response)).toMatch(/^upstream_(response_lost|unreachable)$/);
    await expectNextServed(shim.url);
  });

  it('answers 502 upstream_unreachable when nothing listens', async () => {
    const port = await closedPort();
    const { shim } = await setUp(`http://127.0.0.1:${port}`);

    const response = await legacyWrite(shim.url);

    expectShimFailure(response, 502, 'upstream_unreachable');
  });
});

/** Lets any retry the shim might make arrive before counting. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

function writesAt(upstream: FaultUpstream): number {
  return upstream.requests.filter((seen) => seen.url === '/connections/metadata').length;
}

describe('a translated write reaches the upstream at most once', () => {
  const drops: Array<[string, RequestFault]> = [
    ['closes the connection', (req) => req.socket.destroy()],
    ['resets the connection', (req) => req.socket.resetAndDestroy()],
    [
      'cuts its answer',
      (_req, res) =>
        res.socket?.write('HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{"c', () => res.socket?.destroy()),
    ],
    ['never answers', () => {}],
  ];

  it.each(drops)('is sent once, not retried, when the upstream receives it and %s', async (_name, fault) => {
    const { shim, upstream } = await setUp();
    upstream.nextRequest(fault);

    const response = await legacyWrite(shim.url, 'body-style', 'POST');
    await settle();

    expect(response.status).toBeGreaterThanOrEqual(502);
    expect(writesAt(upstream)).toBe(1);
    expect(upstream.requests[0]?.body?.toString('utf8')).toBe(BODY);
    // The next write is its own single request: nothing of the failed one is replayed with it.
    await expectNextServed(shim.url);
    await settle();
    expect(writesAt(upstream)).toBe(2);
  });

  it('is sent once when the upstream drops a kept-alive connection the shim reuses', async () => {
    const { shim, upstream } = await setUp();
    await expectNextServed(shim.url);
    upstream.nextRequest((req) => req.socket.destroy());

    const response = await legacyWrite(shim.url);
    await settle();

    expect(upstream.connections()).toBe(1);
    expect(response.status).toBe(502);
    expect(writesAt(upstream)).toBe(2);
  });
});

describe('a write whose body did not arrive whole', () => {
  const target: Record<Route, string> = {
    'body-style': '/connection/metadata',
    'path-style': '/connection/conn-1/metadata?provider_config_key=unauth',
  };
  const cases: Array<[Route, 'translate' | 'validate', 'end' | 'destroy']> = [];
  for (const route of ROUTES)
    for (const stage of ['translate', 'validate'] as const)
      for (const then of ['end', 'destroy'] as const) cases.push([route, stage, then]);

  it.each(cases)(
    'is never forwarded (%s route, %s stage, client %s after 10 of 100 bytes)',
    async (route, stage, then) => {
      const routeId = route === 'body-style' ? 'connection-metadata' : 'connection-path-metadata';
      const { shim, upstream } = await setUp(undefined, { routes: { [routeId]: { stage } } });
      const head =
        `PATCH ${target[route]} HTTP/1.1\r\nHost: shim\r\nAuthorization: Bearer ${DEV_KEY}\r\n` +
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n';

      const exchange = await exchangeRaw(shim.url, `${head}{"connecti`, { then, timeoutMs: 1_000 });
      await settle();

      // A half-closed client may still read node:http's own 400 for the cut request; nothing else.
      expect([0, 400]).toContain(exchange.status);
      expect(upstream.requests).toEqual([]);
      expect(upstream.connections()).toBe(0);
      await expectNextServed(shim.url, route);
    },
  );
});

describe('a streamed answer the upstream cuts halfway', () => {
  /** 200 with a Content-Length of 100 or chunked, four bytes of body, then a close (FIN, no reset). */
  const cutAnswer =
    (framing: 'content-length' | 'chunked'): RequestFault =>
    (_req, res) => {
      res.writeHead(200, {
        ...JSON_TYPE,
        ...(framing === 'content-length' ? { 'content-length': 100 } : {}),
      });
      res.write('{"co', () => res.socket?.destroy());
    };
  const write = `PATCH /connection/metadata HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: ${BODY.length}`;
  type Case = [string, string, string, Record<string, unknown>, 'content-length' | 'chunked'];
  const cases: Case[] = [
    [
      'GET /connection/:id translated',
      'GET /connection/conn-1?provider_config_key=unauth HTTP/1.1',
      'connection-get',
      {},
      'content-length',
    ],
    ['GET /connection translated', 'GET /connection HTTP/1.1', 'connection-list', {}, 'chunked'],
    [
      'DELETE /connection/:id translated',
      'DELETE /connection/conn-1?provider_config_key=unauth HTTP/1.1',
      'connection-delete',
      {},
      'content-length',
    ],
    [
      'a write in the passthrough stage',
      write,
      'connection-metadata',
      { stage: 'passthrough' },
      'content-length',
    ],
    ['a write in the validate stage', write, 'connection-metadata', { stage: 'validate' }, 'chunked'],
    [
      'a write passed through in the canary stage',
      write,
      'connection-metadata',
      { stage: 'canary', canaryPercent: 0 },
      'content-length',
    ],
  ];

  it.each(cases)(
    'closes the client’s connection on %s, logs it and records it as failed',
    async (_name, head, routeId, route, framing) => {
      const { shim, upstream } = await setUp(undefined, { routes: { [routeId]: route } });
      upstream.nextRequest(cutAnswer(framing));
      const body = head.startsWith('PATCH') ? BODY : '';

      // Keep-alive: a connection the shim left open would hang the client past this bound.
      const reply = await exchangeRaw(
        shim.url,
        `${head}\r\nHost: shim\r\nAuthorization: Bearer ${DEV_KEY}\r\n\r\n${body}`,
        { timeoutMs: 3_000 },
      );

      expect(reply.status).toBe(200);
      expect(reply.closed).toBe(true);
      expect(upstream.requests).toHaveLength(1);
      // Status 0: the answer never reached the client whole, whatever its head said.
      await expect
        .poll(() => shim.logs().find((line) => line.msg === 'deprecated endpoint called'))
        .toMatchObject({ route: routeId, status: 0, action: 'failed' });
      expect(shim.logs()).toContainEqual(
        expect.objectContaining({ msg: 'upstream request failed', failure: 'lost' }),
      );
      expect(shim.shim.inFlight()).toBe(0);
    },
  );
});
