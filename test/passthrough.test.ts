import { createHash, randomBytes } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { closedAfterEach } from './support/cleanup.js';
import { answerCount, exchangeRaw, jsonBodyOf } from './support/raw-http.js';
import { type RunningShim, startShim } from './support/shim.js';
import {
  digest,
  headerPairs,
  type RecordingUpstream,
  readAll,
  request,
  sha256,
  startUpstream,
  type UpgradeHandler,
  type UpstreamHandler,
  within,
} from './support/upstream.js';

/**
 * Everything no migration owns goes to the upstream unchanged through http-proxy-3 and comes back
 * unchanged, streamed both ways, over pooled upstream sockets; WebSocket upgrades included.
 */

let upstream: RecordingUpstream | undefined;
let shim: RunningShim | undefined;
const track = closedAfterEach();

async function through(
  handler: UpstreamHandler,
  onUpgrade?: UpgradeHandler,
  overrides: Record<string, unknown> = {},
) {
  upstream = track(await startUpstream(handler, onUpgrade ? { onUpgrade } : {}));
  shim = track(await startShim(upstream.url, overrides));
  return { upstream, shim, shimPort: Number(new URL(shim.url).port) };
}

/** Answers 200 with a JSON account of the request body once it has all arrived. */
const echoBody: UpstreamHandler = async (req, res) => {
  const body = await readAll(req);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ length: body.length, sha256: sha256(body) }));
};

