import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { sendCapture } from './support/captures.js';
import { closedAfterEach } from './support/cleanup.js';
import { DEV_KEY, type FakeNango, startFakeNango } from './support/fake-nango.js';
import { exchanges } from './support/replay.js';
import { type RunningShim, startShim } from './support/shim.js';
import { startUpstream, within } from './support/upstream.js';

/**
 * How long the shim keeps a client's idle connection, and what it tells the client. Nango keeps one 61 s and
 * says so on every answer (`Keep-Alive: timeout=61`, every capture): above the 60 s idle timeout of the load
 * balancer usually in front of it (AWS ALB's default), so the balancer never sends a request on a connection
 * the server has just closed, which it would answer 502. The shim takes Nango's place behind that balancer.
 */

const track = closedAfterEach();
const AUTHORIZATION = `Bearer ${DEV_KEY}`;

/** A client connection held open between requests; every answer here has a Content-Length. */
interface HeldConnection {
  /** Writes one request and resolves with the head of its answer (status line and fields), once its body came. */
  ask(request: string): Promise<string>;
  /** Writes part of a request, and waits for nothing. */
  send(bytes: string): void;
  /** Resolves when the shim closes the connection. */
  readonly closed: Promise<void>;
}

function holdConnection(baseUrl: string): Promise<HeldConnection> {
  const url = new URL(baseUrl);
  const socket = net.connect(Number(url.port), url.hostname);
  track({ close: async () => void socket.destroy() });
  let received = '';
  let onChange = () => {};
  let isClosed = false;
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      isClosed = true;
      onChange();
      resolve();
    }),
  );
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
    onChange();
  });
  function takeAnswer(): string | undefined {
    const end = received.indexOf('\r\n\r\n');
    if (end === -1) return undefined;
    const head = received.slice(0, end);
    const length = Number(/^content-length: *(\d+)$/im.exec(head)?.[1] ?? 0);
    if (received.length < end + 4 + length) return undefined;
    received = received.slice(end + 4 + length);
    return head;
  }
  function ask(request: string): Promise<string> {
    socket.write(request);
    return new Promise((resolve, reject) => {
      onChange = () => {
        const head = takeAnswer();
        if (head !== undefined) resolve(head);
        else if (isClosed) reject(new Error('the shim closed the connection before its answer'));
      };
      onChange();
    });
  }
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.once('connect', () => resolve({ ask, send: (bytes) => socket.write(bytes), closed }));
  });
}

/** A request's bytes: HTTP/1.1 (keep-alive unless `connection: close`) unless `version` says 1.0. */
function rawRequest(
  method: string,
  path: string,
  {
    headers = {},
    body = '',
    version = '1.1',
  }: { headers?: Record<string, string>; body?: string; version?: string } = {},
): string {
  const fields = Object.entries({ host: 'shim.test', authorization: AUTHORIZATION, ...headers });
  if (body !== '') fields.push(['content-length', String(Buffer.byteLength(body))]);
  return `${method} ${path} HTTP/${version}\r\n${fields.map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n${body}`;
}

/** The values of a field in an answer's head, in order (none: an empty list). */
function fieldValues(head: string, name: string): string[] {
  const values: string[] = [];
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (line.slice(0, colon).toLowerCase() === name) values.push(line.slice(colon + 1).trim());
  }
  return values;
}

function statusOfHead(head: string): number {
  return Number(head.split(' ')[1]);
}

async function throughFakeNango(
  overrides: Record<string, unknown> = {},
): Promise<{ fake: FakeNango; shim: RunningShim }> {
  const fake = track(await startFakeNango({ legacyRoutes: false }));
  const shim = track(await startShim(fake.url, overrides));
  return { fake, shim };
}

const METADATA_BODY = JSON.stringify({
  connection_id: 'conn-1',
  provider_config_key: 'unauth',
  metadata: { touched: true },
});

