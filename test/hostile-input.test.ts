import { isUtf8 } from 'node:buffer';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEV_KEY, type FakeNango, startFakeNango } from './support/fake-nango.js';
import { answerCount, exchangeRaw, jsonBodyOf, statusOf } from './support/raw-http.js';
import { type RunningShim, startShim } from './support/shim.js';
import { listen, type RawResponse, request, startUpstream } from './support/upstream.js';

const BODY_LIMIT = 1024 * 1024;
const HEADERS_TIMEOUT_MS = 500;
const AUTH = `Bearer ${DEV_KEY}`;
const JSON_HEADERS = { authorization: AUTH, 'content-type': 'application/json' };

let fake: FakeNango;
let shim: RunningShim;

beforeEach(async () => {
  fake = await startFakeNango();
  shim = await startShim(fake.url, {
    server: { bodyLimitBytes: BODY_LIMIT, headersTimeoutMs: HEADERS_TIMEOUT_MS, requestTimeoutMs: 5_000 },
  });
});

afterEach(async () => {
  await shim.close();
  await fake.close();
});

/** Requests the fake Nango received on the successor of the metadata routes. */
function successorWrites(): number {
  return fake.requests.filter((seen) => seen.url.startsWith('/connections/metadata')).length;
}

function patchMetadata(body: string | Buffer, path = '/connection/metadata'): Promise<RawResponse> {
  return request(shim.url, { method: 'PATCH', path, headers: JSON_HEADERS, body });
}

function errorOf(response: RawResponse): { code?: string; errors?: unknown[] } {
  return (JSON.parse(response.body.toString('utf8')) as { error: { code?: string } }).error;
}

/** The shim keeps serving: a pass-through read and a translated write both succeed. */
async function expectStillServing(): Promise<void> {
  const read = await request(shim.url, { path: '/connections', headers: { authorization: AUTH } });
  expect(read.status).toBe(200);
  const write = await patchMetadata(
    '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"alive":true}}',
  );
  expect(write.status).toBe(200);
}

/** Lets anything the shim might still forward arrive before counting. */
const settle = (ms = 200) => new Promise((resolve) => setTimeout(resolve, ms));

function rawHead(method: string, target: string, headers: Record<string, string | number>): string {
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return `${method} ${target} HTTP/1.1\r\nHost: shim.test\r\n${lines.join('')}\r\n`;
}

describe('deeply nested JSON', () => {
  const DEPTH = 100_000;
  const deepArray = `${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}`;
  const deepObject = `${'{"a":'.repeat(DEPTH)}1${'}'.repeat(DEPTH)}`;

  it.each([
    ['arrays', deepArray],
    ['objects', deepObject],
  ])(
    'answers 400 to metadata nested 100 000 levels deep in %s, and forwards nothing',
    async (_kind, deep) => {
      const response = await patchMetadata(
        `{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"deep":${deep}}}`,
      );

      expect(response.status).toBe(400);
      expect(errorOf(response).code).toBe('invalid_body');
      expect(successorWrites()).toBe(0);
      await expectStillServing();
    },
  );

  it('answers 400 to a body-style body that is itself nested 100 000 levels deep', async () => {
    const response = await patchMetadata(deepArray);

    expect(response.status).toBe(400);
    expect(successorWrites()).toBe(0);
  });

  it('answers the path-style route as Nango failed to store it: its generic 500, nothing forwarded', async () => {
    const response = await patchMetadata(
      `{"deep":${deepObject}}`,
      '/connection/conn-1/metadata?provider_config_key=unauth',
    );

    expect(response.status).toBe(500);
    expect(errorOf(response).code).toBe('generic_error_support');
    expect(successorWrites()).toBe(0);
    expect(shim.logs().filter((line) => line.msg === 'migration failed')).toEqual([]);
    await expectStillServing();
  });
});

interface PushResult {
  text: string;
  written: number;
  closed: boolean;
  peakRssGrowth: number;
}