describe('request line and headers', () => {
  const targets: Array<[string, string, string?]> = [
    ['GET', '/providers'],
    ['GET', '/providers?x=1&x=2&y=%20a+b&z=%zz&e=&&f=%E2%82%AC&g=a%26b%3Dc'],
    ['PUT', '/connection/metadata?connection_id=a%2Fb&provider_config_key=github', '{"metadata":{"a":1}}'],
    ['POST', '/connection', '{"provider_config_key":"github"}'],
    ['PATCH', '/connection/some-id', '{"x":true}'],
    ['DELETE', '/integrations/github?force=true'],
    ['OPTIONS', '/connections'],
    ['PROPFIND', '/dav/folder'],
    // Dot segments and encoded separators reach the upstream as sent, never resolved into another route.
    ['GET', '/a/../connection/metadata'],
    ['GET', '/a%2Fb/%2e%2e/c;matrix=1'],
    ['GET', '/{id}|^`?q=\'"<>'],
    ['GET', '//double//slash/'],
  ];

  it.each(targets)('passes %s %s to the upstream unchanged', async (method, target, body) => {
    const { upstream, shim } = await through(echoBody);

    const res = await request(shim.url, {
      method,
      path: target,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body }),
    });

    expect(res.status).toBe(200);
    expect(upstream.requests).toHaveLength(1);
    expect(upstream.requests[0]?.method).toBe(method);
    expect(upstream.requests[0]?.url).toBe(target);
    const sent = Buffer.from(body ?? '');
    expect(JSON.parse(res.body.toString())).toEqual({ length: sent.length, sha256: sha256(sent) });
  });

  it('sends a PATCH, POST or PUT that came without a body without one, over a pooled socket', async () => {
    // RFC 9112 §6.3: neither Content-Length nor Transfer-Encoding means no body, which Nango's JSON parser
    // tells apart from an empty one (an empty JSON body parses as {}, none leaves req.body undefined).
    const { upstream, shim } = await through(echoBody);
    for (const method of ['PATCH', 'POST', 'PUT', 'PATCH']) {
      const reply = await exchangeRaw(
        shim.url,
        `${method} /providers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n`,
      );
      expect(reply.status).toBe(200);
    }
    expect(
      upstream.requests.map((seen) => [
        seen.method,
        seen.headers['content-length'],
        seen.headers['transfer-encoding'],
      ]),
    ).toEqual([
      ['PATCH', undefined, undefined],
      ['POST', undefined, undefined],
      ['PUT', undefined, undefined],
      ['PATCH', undefined, undefined],
    ]);
    expect(new Set(upstream.requests.map((seen) => seen.remotePort)).size).toBe(1);
  });

  it('passes arbitrary headers through and adds X-Forwarded-For, -Proto and -Host', async () => {
    const { upstream, shim, shimPort } = await through(echoBody);
    const sent = {
      authorization: 'Bearer 6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b',
      'x-custom': 'Value  with   spaces, commas; and "quotes"',
      'x-repeated': ['one', 'two'],
      'x-empty': '',
      accept: 'application/json, text/plain;q=0.5',
      'user-agent': 'nango-node/0.66.2',
      cookie: 'a=1; b=2',
      'if-none-match': 'W/"abc"',
    };

    const res = await request(shim.url, { path: '/providers', headers: sent });

    expect(res.status).toBe(200);
    const seen = upstream.requests[0]?.headers ?? {};
    expect(seen).toMatchObject({
      authorization: sent.authorization,
      'x-custom': sent['x-custom'],
      // RFC 9110 §5.3: repeated field lines may be combined with a comma; node:http does exactly that.
      'x-repeated': 'one, two',
      'x-empty': '',
      accept: sent.accept,
      'user-agent': sent['user-agent'],
      cookie: sent.cookie,
      'if-none-match': sent['if-none-match'],
      'x-forwarded-for': '127.0.0.1',
      'x-forwarded-proto': 'http',
      'x-forwarded-host': `127.0.0.1:${shimPort}`,
    });
    // The Host is the upstream's (changeOrigin): Nango behind a virtual host needs its own name.
    expect(seen.host).toBe(`127.0.0.1:${upstream.port}`);
  });

  it('prefixes every target with the path of an upstream URL that has one', async () => {
    upstream = track(await startUpstream(echoBody));
    shim = track(await startShim(`${upstream.url}/nango/`, {}));

    await request(shim.url, { path: '/providers?x=1&y=%20' });
    await request(shim.url, { path: '//double//slash/' });

    expect(upstream.requests.map((seen) => seen.url)).toEqual([
      '/nango/providers?x=1&y=%20',
      '/nango//double//slash/',
    ]);
  });

  it('appends to an X-Forwarded-For the client already sent', async () => {
    const { upstream, shim } = await through(echoBody);

    await request(shim.url, { path: '/providers', headers: { 'x-forwarded-for': '203.0.113.7' } });

    expect(upstream.requests[0]?.headers['x-forwarded-for']).toBe('203.0.113.7,127.0.0.1');
  });

  it('keeps the X-Forwarded-Proto and -Host a proxy in front of it set, and adds no X-Forwarded-Port', async () => {
    const { upstream, shim } = await through(echoBody);

    await request(shim.url, {
      path: '/providers',
      headers: {
        'x-forwarded-for': '198.51.100.4, 203.0.113.7',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'api.example.com',
      },
    });

    const seen = upstream.requests[0]?.headers ?? {};
    // The same three headers, with the same rules, as a translated call sends (upstream-headers.ts).
    expect(seen['x-forwarded-for']).toBe('198.51.100.4, 203.0.113.7,127.0.0.1');
    expect(seen['x-forwarded-proto']).toBe('https');
    expect(seen['x-forwarded-host']).toBe('api.example.com');
    expect(
      Object.keys(seen)
        .filter((name) => name.startsWith('x-forwarded-'))
        .sort(),
    ).toEqual(['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto']);
  });

  it("does not forward the client's connection options (RFC 9110 §7.6.1)", async () => {
    const { upstream, shim } = await through(echoBody);

    await request(shim.url, {
      path: '/providers',
      headers: { connection: 'close, x-hop', 'x-hop': 'for the shim only', 'keep-alive': 'timeout=1' },
    });

    const seen = upstream.requests[0]?.headers ?? {};
    expect(seen['x-hop']).toBeUndefined();
    expect(seen['keep-alive']).toBeUndefined();
    // The upstream connection is the shim's own, pooled one.
    expect(seen.connection).toBe('keep-alive');
  });

  it('does not pass on proxy credentials or challenges (RFC 9110 §11.7), as translated calls do not', async () => {
    const { upstream, shim } = await through((req, res) => {
      req.resume();
      res.writeHead(200, { 'proxy-authenticate': 'Basic realm="gateway"', 'content-type': 'text/plain' });
      res.end('ok');
    });

    // Absolute form, as a client configured with HTTP_PROXY=http://user:password@shim sends it.
    const res = await request(shim.url, {
      path: 'http://api.nango.dev/providers',
      headers: { 'proxy-authorization': 'Basic dXNlcjpwYXNzd29yZA==', authorization: 'Bearer key' },
    });

    expect(res.status).toBe(200);
    const seen = upstream.requests[0]?.headers ?? {};
    // Meant for the proxy the client was told to use, which asked for none: never Nango's to read.
    expect(seen['proxy-authorization']).toBeUndefined();
    expect(seen.authorization).toBe('Bearer key');
    expect(res.headers['proxy-authenticate']).toBeUndefined();
    expect(res.headers['content-type']).toBe('text/plain');
  });
});