/**
 * One call for each way an answer reaches the client, and its status: http-proxy-3 copies the first two
 * (the shim sets their Connection), node:http frames the other two itself.
 */
const ANSWERS = [
  ['pass-through', 'GET', '/connections/conn-1?provider_config_key=unauth', undefined, 200],
  ['a streamed translation', 'GET', '/connection/conn-1?provider_config_key=unauth', undefined, 200],
  ['a buffered translation', 'PATCH', '/connection/metadata', METADATA_BODY, 200],
  ['the shim’s own answer', 'DELETE', '/connection/conn-1?provider_config_key=unauth', undefined, 410],
] as const;
/** The shim's own answer (410) on connection-delete, an answer node:http frames itself. */
const GONE = { routes: { 'connection-delete': { stage: 'gone' } } };

type Answer = readonly [kind: string, method: string, path: string, body: string | undefined, status: number];

function callOf(
  [, method, path, body]: Answer,
  { headers = {}, version }: { headers?: Record<string, string>; version?: string } = {},
): string {
  const typed = body === undefined ? headers : { ...headers, 'content-type': 'application/json' };
  return rawRequest(method, path, { headers: typed, body: body ?? '', ...(version ? { version } : {}) });
}

describe('how long an idle client connection is kept', () => {
  it('keeps it 61 s by default, Nango’s own, and says so', async () => {
    const { shim } = await throughFakeNango(GONE);
    const connection = await holdConnection(shim.url);

    const head = await connection.ask(rawRequest('DELETE', '/connection/conn-1?provider_config_key=unauth'));

    expect(shim.configs.current.config.server.keepAliveTimeoutMs).toBe(61_000);
    expect(shim.shim.server.keepAliveTimeout).toBe(61_000);
    expect(statusOfHead(head)).toBe(410);
    expect(fieldValues(head, 'keep-alive')).toEqual(['timeout=61']);
  });

  // node:http closes an idle connection 1 s after its keepAliveTimeout: with the old 5 s default, at 6 s.
  it('keeps an idle connection open past 6 s on the defaults', { timeout: 15_000 }, async () => {
    const { shim } = await throughFakeNango();
    const connection = await holdConnection(shim.url);
    const call = rawRequest('GET', '/connection/conn-1?provider_config_key=unauth');
    expect(statusOfHead(await connection.ask(call))).toBe(200);

    await new Promise((resolve) => setTimeout(resolve, 6_500));

    expect(statusOfHead(await within(3_000, 'second answer', connection.ask(call)))).toBe(200);
  });

  it('closes an idle connection after server.keepAliveTimeoutMs, not before, as a pass-through answer says', async () => {
    const { shim } = await throughFakeNango({ server: { keepAliveTimeoutMs: 1_000 } });
    const connection = await holdConnection(shim.url);

    const head = await connection.ask(rawRequest('GET', '/connections/conn-1?provider_config_key=unauth'));
    const answered = performance.now();
    await within(5_000, 'idle connection closed', connection.closed);

    expect(fieldValues(head, 'keep-alive')).toEqual(['timeout=1']);
    // node:http waits a second more than it says, so that a client trusting the hint is never too late.
    expect(performance.now() - answered).toBeGreaterThanOrEqual(1_000);
  });
});