/**
 * Writes `head`, then up to `total` body bytes (one reused buffer, honouring back-pressure, so the client
 * itself holds no more than a chunk), until the server closes the connection. Samples the process's RSS,
 * which includes the in-process shim, throughout.
 */
function pushBody(head: string, total: number, framing: 'length' | 'chunked'): Promise<PushResult> {
  const url = new URL(shim.url);
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  const frame = framing === 'chunked' ? `${chunk.length.toString(16)}\r\n` : '';
  return new Promise((resolve) => {
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 5);
    const socket = net.connect(Number(url.port), url.hostname);
    let text = '';
    let written = 0;
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearInterval(sampler);
      clearTimeout(deadline);
      socket.destroy();
      resolve({ text, written, closed, peakRssGrowth: peak - baseline });
    };
    const deadline = setTimeout(() => finish(false), 10_000);
    const pump = () => {
      while (!done && !socket.destroyed && written < total) {
        written += chunk.length;
        const more =
          framing === 'chunked'
            ? socket.write(frame) && socket.write(chunk) && socket.write('\r\n')
            : socket.write(chunk);
        if (!more) return void socket.once('drain', pump);
      }
      if (framing === 'chunked' && written >= total) socket.write('0\r\n\r\n');
    };
    socket.on('data', (data: Buffer) => {
      text += data.toString('latin1');
    });
    socket.on('error', () => {});
    socket.on('close', () => finish(true));
    socket.write(head, pump);
  });
}

describe('bodies over server.bodyLimitBytes', () => {
  const TOTAL = 50 * 1024 * 1024;
  it.each([
    ['a declared Content-Length', 'length' as const],
    ['chunked framing', 'chunked' as const],
  ])('answers 413 to 50 MB with %s without reading it, and closes the connection', async (_name, framing) => {
    const framingHeader: Record<string, string | number> =
      framing === 'length' ? { 'Content-Length': TOTAL } : { 'Transfer-Encoding': 'chunked' };
    const head = rawHead('PATCH', '/connection/metadata', {
      Authorization: AUTH,
      'Content-Type': 'application/json',
      ...framingHeader,
    });

    const result = await pushBody(head, TOTAL, framing);

    expect(statusOf(result.text)).toBe(413);
    expect(result.text).toContain('"code":"payload_too_large"');
    expect(result.closed).toBe(true);
    expect(result.written).toBeLessThan(TOTAL);
    expect(result.peakRssGrowth / 1024 / 1024).toBeLessThan(25);
    expect(successorWrites()).toBe(0);
    await expectStillServing();
  });
});

describe('a Content-Length that disagrees with the body', () => {
  const body = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"n":1}}';

  it('reads a shorter one as a truncated body and the rest as a bad request: 400, nothing forwarded', async () => {
    const head = rawHead('PATCH', '/connection/metadata', {
      Authorization: AUTH,
      'Content-Type': 'application/json',
      'Content-Length': body.length - 5,
    });

    const exchange = await exchangeRaw(shim.url, head + body);
    await settle();

    // The leftover bytes are not HTTP: node:http refuses them as the next request and closes the connection.
    expect(statusOf(exchange.text)).toBe(400);
    expect(exchange.closed).toBe(true);
    expect(successorWrites()).toBe(0);
    await expectStillServing();
  });

  it('waits for the missing bytes of a longer one, and forwards nothing when they never come', async () => {
    const head = rawHead('PATCH', '/connection/metadata', {
      Authorization: AUTH,
      'Content-Type': 'application/json',
      'Content-Length': body.length + 50,
    });

    const exchange = await exchangeRaw(shim.url, head + body, { timeoutMs: 600 });
    await settle();

    expect(exchange.text).toBe('');
    expect(successorWrites()).toBe(0);
    await expectStillServing();
  });
});