describe('answers', () => {
  const answers: Array<[number, string]> = [
    [200, '{"providers":[]}'],
    [201, '{"created":true}'],
    [204, ''],
    [302, ''],
    [404, '{"error":{"code":"not_found"}}'],
    [500, 'plain text failure'],
    [503, '<html>maintenance</html>'],
  ];

  it.each(answers)('passes a %i answer back with its headers and body', async (status, body) => {
    const { shim } = await through((req, res) => {
      req.resume();
      res.writeHead(status, 'Custom Reason', [
        ['Content-Type', 'application/x-custom; charset=latin1'],
        ['Set-Cookie', 'session=abc; Path=/; HttpOnly'],
        ['Set-Cookie', 'theme=dark; Max-Age=60'],
        ['Set-Cookie', 'empty=; Expires=Thu, 01 Jan 1970 00:00:00 GMT'],
        ['Location', 'http://127.0.0.1:1/elsewhere?x=1'],
        ['X-Upstream', 'yes'],
        ['ETag', '"v1"'],
        ['Cache-Control', 'private, max-age=0'],
      ]);
      res.end(body);
    });

    const res = await request(shim.url, { path: '/anything' });

    expect(res.status).toBe(status);
    expect(res.body.toString()).toBe(body);
    const cookies = headerPairs(res.rawHeaders).filter(([name]) => name === 'set-cookie');
    expect(cookies.map(([, value]) => value)).toEqual([
      'session=abc; Path=/; HttpOnly',
      'theme=dark; Max-Age=60',
      'empty=; Expires=Thu, 01 Jan 1970 00:00:00 GMT',
    ]);
    expect(res.headers).toMatchObject({
      'content-type': 'application/x-custom; charset=latin1',
      // Not rewritten: the shim sets no autoRewrite/hostRewrite.
      location: 'http://127.0.0.1:1/elsewhere?x=1',
      'x-upstream': 'yes',
      etag: '"v1"',
      'cache-control': 'private, max-age=0',
    });
  });

  it.each([
    ['pass-through', '/providers'],
    ['a streamed translation', '/connection/conn-1?provider_config_key=github'],
  ])('passes the trailer fields of a chunked answer on, on %s', async (_route, target) => {
    const { upstream, shim } = await through((req, res) => {
      req.resume();
      res.writeHead(200, { 'Content-Type': 'text/plain', Trailer: 'X-Checksum, X-Part' });
      res.write('hello');
      res.addTrailers([
        ['X-Checksum', 'sha256=2cf24dba'],
        ['X-Part', 'one'],
        ['X-Part', 'two'],
      ]);
      res.end();
    });

    const reply = await exchangeRaw(
      shim.url,
      `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`,
    );

    expect(upstream.requests).toHaveLength(1);
    expect(reply.status).toBe(200);
    expect(reply.text).toMatch(/\r\ntrailer: X-Checksum, X-Part\r\n/i);
    // RFC 9110 §6.5: the fields after the last chunk are part of the answer, repeated ones included.
    expect(reply.text).toMatch(
      /\r\n5\r\nhello\r\n0\r\nx-checksum: sha256=2cf24dba\r\nx-part: one\r\nx-part: two\r\n\r\n$/i,
    );
  });

  it('passes a HEAD answer back without a body', async () => {
    const { upstream, shim } = await through((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1234' });
      res.end();
      req.resume();
    });

    const res = await request(shim.url, { method: 'HEAD', path: '/providers' });

    expect(upstream.requests[0]?.method).toBe('HEAD');
    expect(res.status).toBe(200);
    expect(res.headers['content-length']).toBe('1234');
    expect(res.body).toHaveLength(0);
  });
});

const MB = 1024 * 1024;

/** Chunk `index` of a deterministic stream: cheap to make twice, different at every offset. */
function patternChunk(index: number, size = 64 * 1024): Buffer {
  const chunk = Buffer.alloc(size, index % 251);
  chunk.writeUInt32BE(index, 0);
  return chunk;
}

function patternDigest(totalBytes: number): string {
  const hash = createHash('sha256');
  for (let i = 0; i * 64 * 1024 < totalBytes; i++) hash.update(patternChunk(i));
  return hash.digest('hex');
}

