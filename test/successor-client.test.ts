import { readFileSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSuccessorClient,
  idleLimit,
  type SuccessorClient,
  type SuccessorClientOptions,
  serialiseRequest,
  type UpstreamRequest,
} from '../src/successor-client.js';
import { UpstreamError } from '../src/upstream-failure.js';
import { createTestCertificates, hasOpenssl, type TestCertificates } from './support/certificates.js';
import { closedAfterEach, closeWithSockets } from './support/cleanup.js';
import { closedPort, listen, readAll, startUpstream } from './support/upstream.js';

/**
 * The translated calls' HTTP/1.1 client on real sockets: what it writes, how it pools and frees its
 * connections, and how each way an exchange can fail is classified.
 */

const track = closedAfterEach();

function call(overrides: Partial<UpstreamRequest> = {}): UpstreamRequest {
  const body = Buffer.from('{"metadata":{"a":1}}');
  return {
    method: 'PATCH',
    path: '/connections/metadata',
    headers: { host: 'nango.test', 'content-type': 'application/json', 'content-length': body.length },
    body,
    maxAnswerBytes: 1024 * 1024,
    ...overrides,
  };
}

function client(port: number, options: Partial<SuccessorClientOptions> = {}): SuccessorClient {
  const created = createSuccessorClient({
    url: new URL(`http://127.0.0.1:${port}`),
    maxSockets: 8,
    maxIdleSockets: 8,
    idleTimeoutMs: 5_000,
    timeoutMs: 2_000,
    ...options,
  });
  track({ close: async () => created.close() });
  return created;
}

/** A raw TCP upstream: `answer` is called with each request's bytes (one read) and its socket. */
async function rawUpstream(answer: (socket: net.Socket, request: Buffer, index: number) => void) {
  const sockets = new Set<net.Socket>();
  const closedSockets: net.Socket[] = [];
  let requests = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => closedSockets.push(socket));
    socket.on('data', (chunk) => answer(socket, chunk, requests++));
    socket.on('error', () => {});
  });
  const port = await listen(server);
  track({
    close: () => closeWithSockets(server, sockets),
  });
  return { port, sockets, closedSockets, requests: () => requests };
}

const OK = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}';

async function failureOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(UpstreamError);
  return (error as UpstreamError).failure;
}

describe('what the client writes', () => {
  it('sends the head and the body in one write, with the headers in order and keep-alive said outright', async () => {
    const seen: Buffer[] = [];
    const upstream = await rawUpstream((socket, request) => {
      seen.push(request);
      socket.write(OK);
    });
    const answer = await client(upstream.port).send(
      call({ headers: { host: 'nango.test', 'x-many': ['1', '2'], 'content-length': 20 } }),
    );

    expect(answer.status).toBe(200);
    expect(seen).toHaveLength(1);
    expect(seen[0]?.toString('latin1')).toBe(
      'PATCH /connections/metadata HTTP/1.1\r\nhost: nango.test\r\nx-many: 1\r\nx-many: 2\r\ncontent-length: 20\r\n' +
        'connection: keep-alive\r\n\r\n{"metadata":{"a":1}}',
    );
  });

  it('refuses a header value or target that would split the request, before connecting', () => {
    expect(() => serialiseRequest(call({ headers: { 'x-a': 'ok\r\nx-injected: 1' } }))).toThrow(TypeError);
    expect(() => serialiseRequest(call({ headers: { 'bad name': '1' } }))).toThrow(TypeError);
    expect(() => serialiseRequest(call({ path: '/a b' }))).toThrow(TypeError);
    expect(() => serialiseRequest(call({ path: '/a\nb' }))).toThrow(TypeError);
  });

  it('rejects such a call without reaching the upstream', async () => {
    const upstream = await rawUpstream((socket) => socket.write(OK));
    await expect(client(upstream.port).send(call({ headers: { 'x-a': 'a\nb' } }))).rejects.toThrow(TypeError);
    expect(upstream.sockets.size).toBe(0);
  });
});