describe('request smuggling', () => {
  const smuggled = 'DELETE /connection/conn-1?provider_config_key=unauth HTTP/1.1\r\nHost: shim.test\r\n\r\n';
  const chunkedBody = `0\r\n\r\n${smuggled}`;
  const variants: Array<[string, string]> = [
    [
      'Content-Length with Transfer-Encoding',
      `Content-Length: ${chunkedBody.length}\r\nTransfer-Encoding: chunked\r\n`,
    ],
    ['Transfer-Encoding with Content-Length', `Transfer-Encoding: chunked\r\nContent-Length: 5\r\n`],
    ['two different Content-Lengths', `Content-Length: 5\r\nContent-Length: ${chunkedBody.length}\r\n`],
    ['a Transfer-Encoding other than chunked', `Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n`],
    ['whitespace before the colon', `Transfer-Encoding : chunked\r\nContent-Length: 5\r\n`],
  ];
  const targets = ['/connection/metadata', '/connections'];

  for (const target of targets) {
    it.each(variants)(
      `refuses ${target} with %s, and the upstream never sees two requests`,
      async (_name, framing) => {
        const bytes =
          `PATCH ${target} HTTP/1.1\r\nHost: shim.test\r\nAuthorization: ${AUTH}\r\n` +
          `Content-Type: application/json\r\n${framing}\r\n${chunkedBody}`;

        const exchange = await exchangeRaw(shim.url, bytes);
        await settle();

        expect(statusOf(exchange.text)).toBe(400);
        expect(answerCount(exchange.text)).toBe(1);
        expect(exchange.closed).toBe(true);
        expect(fake.requests).toEqual([]);
      },
    );
  }
});

describe('bytes that are not HTTP after a whole request', () => {
  const write = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"n":2}}';

  it.each([
    ['a translated write', '/connection/metadata'],
    ['a pass-through write', '/connections/metadata'],
  ])('answers %s first, then refuses the bytes after it and closes', async (_name, target) => {
    const head = rawHead('PATCH', target, {
      Authorization: AUTH,
      'Content-Type': 'application/json',
      'Content-Length': write.length,
    });

    // A client whose body runs past its Content-Length: the rest is read as the next request.
    const exchange = await exchangeRaw(shim.url, `${head}${write}garbage\r\n\r\n`);

    // The write was applied, so its own answer comes first (RFC 9112 §9.3.2), never the 400 in its place.
    expect(successorWrites()).toBe(1);
    const [answer, refusal] = exchange.text.split(/(?=HTTP\/1\.1 )/);
    expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(answer?.endsWith(`\r\n\r\n${write}`)).toBe(true);
    expect(refusal).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*"code":"bad_request"/);
    expect(exchange.closed).toBe(true);
  });

  it('never writes its refusal into the body of a streamed answer under way', async () => {
    const slow = await startUpstream((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 10 });
      res.write('first');
      setTimeout(() => res.end('-last'), 300);
    });
    const slowShim = await startShim(slow.url);
    try {
      const port = Number(new URL(slowShim.url).port);
      const text = await new Promise<string>((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        let received = '';
        socket.on('data', (chunk: Buffer) => {
          received += chunk.toString('latin1');
          // The answer has started: now the client sends bytes that are not HTTP.
          if (received.endsWith('first')) socket.write('garbage\r\n\r\n');
        });
        socket.on('error', () => {});
        socket.on('close', () => resolve(received));
        socket.write('GET /files/1 HTTP/1.1\r\nHost: shim.test\r\n\r\n');
        setTimeout(() => socket.destroy(), 3_000);
      });

      // The 200's ten bytes are its own: the refusal follows it whole, and the connection then closes.
      const [answer, refusal] = text.split(/(?=HTTP\/1\.1 )/);
      expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nfirst-last$/);
      expect(refusal).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*"code":"bad_request"/);
    } finally {
      await slowShim.close();
      await slow.close();
    }
  });
});