/** Writes to `stream` until it reports backpressure and no `drain` follows within `quietMs`. */
async function writeUntilBlocked(stream: NodeJS.WritableStream, limitBytes: number, quietMs = 300) {
  let written = 0;
  while (written < limitBytes) {
    const more = stream.write(patternChunk(written / (64 * 1024)));
    written += 64 * 1024;
    if (more) continue;
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        stream.removeListener('drain', onDrain);
        resolve(false);
      }, quietMs);
      const onDrain = () => {
        clearTimeout(timer);
        resolve(true);
      };
      stream.once('drain', onDrain);
    });
    if (!drained) break;
  }
  return written;
}

/** Writes the rest of the pattern stream from `from` bytes on, honouring backpressure, then ends it. */
async function writeRest(stream: NodeJS.WritableStream, from: number, totalBytes: number) {
  for (let written = from; written < totalBytes; written += 64 * 1024) {
    if (!stream.write(patternChunk(written / (64 * 1024)))) {
      await new Promise((resolve) => stream.once('drain', resolve));
    }
  }
  stream.end();
}

function openRequest(baseUrl: string, method: string, path: string, headers: http.OutgoingHttpHeaders = {}) {
  const url = new URL(baseUrl);
  const req = http.request({ host: url.hostname, port: url.port, method, path, headers, agent: false });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.on('response', resolve);
    req.on('error', reject);
  });
  return { req, response };
}

describe('bodies are streamed, never buffered', () => {
  it('passes a 20 MB request body and a 20 MB answer intact', async () => {
    const sent = randomBytes(20 * MB);
    const answer = randomBytes(20 * MB);
    const { upstream, shim } = await through(async (req, res) => {
      const received = await digest(req);
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'x-received': `${received.length} ${received.sha256}`,
      });
      res.end(answer);
    });

    const { req, response } = openRequest(shim.url, 'POST', '/files', {
      'content-type': 'application/octet-stream',
      'content-length': sent.length,
    });
    req.end(sent);
    const res = await within(15_000, '20 MB exchange', response);
    const got = await within(15_000, '20 MB answer', digest(res));

    expect(res.statusCode).toBe(200);
    expect(res.headers['x-received']).toBe(`${sent.length} ${sha256(sent)}`);
    expect(upstream.requests[0]?.headers['content-length']).toBe(String(sent.length));
    expect(got).toEqual({ length: answer.length, sha256: sha256(answer) });
  });

  it('hands the upstream the first chunk of a request body before the client sends the last', async () => {
    let firstSeen: (chunk: string) => void = () => {};
    const firstChunk = new Promise<string>((resolve) => {
      firstSeen = resolve;
    });
    const { shim } = await through((req, res) => {
      const chunks: string[] = [];
      req.on('data', (chunk: Buffer) => {
        if (chunks.length === 0) firstSeen(chunk.toString());
        chunks.push(chunk.toString());
      });
      req.on('end', () => res.end(chunks.join('')));
    });

    const { req, response } = openRequest(shim.url, 'POST', '/stream', { 'transfer-encoding': 'chunked' });
    req.write('first chunk|');
    // A shim that buffered the body would never let this resolve: the client has not ended.
    expect(await within(3_000, 'first chunk at the upstream', firstChunk)).toBe('first chunk|');
    req.end('last chunk');
    const res = await within(3_000, 'answer', response);

    expect((await readAll(res)).toString()).toBe('first chunk|last chunk');
  });

  it('hands the client the first chunk of an answer before the upstream ends it', async () => {
    let finish: () => void = () => {};
    const clientHasFirst = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const { shim } = await through((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first part|');
      // The upstream ends only once the client has read the first part through the shim.
      void clientHasFirst.then(() => res.end('last part'));
    });

    const { req, response } = openRequest(shim.url, 'GET', '/stream');
    req.end();
    const res = await within(3_000, 'answer head', response);
    const first = await within(
      3_000,
      'first part at the client',
      new Promise<string>((resolve) => res.once('data', (chunk: Buffer) => resolve(chunk.toString()))),
    );
    expect(first).toBe('first part|');
    finish();
    const rest = await within(3_000, 'rest of the answer', readAll(res));

    expect(rest.toString()).toBe('last part');
  });

  it('holds a client back while the upstream reads nothing: a 64 MB upload never sits in the shim', async () => {
    const total = 64 * MB;
    let startReading: () => void = () => {};
    const reading = new Promise<void>((resolve) => {
      startReading = resolve;
    });
    const { shim } = await through(async (req, res) => {
      await reading;
      res.end(JSON.stringify(await digest(req)));
    });

    const { req, response } = openRequest(shim.url, 'PUT', '/upload', { 'content-length': total });
    const pushed = await within(10_000, 'upload until blocked', writeUntilBlocked(req, total));
    // Socket buffers on two loopback hops hold a few MB; a shim that buffered would take all 64.
    expect(pushed).toBeLessThan(total / 2);
    startReading();
    await within(15_000, 'rest of the upload', writeRest(req, pushed, total));
    const res = await within(15_000, 'answer', response);

    expect(JSON.parse((await readAll(res)).toString())).toEqual({
      length: total,
      sha256: patternDigest(total),
    });
  });

  it('holds the upstream back while the client reads nothing: a 64 MB answer never sits in the shim', async () => {
    const total = 64 * MB;
    let pushedBeforeBlock: (bytes: number) => void = () => {};
    const blocked = new Promise<number>((resolve) => {
      pushedBeforeBlock = resolve;
    });
    const { shim } = await through(async (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
      const pushed = await writeUntilBlocked(res, total);
      pushedBeforeBlock(pushed);
      await writeRest(res, pushed, total);
    });

    const { req, response } = openRequest(shim.url, 'GET', '/download');
    req.end();
    const res = await within(5_000, 'answer head', response);
    // Nothing reads `res` (no `data` listener) until the upstream is blocked.
    const pushed = await within(10_000, 'upstream blocked', blocked);
    expect(pushed).toBeLessThan(total / 2);
    const got = await within(15_000, 'whole answer', digest(res));

    expect(got).toEqual({ length: total, sha256: patternDigest(total) });
  });
});

