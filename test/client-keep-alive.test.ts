import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { closedAfterEach } from './support/cleanup.js';
import { DEV_KEY, type FakeNango, startFakeNango } from './support/fake-nango.js';
import { type RunningShim, startShim } from './support/shim.js';
import { within } from './support/upstream.js';

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
    socket.once('connect', () => resolve({ ask, closed }));
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

/** The shim's own answer (410) on connection-delete, an answer node:http frames itself. */
const GONE = { routes: { 'connection-delete': { stage: 'gone' } } };

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
});