describe('connections no request has begun on, at shutdown', () => {
  it('closes them once the last answer under way is sent, instead of waiting out the grace period', async () => {
    let answer = () => {};
    const upstream = track(
      await startUpstream((req, res) => {
        req.resume();
        answer = () => res.writeHead(200, { 'content-length': 2 }).end('{}');
      }),
    );
    const shim = track(await startShim(upstream.url));
    const unused = await holdConnection(shim.url);
    const busy = await holdConnection(shim.url);
    const asked = busy.ask(rawRequest('GET', '/connections'));
    await upstream.waitForRequests(1);

    const started = performance.now();
    const drained = shim.shim.drain(3_000);
    answer();

    expect(statusOfHead(await within(2_000, 'answer while draining', asked))).toBe(200);
    await within(2_000, 'unused connection closed', unused.closed);
    // Clean: nothing was cut, and it took no grace period.
    expect(await drained).toBe(true);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('serves a request whose head was still arriving when the drain began, and closes its connection', async () => {
    const upstream = track(
      await startUpstream((req, res) => {
        req.resume();
        res.writeHead(200, { 'content-length': 2 }).end('{}');
      }),
    );
    const shim = track(await startShim(upstream.url));
    const arriving = await holdConnection(shim.url);
    const call = rawRequest('GET', '/connections');
    const lineEnd = call.indexOf('\r\n') + 2;
    // Its request line has come, its fields not yet: node:http has begun a request the app has not seen.
    arriving.send(call.slice(0, lineEnd));
    await new Promise((resolve) => setTimeout(resolve, 100));

    const drained = shim.shim.drain(3_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const head = await within(
      2_000,
      'answer to the request that was arriving',
      arriving.ask(call.slice(lineEnd)),
    );

    expect(statusOfHead(head)).toBe(200);
    expect(fieldValues(head, 'connection')).toEqual(['close']);
    await within(2_000, 'its connection closed', arriving.closed);
    expect(await within(2_000, 'drain', drained)).toBe(true);
  });
  it('answers 408 to a head that never finishes within server.headersTimeoutMs, instead of waiting out the grace period', async () => {
    const upstream = track(
      await startUpstream((req, res) => {
        req.resume();
        res.writeHead(200, { 'content-length': 2 }).end('{}');
      }),
    );
    const shim = track(
      await startShim(upstream.url, { server: { headersTimeoutMs: 500, shutdownGraceMs: 5_000 } }),
    );
    const stalled = await holdConnection(shim.url);
    // Its request line and one field, and never the rest: the headers timeout is what ends it.
    stalled.send('GET /connections HTTP/1.1\r\nhost: shim.test\r\n');
    await new Promise((resolve) => setTimeout(resolve, 100));

    const started = performance.now();
    const drained = shim.shim.drain(5_000);
    const head = await within(3_000, 'the 408', stalled.ask(''));

    expect(statusOfHead(head)).toBe(408);
    expect(fieldValues(head, 'connection')).toEqual(['close']);
    await within(2_000, 'its connection closed', stalled.closed);
    // Clean: nothing was cut, and it took the headers timeout, not the grace period.
    expect(await within(2_000, 'drain', drained)).toBe(true);
    expect(performance.now() - started).toBeLessThan(2_500);
  });
});

describe('what an answer says of its connection', () => {
  it.each(ANSWERS)('says keep-alive and the shim’s own Keep-Alive timeout on %s', async (...answer) => {
    const { shim } = await throughFakeNango({ ...GONE, server: { keepAliveTimeoutMs: 7_500 } });
    const connection = await holdConnection(shim.url);

    const head = await connection.ask(callOf(answer));

    expect(statusOfHead(head)).toBe(answer[4]);
    expect(fieldValues(head, 'connection')).toEqual(['keep-alive']);
    // node:http's words for the answers it frames itself (`_storeHeader`): whole seconds, rounded down.
    expect(fieldValues(head, 'keep-alive')).toEqual(['timeout=7']);
    // The upstream's `Keep-Alive: timeout=61` describes the shim's upstream socket: it never gets through.
    expect(head).not.toContain('timeout=61');
  });

  it.each(ANSWERS)(
    'says keep-alive and timeout=61 on %s to an HTTP/1.0 keep-alive client',
    async (...answer) => {
      const { shim } = await throughFakeNango(GONE);
      const connection = await holdConnection(shim.url);

      const head = await connection.ask(
        callOf(answer, { headers: { connection: 'keep-alive' }, version: '1.0' }),
      );

      expect(statusOfHead(head)).toBe(answer[4]);
      expect(fieldValues(head, 'connection')).toEqual(['keep-alive']);
      expect(fieldValues(head, 'keep-alive')).toEqual(['timeout=61']);
    },
  );

  it.each(ANSWERS)(
    'says close and no Keep-Alive on %s to a client that asked to close',
    async (...answer) => {
      const { shim } = await throughFakeNango(GONE);
      const connection = await holdConnection(shim.url);

      const head = await connection.ask(callOf(answer, { headers: { connection: 'close' } }));

      expect(statusOfHead(head)).toBe(answer[4]);
      expect(fieldValues(head, 'connection')).toEqual(['close']);
      expect(fieldValues(head, 'keep-alive')).toEqual([]);
      await within(2_000, 'connection closed', connection.closed);
    },
  );

  it.each(ANSWERS)('says close and no Keep-Alive on %s to an HTTP/1.0 client', async (...answer) => {
    const { shim } = await throughFakeNango(GONE);
    const connection = await holdConnection(shim.url);

    const head = await connection.ask(callOf(answer, { version: '1.0' }));

    expect(statusOfHead(head)).toBe(answer[4]);
    expect(fieldValues(head, 'connection')).toEqual(['close']);
    expect(fieldValues(head, 'keep-alive')).toEqual([]);
    await within(2_000, 'connection closed', connection.closed);
  });

  it.each([
    ['pass-through', '/connections/conn-1?provider_config_key=unauth'],
    ['a streamed translation', '/connection/conn-1?provider_config_key=unauth'],
  ])('says close and no Keep-Alive on %s answered while the shim drains', async (_kind, path) => {
    let answer = () => {};
    const upstream = track(
      await startUpstream((req, res) => {
        req.resume();
        answer = () =>
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 }).end('{}');
      }),
    );
    const shim = track(await startShim(upstream.url));
    const connection = await holdConnection(shim.url);
    const asked = connection.ask(rawRequest('GET', path));
    await upstream.waitForRequests(1);

    const drained = shim.shim.drain(2_000);
    answer();

    const head = await within(2_000, 'answer while draining', asked);
    expect(statusOfHead(head)).toBe(200);
    expect(fieldValues(head, 'connection')).toEqual(['close']);
    expect(fieldValues(head, 'keep-alive')).toEqual([]);
    expect(await drained).toBe(true);
  });

  /**
   * A `GET` whose answer's head has reached the shim (a streamed translation's 429 is then being read whole,
   * before its head is copied), and whose body comes only once the shim has begun to drain.
   */
  async function headBeforeDrain(path: string, status: number, body: string) {
    let finish = () => {};
    const upstream = track(
      await startUpstream((req, res) => {
        req.resume();
        res
          .writeHead(status, { 'content-type': 'application/json', 'content-length': body.length })
          .flushHeaders();
        finish = () => res.end(body);
      }),
    );
    const shim = track(await startShim(upstream.url));
    const connection = await holdConnection(shim.url);
    const asked = connection.ask(rawRequest('GET', path));
    await upstream.waitForRequests(1);
    // Time for the head to reach the shim.
    await new Promise((resolve) => setTimeout(resolve, 200));

    const drained = shim.shim.drain(2_000);
    finish();
    return { head: await within(2_000, 'answer while draining', asked), drained };
  }

  // node:http sends a head with the first byte of the body: until then http-proxy-3 has only set it on the
  // response, the shim's `Connection: keep-alive` and `Keep-Alive` with it, which node:http obeys.
  it.each([
    ['pass-through', '/connections/conn-1?provider_config_key=unauth'],
    ['a streamed translation', '/connection/conn-1?provider_config_key=unauth'],
  ])(
    'says close and no Keep-Alive on %s whose head came before the shim began to drain',
    async (_kind, path) => {
      const { head, drained } = await headBeforeDrain(path, 200, '{}');

      expect(statusOfHead(head)).toBe(200);
      expect(fieldValues(head, 'connection')).toEqual(['close']);
      expect(fieldValues(head, 'keep-alive')).toEqual([]);
      expect(await drained).toBe(true);
    },
  );

  it('says close and no Keep-Alive on a streamed translation’s 429 whose head came before the drain and body after', async () => {
    const body = JSON.stringify({ error: { code: 'too_many_request' } });
    const { head, drained } = await headBeforeDrain(
      '/connection/conn-1?provider_config_key=unauth',
      429,
      body,
    );

    expect(statusOfHead(head)).toBe(429);
    expect(fieldValues(head, 'connection')).toEqual(['close']);
    expect(fieldValues(head, 'keep-alive')).toEqual([]);
    expect(await drained).toBe(true);
  });

  it('answers every pipelined request that came before the drain, and says close on the last', async () => {
    const answers: (() => void)[] = [];
    const upstream = track(
      await startUpstream((req, res) => {
        req.resume();
        answers.push(() => res.writeHead(200, { 'content-length': 2 }).end('{}'));
      }),
    );
    const shim = track(await startShim(upstream.url));
    const connection = await holdConnection(shim.url);
    // RFC 9112 §9.3.2: both went upstream at once; their answers go back in order.
    connection.send(rawRequest('GET', '/connections?page=1') + rawRequest('GET', '/connections?page=2'));
    await upstream.waitForRequests(2);

    const drained = shim.shim.drain(2_000);
    for (const answer of answers) answer();

    const first = await within(2_000, 'first answer', connection.ask(''));
    const second = await within(2_000, 'second answer, whose request the upstream had', connection.ask(''));
    expect([statusOfHead(first), statusOfHead(second)]).toEqual([200, 200]);
    expect(fieldValues(first, 'connection')).toEqual(['keep-alive']);
    expect(fieldValues(second, 'connection')).toEqual(['close']);
    expect(fieldValues(second, 'keep-alive')).toEqual([]);
    await within(2_000, 'connection closed after the last answer', connection.closed);
    expect(await drained).toBe(true);
  });

  it('gives every kind of answer the very same Connection and Keep-Alive fields as node:http’s own', async () => {
    const { shim } = await throughFakeNango(GONE);
    const connection = await holdConnection(shim.url);

    const fields: string[][] = [];
    for (const answer of ANSWERS) {
      const head = await connection.ask(callOf(answer));
      fields.push(head.split('\r\n').filter((line) => /^(connection|keep-alive):/i.test(line)));
    }

    // Names compare case-insensitively (RFC 9110 §5.1): http-proxy-3 writes them as node:http keeps them.
    const lowered = fields.map((lines) => lines.map((line) => line.toLowerCase()));
    expect(lowered).toEqual(ANSWERS.map(() => ['connection: keep-alive', 'keep-alive: timeout=61']));
  });
});

describe('the connection fields of translated legacy answers, against the captures', () => {
  const CAPTURED = [
    ['connection-get.json', 'GET /connection/conn-1?provider_config_key (legacy single)'],
    ['connection-get.json', 'GET /connection (legacy list)'],
    ['metadata-patch.json', 'PATCH /connection/metadata: single string id success'],
  ] as const;

  it.each(CAPTURED)('answers %s "%s" with Nango’s Connection and Keep-Alive', async (file, name) => {
    const { shim } = await throughFakeNango();
    const entry = exchanges(file).find((candidate) => candidate.name === name);
    if (entry?.request === undefined || entry.response === undefined)
      throw new Error(`no exchange "${name}" in ${file}`);
    // As the SDK sent it, on node:http's keep-alive agent: `Connection: keep-alive`.
    expect(entry.request.headers.Connection).toBe('keep-alive');
    const agent = new http.Agent({ keepAlive: true });
    track({ close: async () => agent.destroy() });

    const reply = await sendCapture(shim.url, entry, agent);

    expect(reply.status).toBe(entry.response.status);
    expect(reply.headers.connection).toBe(entry.response.headers.Connection);
    expect(reply.headers['keep-alive']).toBe(entry.response.headers['Keep-Alive']);
  });
});