describe('upstream connections', () => {
  it('carries many sequential requests over one pooled upstream socket', async () => {
    const { upstream, shim } = await through(echoBody);

    // Every client request on its own connection, with Connection: close: the pooling is the shim's.
    for (let i = 0; i < 25; i++) {
      const res = await request(shim.url, { method: 'POST', path: `/providers?n=${i}`, body: `body ${i}` });
      expect(res.status).toBe(200);
    }

    expect(upstream.requests).toHaveLength(25);
    const sockets = new Set(upstream.requests.map((seen) => seen.remotePort));
    expect(sockets.size).toBeLessThanOrEqual(2);
  });

  it('tells the client its own connection state, not the upstream socket’s keep-alive timeout', async () => {
    const { shim } = await through((req, res) => {
      req.resume();
      // Nango's own answer head: `Keep-Alive: timeout=61` describes the shim's upstream socket.
      res.writeHead(200, { connection: 'keep-alive', 'keep-alive': 'timeout=61', 'content-length': '2' });
      res.end('ok');
    });

    const res = await request(shim.url, { path: '/providers', headers: { connection: 'close' } });

    expect(res.status).toBe(200);
    expect(res.headers['keep-alive']).toBeUndefined();
    expect(res.headers.connection).toBe('close');
  });
});

describe('HTTP/1.0 clients', () => {
  const keepAliveRequest = 'GET /providers HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n';

  it('keeps an HTTP/1.0 keep-alive connection open across answers of known length', async () => {
    const { shim } = await through((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' });
      res.end('hello');
    });

    const reply = await exchangeRaw(shim.url, keepAliveRequest + keepAliveRequest, { timeoutMs: 1_000 });

    expect(answerCount(reply.text)).toBe(2);
    expect(reply.text.toLowerCase().match(/\r\nconnection: keep-alive\r\n/g)).toHaveLength(2);
    expect(reply.closed).toBe(false);
  });

  // RFC 9112 §9.3 and RFC 7230 §A.1.2: an HTTP/1.0 client cannot be sent chunks, so an answer of unknown length
  // ends with the connection, whatever the client asked for.
  it('says close to an HTTP/1.0 keep-alive client when the answer has no length and its end closes the connection', async () => {
    const { shim } = await through((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('hel');
      res.end('lo');
    });

    const reply = await exchangeRaw(shim.url, keepAliveRequest, { timeoutMs: 2_000 });

    expect(reply.closed).toBe(true);
    const head = reply.text.slice(0, reply.text.indexOf('\r\n\r\n') + 2).toLowerCase();
    expect(head).toContain('\r\nconnection: close\r\n');
    expect(reply.text.endsWith('\r\n\r\nhello')).toBe(true);
  });

  it('says close to an HTTP/1.0 keep-alive client while draining, and closes, as it does to HTTP/1.1 clients', async () => {
    let answer: () => void = () => {};
    const { shim } = await through((req, res) => {
      req.resume();
      answer = () => {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '5' });
        res.end('hello');
      };
    });
    const reply = exchangeRaw(shim.url, keepAliveRequest, { timeoutMs: 2_000 });
    await expect.poll(() => shim.shim.inFlight()).toBe(1);

    const drained = shim.shim.drain(2_000);
    answer();

    const { text, closed } = await reply;
    expect(text.toLowerCase()).toContain('\r\nconnection: close\r\n');
    expect(closed).toBe(true);
    expect(await drained).toBe(true);
  });
});

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A client's opening handshake on a raw socket (RFC 6455 §4.1, with its §1.3 sample key). */
const WEBSOCKET_HANDSHAKE =
  'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';