describe('bodies that are not what they claim', () => {
  it("sends the body it built without the client's Content-Encoding, which described other bytes", async () => {
    // Without a JSON Content-Type Nango leaves the body unread, whatever its coding: the path-style PATCH
    // merges nothing and answers res.send(undefined), an empty 200 (replay.test.ts has the same case plain).
    const response = await request(shim.url, {
      method: 'PATCH',
      path: '/connection/conn-1/metadata?provider_config_key=unauth',
      headers: { authorization: AUTH, 'content-encoding': 'gzip' },
      body: gzipSync('{"plan":"pro"}'),
    });

    expect(response.status).toBe(200);
    expect(response.body.length).toBe(0);
    const sent = fake.requests.filter((seen) => seen.url === '/connections/metadata');
    expect(sent.map((seen) => seen.headers['content-encoding'])).toEqual([undefined]);
    expect(sent.map((seen) => seen.body)).toEqual([
      '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{}}',
    ]);
  });

  it('reads a gzip, deflate or br body as Nango does, and forwards it decoded', async () => {
    // Nango's express.json() inflates a compressed body (body-parser's default); the legacy routes run on it.
    const legacy = await startFakeNango({ legacyRoutes: true });
    try {
      const bodyStyle =
        '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"zipped":true}}';
      const calls = [
        { path: '/connection/metadata', coding: 'gzip', body: gzipSync(bodyStyle) },
        { path: '/connection/metadata', coding: 'deflate', body: deflateSync(bodyStyle) },
        { path: '/connection/metadata', coding: 'br', body: brotliCompressSync(bodyStyle) },
        {
          path: '/connection/conn-1/metadata?provider_config_key=unauth',
          coding: 'gzip',
          body: gzipSync('{"zipped":true}'),
        },
      ];
      for (const { path, coding, body } of calls) {
        const headers = { ...JSON_HEADERS, 'content-encoding': coding };
        const expected = await request(legacy.url, { method: 'PATCH', path, headers, body });
        expect(expected.status).toBe(200);
        const response = await request(shim.url, { method: 'PATCH', path, headers, body });
        expect({ coding, status: response.status, body: response.body.toString('utf8') }).toEqual({
          coding,
          status: expected.status,
          body: expected.body.toString('utf8'),
        });
      }
      const sent = fake.requests.filter((seen) => seen.url === '/connections/metadata');
      expect(sent.map((seen) => seen.body)).toEqual([
        bodyStyle,
        bodyStyle,
        bodyStyle,
        '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"zipped":true}}',
      ]);
      expect(sent.every((seen) => seen.headers['content-encoding'] === undefined)).toBe(true);
    } finally {
      await legacy.close();
    }
  });

  it('answers a body Nango cannot decode with its generic 500, before auth, and forwards nothing', async () => {
    // body-parser refuses an unknown coding (415) or bytes not in the coding named (400); Nango's error handler
    // answers either as any unexpected error (nango-api.md §1 "Unexpected error").
    for (const [coding, body] of [
      ['x-gzip', gzipSync('{}')],
      ['gzip, br', gzipSync('{}')],
      ['gzip', Buffer.from('{"metadata":{}}')],
    ] as const) {
      const response = await request(shim.url, {
        method: 'PATCH',
        path: '/connection/metadata',
        headers: { 'content-type': 'application/json', 'content-encoding': coding },
        body,
      });
      expect(response.status).toBe(500);
      expect(errorOf(response).code).toBe('generic_error_support');
    }
    expect(successorWrites()).toBe(0);
  });

  it('answers 413 to a compressed body that decodes past the limit, without inflating it whole', async () => {
    const response = await request(shim.url, {
      method: 'PATCH',
      path: '/connection/metadata',
      headers: { ...JSON_HEADERS, 'content-encoding': 'gzip' },
      body: gzipSync(Buffer.alloc(64 * BODY_LIMIT, 0x20)),
    });

    expect(response.status).toBe(413);
    expect(errorOf(response).code).toBe('payload_too_large');
    expect(successorWrites()).toBe(0);
    await expectStillServing();
  });

  it('reads invalid UTF-8 inside a string as U+FFFD, as Nango does, and forwards valid UTF-8', async () => {
    const body = Buffer.concat([
      Buffer.from('{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"name":"caf'),
      Buffer.from([0xff, 0xfe, 0xed, 0xa0, 0x80]),
      Buffer.from('"}}'),
    ]);

    const response = await patchMetadata(body);

    expect(response.status).toBe(200);
    expect(isUtf8(response.body)).toBe(true);
    const sent = fake.requests.find((seen) => seen.url === '/connections/metadata');
    expect(sent).toBeDefined();
    expect(JSON.parse(sent?.body ?? '')).toEqual({
      connection_id: 'conn-1',
      provider_config_key: 'unauth',
      metadata: { name: 'caf\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD' },
    });
    expect(response.body.toString('utf8')).toBe(sent?.body);
  });

  it('drops a UTF-8 byte order mark before the JSON, as Nango does, and forwards the JSON alone', async () => {
    const json = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"bom":true}}';

    const response = await patchMetadata(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(json)]));

    expect(response.status).toBe(200);
    expect(response.body.toString('utf8')).toBe(json);
    expect(
      fake.requests.filter((seen) => seen.url === '/connections/metadata').map((seen) => seen.body),
    ).toEqual([json]);
  });

  it('answers 400 invalid_json to invalid UTF-8 outside a string, and forwards nothing', async () => {
    const body = Buffer.concat([
      Buffer.from('{"connection_id":"conn-1",'),
      Buffer.from([0xff]),
      Buffer.from('}'),
    ]);

    const response = await patchMetadata(body);

    expect(response.status).toBe(400);
    expect(errorOf(response).code).toBe('invalid_json');
    expect(successorWrites()).toBe(0);
  });

  it('lets the last of duplicate keys win, as Nango does, and forwards the body re-serialised', async () => {
    const body =
      '{"connection_id":"ghost","provider_config_key":"unauth","connection_id":"conn-1",' +
      '"metadata":{"n":1,"n":2},  "metadata" : {"n":3,"n":4}}';

    const response = await patchMetadata(body);

    const reserialised = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"n":4}}';
    expect(response.status).toBe(200);
    expect(response.body.toString('utf8')).toBe(reserialised);
    expect(
      fake.requests.filter((seen) => seen.url === '/connections/metadata').map((seen) => seen.body),
    ).toEqual([reserialised]);
  });

  it('judges the last of duplicate keys: a valid first value does not let an invalid last one through', async () => {
    const response = await patchMetadata(
      '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{},"connection_id":42}',
    );

    expect(response.status).toBe(400);
    expect(errorOf(response).code).toBe('invalid_body');
    expect(successorWrites()).toBe(0);
  });
});