describe('the pool of connections', () => {
  it('carries calls one after another on one connection', async () => {
    const upstream = await rawUpstream((socket) => socket.write(OK));
    const successor = client(upstream.port);
    for (let i = 0; i < 5; i++) expect((await successor.send(call())).body.toString()).toBe('{}');
    expect(upstream.requests()).toBe(5);
    expect(upstream.sockets.size).toBe(1);
  });

  it('opens a new connection after an answer that said Connection: close, or was framed by the close', async () => {
    const upstream = await rawUpstream((socket, _request, index) => {
      if (index === 0) socket.end('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}');
      else if (index === 1) socket.end('HTTP/1.1 200 OK\r\n\r\n{"until":"close"}');
      else socket.write(OK);
    });
    const successor = client(upstream.port);
    expect((await successor.send(call())).body.toString()).toBe('{}');
    expect((await successor.send(call())).body.toString()).toBe('{"until":"close"}');
    expect((await successor.send(call())).status).toBe(200);
    expect(upstream.sockets.size).toBe(3);
  });

  it('never opens more than maxSockets: calls beyond wait their turn and are all answered', async () => {
    const upstream = await rawUpstream((socket) => setTimeout(() => socket.write(OK), 20));
    const successor = client(upstream.port, { maxSockets: 2 });
    const answers = await Promise.all(Array.from({ length: 6 }, () => successor.send(call())));
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(upstream.sockets.size).toBe(2);
  });

  it('drops an idle connection the upstream closes, and answers the next call on a new one', async () => {
    const upstream = await rawUpstream((socket) => {
      socket.write(OK);
      setTimeout(() => socket.end(), 10);
    });
    const successor = client(upstream.port);
    await successor.send(call());
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await successor.send(call())).status).toBe(200);
    expect(upstream.sockets.size).toBe(2);
  });

  it('closes a connection idle for idleTimeoutMs', async () => {
    const upstream = await rawUpstream((socket) => socket.write(OK));
    const successor = client(upstream.port, { idleTimeoutMs: 50 });
    await successor.send(call());
    expect(upstream.closedSockets).toHaveLength(0);
    await expect.poll(() => upstream.closedSockets.length, { timeout: 2_000 }).toBe(1);
  });

  it('never pools a connection whose request was still being written when the answer came', async () => {
    const upstream = await rawUpstream((socket, _request, index) => {
      if (index === 0) {
        // Answers at the first bytes of an 8 MiB body and reads no more of it.
        socket.pause();
        socket.write(OK);
      } else {
        socket.write(OK);
      }
    });
    const successor = client(upstream.port);
    const big = Buffer.alloc(8 * 1024 * 1024, 0x20);
    const first = await successor.send(call({ body: big, headers: { 'content-length': big.length } }));
    expect(first.status).toBe(200);
    expect((await successor.send(call())).status).toBe(200);
    expect(upstream.sockets.size).toBe(2);
  });

  it('lets an idle connection go before the upstream said it would close it (Keep-Alive: timeout)', async () => {
    const upstream = await rawUpstream((socket) =>
      socket.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=3\r\nContent-Length: 2\r\n\r\n{}'),
    );
    const successor = client(upstream.port, { idleTimeoutMs: 60_000 });
    const started = performance.now();
    await successor.send(call());
    // The raw upstream never closes on its own: the close is the client's, about a second before the hint.
    await expect.poll(() => upstream.closedSockets.length, { timeout: 3_000 }).toBe(1);
    expect(performance.now() - started).toBeLessThan(2_900);
  });

  it('does not pool a connection the upstream keeps for a second or less', async () => {
    const upstream = await rawUpstream((socket) =>
      socket.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1, max=100\r\nContent-Length: 2\r\n\r\n{}'),
    );
    const successor = client(upstream.port);
    await successor.send(call());
    await successor.send(call());
    expect(upstream.sockets.size).toBe(2);
  });

  it('never pools a connection that heard bytes after its answer', async () => {
    const upstream = await rawUpstream((socket) => socket.write(`${OK}HTTP/1.1 200 OK\r\n`));
    const successor = client(upstream.port);
    await successor.send(call());
    await successor.send(call());
    expect(upstream.sockets.size).toBe(2);
  });
});

describe('how long an idle connection is kept', () => {
  it('is the configured limit unless Keep-Alive names a shorter timeout, less two seconds', () => {
    expect(idleLimit(undefined, 55_000)).toBe(55_000);
    expect(idleLimit('max=100', 55_000)).toBe(55_000);
    expect(idleLimit('timeout=61', 55_000)).toBe(55_000);
    expect(idleLimit('timeout=5', 55_000)).toBe(3_000);
    expect(idleLimit('max=5, Timeout = 10', 55_000)).toBe(8_000);
    expect(idleLimit('timeout=1', 55_000)).toBeLessThanOrEqual(0);
  });
});