function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + WEBSOCKET_GUID)
    .digest('base64');
}

/** One text frame of under 126 bytes (RFC 6455 §5.2); a client's frames are masked (§5.3). */
function textFrame(text: string, mask?: Buffer): Buffer {
  const payload = Buffer.from(text);
  if (!mask) return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
  const masked = payload.map((byte, i) => byte ^ (mask[i % 4] as number));
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

/** Reads one small text frame from the front of `data`, unmasking it; undefined until it is all there. */
function readTextFrame(data: Buffer): { text: string; masked: boolean } | undefined {
  if (data.length < 2) return undefined;
  const masked = ((data[1] as number) & 0x80) !== 0;
  const length = (data[1] as number) & 0x7f;
  const start = masked ? 6 : 2;
  if (data.length < start + length) return undefined;
  const payload = Buffer.from(data.subarray(start, start + length));
  if (masked)
    for (let i = 0; i < length; i++) payload[i] = (payload[i] as number) ^ (data[2 + (i % 4)] as number);
  return { text: payload.toString(), masked };
}

function nextFrame(
  socket: Duplex,
  already: Buffer = Buffer.alloc(0),
): Promise<{ text: string; masked: boolean }> {
  return new Promise((resolve, reject) => {
    let data = already;
    const check = () => {
      const frame = readTextFrame(data);
      if (!frame) return false;
      socket.removeListener('data', onData);
      resolve(frame);
      return true;
    };
    const onData = (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      check();
    };
    if (check()) return;
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

describe('WebSocket upgrades', () => {
  it('passes the handshake and frames both ways, idle past upstream.timeoutMs', async () => {
    let upstreamClosed: () => void = () => {};
    const closedAtUpstream = new Promise<void>((resolve) => {
      upstreamClosed = resolve;
    });
    const { upstream, shim } = await through(
      (_req, res) => res.end('not a websocket'),
      (req, socket) => {
        socket.write(
          'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            `Sec-WebSocket-Accept: ${acceptKey(String(req.headers['sec-websocket-key']))}\r\n` +
            'Sec-WebSocket-Protocol: nango\r\n\r\n',
        );
        void nextFrame(socket).then((frame) => socket.write(textFrame(`echo: ${frame.text}`)));
        socket.on('end', () => {
          upstreamClosed();
          socket.end();
        });
      },
      { upstream: { timeoutMs: 300 } },
    );
    const key = randomBytes(16).toString('base64');
    const url = new URL(shim.url);

    const upgrade = new Promise<{ res: IncomingMessage; socket: Duplex; head: Buffer }>((resolve, reject) => {
      const req = http.request({
        host: url.hostname,
        port: url.port,
        path: '/ws?token=abc&x=%20',
        agent: false,
        headers: {
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-key': key,
          'sec-websocket-version': '13',
          'sec-websocket-protocol': 'nango',
        },
      });
      req.on('upgrade', (res, socket, head) => resolve({ res, socket, head }));
      req.on('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
      req.on('error', reject);
      req.end();
    });
    const { res, socket, head } = await within(3_000, 'upgrade', upgrade);
    try {
      expect(res.statusCode).toBe(101);
      expect(res.headers['sec-websocket-accept']).toBe(acceptKey(key));
      expect(res.headers['sec-websocket-protocol']).toBe('nango');
      const seen = upstream?.requests[0];
      expect(seen?.url).toBe('/ws?token=abc&x=%20');
      expect(seen?.headers).toMatchObject({
        upgrade: 'websocket',
        'sec-websocket-key': key,
        'x-forwarded-for': '127.0.0.1',
        'x-forwarded-proto': 'http',
        'x-forwarded-host': url.host,
        host: `127.0.0.1:${upstream?.port}`,
      });

      // Idle for longer than upstream.timeoutMs: the no-answer timeout is over once the upgrade is answered.
      await new Promise((resolve) => setTimeout(resolve, 700));
      socket.write(textFrame('hello through the shim', randomBytes(4)));
      const frame = await within(3_000, 'echo frame', nextFrame(socket, head));

      expect(frame).toEqual({ text: 'echo: hello through the shim', masked: false });
      socket.end();
      await within(3_000, 'close reaching the upstream', closedAtUpstream);
    } finally {
      socket.destroy();
    }
  });

  it('passes a handshake on without the fields of either hop, Connection: Upgrade and Sec-WebSocket-* kept (RFC 9110 §7.6.1)', async () => {
    const { upstream, shim } = await through(
      (_req, res) => res.end('not a websocket'),
      (_req, socket) => {
        socket.end(
          'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Upstream-Hop\r\n' +
            'X-Upstream-Hop: for the shim only\r\nKeep-Alive: timeout=61\r\nProxy-Authenticate: Basic realm="x"\r\n' +
            'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
        );
      },
    );

    // Firefox's handshake names keep-alive too; the proxy fields are those of a client told to use a proxy.
    const reply = await exchangeRaw(
      shim.url,
      'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade, X-Hop\r\nUpgrade: websocket\r\n' +
        'X-Hop: for the shim only\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic dXNlcjpwYXNzd29yZA==\r\n' +
        'Proxy-Connection: keep-alive\r\nTE: trailers\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: nango\r\n\r\n',
      { timeoutMs: 2_000 },
    );

    const seen = upstream.requests[0]?.headers ?? {};
    expect(seen).toMatchObject({
      connection: 'Upgrade',
      upgrade: 'websocket',
      'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
      'sec-websocket-version': '13',
      'sec-websocket-protocol': 'nango',
    });
    for (const name of ['x-hop', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te'])
      expect(seen[name], name).toBeUndefined();
    expect(reply.status).toBe(101);
    const head = reply.text.slice(0, reply.text.indexOf('\r\n\r\n') + 2).toLowerCase();
    expect(head).toContain('\r\nconnection: upgrade\r\n');
    expect(head).toContain('\r\nupgrade: websocket\r\n');
    expect(head).toContain('\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n');
    expect(head).not.toContain('x-upstream-hop');
    expect(head).not.toContain('keep-alive');
    expect(head).not.toContain('proxy-authenticate');
  });

  it('closes a WebSocket the upstream resets, with no HTTP answer written into it after the 101', async () => {
    const { shim } = await through(
      (_req, res) => res.end('not a websocket'),
      (_req, socket) => {
        socket.write(
          'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
        );
        socket.write(textFrame('last words'), () =>
          setTimeout(() => (socket as Socket).resetAndDestroy(), 100),
        );
      },
    );

    const reply = await exchangeRaw(shim.url, WEBSOCKET_HANDSHAKE, { timeoutMs: 2_000 });

    expect(reply.status).toBe(101);
    expect(reply.closed).toBe(true);
    // After the head, nothing but the upstream's frame: every byte a WebSocket client reads is a frame.
    const frames = Buffer.from(reply.text.slice(reply.text.indexOf('\r\n\r\n') + 4), 'latin1');
    expect(frames).toEqual(textFrame('last words'));
    await expect
      .poll(() => shim.logs().filter((line) => line.msg === 'upstream request failed'))
      .toEqual([expect.objectContaining({ path: '/ws', failure: 'lost' })]);
  });

  it('closes the connection after an upstream refused a handshake, and says so, without the fields of its hop', async () => {
    const { upstream, shim } = await through((req, res) => {
      req.resume();
      res.writeHead(426, {
        connection: 'keep-alive, X-Upstream-Hop',
        'keep-alive': 'timeout=61',
        'x-upstream-hop': 'for the shim only',
        'content-type': 'text/plain',
        'content-length': '7',
      });
      res.end('refused');
    });

    const reply = await exchangeRaw(shim.url, WEBSOCKET_HANDSHAKE, { timeoutMs: 2_000 });

    expect(upstream.requests).toHaveLength(1);
    expect(reply.status).toBe(426);
    // The shim closes this connection after the answer (http-proxy-3 tunnels no second request on it).
    expect(reply.closed).toBe(true);
    const head = reply.text.slice(0, reply.text.indexOf('\r\n\r\n') + 2).toLowerCase();
    expect(head).toContain('\r\nconnection: close\r\n');
    expect(head).not.toContain('keep-alive');
    expect(head).not.toContain('x-upstream-hop');
    expect(reply.text.endsWith('\r\n\r\nrefused')).toBe(true);
  });

  it('passes on a refusal whose reason phrase has a control character with the standard one', async () => {
    const { shim } = await through(
      (_req, res) => res.end('not a websocket'),
      (_req, socket) =>
        socket.end(
          'HTTP/1.1 426 Upgrade\x7fRequired\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrefused',
        ),
    );

    // node:http writes no control character in a reason phrase (and the non-upgrade path drops such a phrase):
    // http-proxy-3 wrote the upstream's to the client's socket byte for byte.
    const reply = await exchangeRaw(shim.url, WEBSOCKET_HANDSHAKE, { timeoutMs: 2_000 });

    expect(reply.text).toMatch(/^HTTP\/1\.1 426 Upgrade Required\r\n/);
    expect(reply.text.endsWith('\r\n\r\nrefused')).toBe(true);
    expect(reply.closed).toBe(true);
  });

  it.each([
    ['204 No Content', 'HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n'],
    ['304 Not Modified', 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nConnection: close\r\n\r\n'],
  ])(
    'passes on a %s refusal with no body and no chunked framing (RFC 9110 §15.3.5, §15.4.5)',
    async (status, answer) => {
      const { shim } = await through(
        (_req, res) => res.end('not a websocket'),
        (_req, socket) => socket.end(answer),
      );

      const reply = await exchangeRaw(shim.url, WEBSOCKET_HANDSHAKE, { timeoutMs: 2_000 });

      expect(reply.text.startsWith(`HTTP/1.1 ${status}\r\n`)).toBe(true);
      // RFC 9112 §6.1: no Transfer-Encoding on a 204; and the status has no body, so nothing follows the head
      // (a chunked `0` after it is read as the start of a next answer).
      expect(reply.text.toLowerCase()).not.toContain('transfer-encoding');
      expect(reply.text.endsWith('\r\n\r\n')).toBe(true);
      expect(answerCount(reply.text)).toBe(1);
      expect(reply.closed).toBe(true);
    },
  );

  // Nango's `ws` WebSocketServer takes every upgrade and refuses what is not a WebSocket handshake with an
  // HTTP error (405 for a method other than GET, then 400 for another Upgrade), never running the route.
  // http-proxy-3 alone would close the connection without a byte.
  it('answers 400 unsupported_upgrade to an h2c upgrade (curl --http2) and never forwards it', async () => {
    const { upstream, shim } = await through((_req, res) => res.end('routed'));

    const reply = await exchangeRaw(
      shim.url,
      'GET /providers HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n' +
        'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
      { timeoutMs: 2_000 },
    );

    expect(reply.status).toBe(400);
    expect(reply.closed).toBe(true);
    expect(jsonBodyOf(reply.text)).toEqual({
      error: { code: 'unsupported_upgrade', message: expect.any(String) },
    });
    expect(upstream.requests).toEqual([]);
  });

  it('answers 405 method_not_allowed with Allow: GET to an upgrade on another method, deprecated route included', async () => {
    const { upstream, shim } = await through((_req, res) => res.end('routed'), undefined, {
      routes: { 'connection-metadata': { stage: 'gone' } },
    });

    const reply = await exchangeRaw(
      shim.url,
      'PATCH /connection/metadata HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}',
      { timeoutMs: 2_000 },
    );

    expect(reply.status).toBe(405);
    expect(reply.closed).toBe(true);
    const head = reply.text.slice(0, reply.text.indexOf('\r\n\r\n')).toLowerCase();
    expect(head).toContain('\r\nallow: get\r\n');
    // Every answer on a deprecated route says so (RFC 9745, RFC 8594), this one too.
    expect(head).toMatch(/\r\ndeprecation: @\d+\r\n/);
    expect(head).toContain('\r\nsunset: ');
    expect(jsonBodyOf(reply.text)).toEqual({
      error: { code: 'method_not_allowed', message: expect.any(String) },
    });
    expect(upstream.requests).toEqual([]);
  });
});