describe('oversized and numerous headers', () => {
  const bigHeaders = rawHead('GET', '/connections', { Authorization: AUTH, 'X-Big': 'a'.repeat(20 * 1024) });

  it('refuses headers over 16 KB and closes that connection, while serving the next client', async () => {
    const exchange = await exchangeRaw(shim.url, bigHeaders);

    expect([400, 431]).toContain(exchange.status);
    expect(exchange.closed).toBe(true);
    expect(fake.requests).toEqual([]);
    await expectStillServing();
  });

  // The clientError handler must keep Node's 431 for HPE_HEADER_OVERFLOW instead of a generic 400.
  it('answers 431 Request Header Fields Too Large (RFC 6585 §5) to headers over 16 KB', async () => {
    const exchange = await exchangeRaw(shim.url, bigHeaders);

    expect(exchange.status).toBe(431);
  });

  it('serves a request with 900 headers, on a pass-through and a translated route', async () => {
    const many: Record<string, string> = { Authorization: AUTH, Connection: 'close' };
    for (let i = 0; i < 900; i += 1) many[`X-H${i}`] = 'v';
    const body = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"many":true}}';

    const read = await exchangeRaw(shim.url, rawHead('GET', '/connections', many));
    const write = await exchangeRaw(
      shim.url,
      rawHead('PATCH', '/connection/metadata', {
        'Content-Type': 'application/json',
        'Content-Length': body.length,
        ...many,
      }) + body,
    );

    expect(read.status).toBe(200);
    expect(write.status).toBe(200);
    expect(fake.requests).toHaveLength(2);
    expect(fake.requests.every((seen) => seen.headers['x-h899'] === 'v')).toBe(true);
  });

  // Node 20 keeps the first 1 000 header lines of a request and drops the rest (maxHeadersCount); Node
  // 22.23 and 24.21 refuse a request with more than 1 000 lines as too large. The shim follows its runtime,
  // asked the same question here: served, or refused with 431 in Nango's shape, and nothing forwarded.
  it('answers a request with 3 000 tiny headers as its Node does: served with the first 1 000, or a 431', async () => {
    const head = `GET /connections HTTP/1.1\r\nHost: shim.test\r\nAuthorization: ${AUTH}\r\nConnection: close\r\n`;
    const bytes = `${head}${'a: 1\r\n'.repeat(3_000)}\r\n`;
    const runtimeServes = (await bareNodeStatus(bytes)) === 200;

    const exchange = await exchangeRaw(shim.url, bytes);

    if (runtimeServes) {
      expect(exchange.status).toBe(200);
      expect(fake.requests).toHaveLength(1);
    } else {
      expect(exchange.status).toBe(431);
      expect(jsonBodyOf(exchange.text)).toEqual({
        error: { code: 'request_header_fields_too_large', message: 'The request headers are too large.' },
      });
      expect(fake.requests).toEqual([]);
    }
    await expectStillServing();
  });
});