describe('a failed exchange', () => {
  it('is unreachable when nothing listens', async () => {
    const port = await closedPort();
    expect(await failureOf(client(port).send(call()))).toBe('unreachable');
  });

  it('is a timeout when no answer comes within timeoutMs, and the connection is not reused', async () => {
    const upstream = await rawUpstream(() => {});
    const started = performance.now();
    expect(await failureOf(client(upstream.port, { timeoutMs: 100 }).send(call()))).toBe('timeout');
    expect(performance.now() - started).toBeGreaterThanOrEqual(90);
    await expect.poll(() => upstream.closedSockets.length).toBe(1);
  });

  it('is a timeout for a call that waited for a connection all along', async () => {
    const upstream = await rawUpstream(() => {});
    const successor = client(upstream.port, { maxSockets: 1, timeoutMs: 100 });
    const first = successor.send(call());
    const second = successor.send(call());
    expect(await failureOf(first)).toBe('timeout');
    expect(await failureOf(second)).toBe('timeout');
    expect(upstream.requests()).toBe(1);
  });

  it('is lost when the connection closes before the answer is whole', async () => {
    const upstream = await rawUpstream((socket) =>
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}'),
    );
    expect(await failureOf(client(upstream.port).send(call()))).toBe('lost');
  });

  it('is lost when the answer is not HTTP', async () => {
    const upstream = await rawUpstream((socket) => socket.write('SSH-2.0-OpenSSH_9.6\r\n\r\n'));
    expect(await failureOf(client(upstream.port).send(call()))).toBe('lost');
  });

  it('is lost when the answer is larger than maxAnswerBytes', async () => {
    const upstream = await rawUpstream((socket) =>
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n${'x'.repeat(100)}`),
    );
    expect(await failureOf(client(upstream.port).send(call({ maxAnswerBytes: 99 })))).toBe('lost');
  });

  it('is lost for a call in flight when the client closes, and unreachable for a call after it', async () => {
    const upstream = await rawUpstream(() => {});
    const successor = client(upstream.port);
    const pending = successor.send(call());
    await expect.poll(() => upstream.requests()).toBe(1);
    successor.close();
    expect(await failureOf(pending)).toBe('lost');
    // Nothing of a call made after close left the shim: it cannot have been applied.
    expect(await failureOf(successor.send(call()))).toBe('unreachable');
  });

  it('is lost at once, not at the deadline, when the answer breaks its head with bare LFs', async () => {
    const upstream = await rawUpstream((socket) => socket.write('HTTP/1.1 200 OK\nContent-Length: 2\n\n{}'));
    const started = performance.now();
    expect(await failureOf(client(upstream.port, { timeoutMs: 2_000 }).send(call()))).toBe('lost');
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});

const OPENSSL = hasOpenssl();

describe.skipIf(!OPENSSL)('an https upstream', () => {
  let certificates: TestCertificates | undefined;
  beforeAll(() => {
    certificates = createTestCertificates();
  });
  afterAll(() => certificates?.remove());

  async function secureUpstream() {
    const { key, cert } = certificates as TestCertificates;
    return track(
      await startUpstream(
        async (req, res) => {
          const body = await readAll(req);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(body);
        },
        { tls: { key, cert } },
      ),
    );
  }

  /** A client of an https upstream on `port` that trusts the test CA. */
  function secureClient(port: number): SuccessorClient {
    const successor = createSuccessorClient({
      url: new URL(`https://127.0.0.1:${port}`),
      ca: readFileSync((certificates as TestCertificates).caFile, 'utf8'),
      maxSockets: 4,
      maxIdleSockets: 4,
      idleTimeoutMs: 5_000,
      timeoutMs: 2_000,
    });
    track({ close: async () => successor.close() });
    return successor;
  }

  it('verifies the certificate against the configured CA and pools the TLS connection', async () => {
    const upstream = await secureUpstream();
    const successor = secureClient(Number(new URL(upstream.url).port));
    for (let i = 0; i < 3; i++) {
      const answer = await successor.send(call());
      expect(answer.body.toString()).toBe('{"metadata":{"a":1}}');
    }
    expect(new Set(upstream.requests.map((seen) => seen.remotePort)).size).toBe(1);
  });

  it('is unreachable, and sends nothing, when the certificate is not trusted', async () => {
    const upstream = await secureUpstream();
    const successor = createSuccessorClient({
      url: new URL(upstream.url),
      maxSockets: 4,
      maxIdleSockets: 4,
      idleTimeoutMs: 5_000,
      timeoutMs: 2_000,
    });
    track({ close: async () => successor.close() });
    expect(await failureOf(successor.send(call()))).toBe('unreachable');
    expect(upstream.requests).toHaveLength(0);
  });

  // No byte of a request leaves before the handshake is done, so no such failure can have applied the call.
  it('is unreachable when the https URL names a plain-HTTP port', async () => {
    const upstream = await rawUpstream((socket) =>
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'),
    );
    expect(await failureOf(secureClient(upstream.port).send(call()))).toBe('unreachable');
  });

  it('is unreachable when the upstream drops the handshake', async () => {
    const upstream = await rawUpstream((socket) => socket.destroy());
    expect(await failureOf(secureClient(upstream.port).send(call()))).toBe('unreachable');
    expect(upstream.requests()).toBe(1);
  });
});