/** The status a bare node:http server of this runtime answers to these bytes with. */
async function bareNodeStatus(bytes: string): Promise<number | undefined> {
  const server = http.createServer((_req, res) => res.end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    return (await exchangeRaw(`http://127.0.0.1:${port}`, bytes)).status;
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

/** Sends a request's header section one byte every `intervalMs`, for `durationMs` at most. */
function dripHeaders(
  durationMs: number,
  intervalMs = 100,
): Promise<{ closed: boolean; text: string; ms: number }> {
  const url = new URL(shim.url);
  const head = `GET /connections HTTP/1.1\r\nHost: shim.test\r\nAuthorization: ${AUTH}\r\nX-Slow: ${'s'.repeat(500)}`;
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = net.connect(Number(url.port), url.hostname);
    let text = '';
    let sent = 0;
    const drip = setInterval(() => {
      if (!socket.destroyed) socket.write(head.charAt(sent++ % head.length));
    }, intervalMs);
    const finish = (closed: boolean) => {
      clearInterval(drip);
      clearTimeout(deadline);
      socket.destroy();
      resolve({ closed, text, ms: performance.now() - started });
    };
    const deadline = setTimeout(() => finish(false), durationMs);
    socket.on('data', (data: Buffer) => {
      text += data.toString('latin1');
    });
    socket.on('error', () => {});
    socket.once('close', () => finish(true));
  });
}

describe('slow headers (slowloris)', () => {
  it('serves other clients while one sends its headers byte by byte, and never forwards it', async () => {
    const slow = dripHeaders(1_500);
    await settle(HEADERS_TIMEOUT_MS);

    await expectStillServing();
    await slow;

    expect(fake.requests.every((seen) => seen.headers['x-slow'] === undefined)).toBe(true);
  });

  // node:http checks headersTimeout only every `connectionsCheckingInterval` (30 s by default): the server
  // must check often enough for a 500 ms headersTimeoutMs to cut a slow client in about that time.
  it('cuts a client whose headers take longer than server.headersTimeoutMs', async () => {
    const slow = await dripHeaders(HEADERS_TIMEOUT_MS + 1_500);

    expect(slow.closed).toBe(true);
    expect(slow.text).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(slow.text).toContain('"code":"request_timeout"');
  });
});

describe('request targets that name another host', () => {
  let evilConnections: number;
  let evil: net.Server;
  let evilHost: string;

  beforeEach(async () => {
    evilConnections = 0;
    evil = net.createServer((socket) => {
      evilConnections += 1;
      socket.destroy();
    });
    evilHost = `127.0.0.1:${await listen(evil)}`;
  });

  afterEach(async () => {
    await new Promise<void>((resolve) => evil.close(() => resolve()));
  });

  it.each([
    [
      'an absolute-form',
      (host: string) => `http://${host}/connections?via=absolute`,
      '/connections?via=absolute',
    ],
    ['an https absolute-form', (host: string) => `https://${host}/connections`, '/connections'],
    ['an authority-less absolute-form', (host: string) => `http://${host}`, '/'],
    ['a //-prefixed', (host: string) => `//${host}/connections`, '//HOST/connections'],
    [
      'a //-prefixed legacy write',
      (host: string) => `//${host}/connection/metadata`,
      '//HOST/connection/metadata',
    ],
  ])('passes %s target to the configured upstream, on its own path', async (_name, target, expected) => {
    const bytes = rawHead('GET', target(evilHost), { Authorization: AUTH, Connection: 'close' });

    const exchange = await exchangeRaw(shim.url, bytes);

    expect(exchange.status).toBeGreaterThan(0);
    expect(fake.requests.map((seen) => seen.url)).toEqual([expected.replace('HOST', evilHost)]);
    expect(evilConnections).toBe(0);
  });

  // The absolute form's host is never contacted. Nango's router (Express 5: parseurl hands a `#` to
  // url.parse) drops a fragment and routes what is left, so `/connection/metadata#x` is the legacy route
  // there, and must be the migration here, not a bypass.
  it.each([
    'http://HOST/connection/metadata',
    '/connection/metadata#x',
    '/connection/metadata/#?a=1',
    'http://HOST/connection/metadata#x',
  ])('translates a legacy write to %s on the configured upstream only', async (target) => {
    const body = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"via":"target"}}';
    const bytes =
      rawHead('PATCH', target.replace('HOST', evilHost), {
        Authorization: AUTH,
        'Content-Type': 'application/json',
        'Content-Length': body.length,
        Connection: 'close',
      }) + body;

    const exchange = await exchangeRaw(shim.url, bytes);

    expect(exchange.status).toBe(200);
    expect(fake.requests.map((seen) => `${seen.method} ${seen.url}`)).toEqual([
      'PATCH /connections/metadata',
    ]);
    expect(evilConnections).toBe(0);
  });

  it('passes an absolute-form target on with its dot segments, as Nango reads it (no route of its own)', async () => {
    const bytes = rawHead('GET', `http://${evilHost}/x/%2e%2e/connection`, {
      Authorization: AUTH,
      Connection: 'close',
    });

    const exchange = await exchangeRaw(shim.url, bytes);

    expect(exchange.status).toBe(404);
    expect(fake.requests.map((seen) => seen.url)).toEqual(['/x/%2e%2e/connection']);
  });

  it('never tunnels: CONNECT to another host is closed without a connection to it', async () => {
    const exchange = await exchangeRaw(shim.url, `CONNECT ${evilHost} HTTP/1.1\r\nHost: ${evilHost}\r\n\r\n`);
    await settle();

    expect(exchange.closed).toBe(true);
    expect(exchange.text).not.toMatch(/^HTTP\/1\.1 2/);
    expect(fake.requests).toEqual([]);
    expect(evilConnections).toBe(0);
  });

  it('sends an absolute-form WebSocket upgrade to the configured upstream, not to the named host', async () => {
    const bytes = rawHead('GET', `ws://${evilHost}/socket`, {
      Connection: 'Upgrade',
      Upgrade: 'websocket',
      'Sec-WebSocket-Version': 13,
      'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
    });

    await exchangeRaw(shim.url, bytes, { timeoutMs: 1_000 });

    expect(fake.requests.map((seen) => seen.url)).toEqual(['/socket']);
    expect(evilConnections).toBe(0);
  });

  it('answers 400 invalid_request_target to an asterisk-form target', async () => {
    const exchange = await exchangeRaw(shim.url, rawHead('OPTIONS', '*', { Connection: 'close' }));

    expect(exchange.status).toBe(400);
    expect(exchange.text).toContain('"code":"invalid_request_target"');
    expect(fake.requests).toEqual([]);
  });
});
