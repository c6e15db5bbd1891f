import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createMetrics, type Metrics } from '../src/metrics.js';
import { loadCaptures } from './support/captures.js';
import { closedAfterEach } from './support/cleanup.js';
import { DEV_KEY } from './support/fake-nango.js';
import { answerCount, exchangeRaw, jsonBodyOf } from './support/raw-http.js';
import { type RunningShim, startShim } from './support/shim.js';
import {
  type RecordingUpstream,
  request,
  type SeenRequest,
  startUpstream,
  type UpstreamHandler,
  within,
} from './support/upstream.js';

/**
 * The keep-alive race: the upstream closes a pooled connection (its idle timer fired, it restarted, a load
 * balancer in between timed it out) just as the shim sends a request on it. A safe, bodiless request that lost
 * its reused connection before any answer is sent once more, on a new connection (node:http's `reusedSocket`
 * advice, nginx's `proxy_next_upstream error`); anything else keeps its 502.
 */

const TIMEOUT_MS = 2_000;
const track = closedAfterEach();

type Drop = 'close' | 'reset';

/** Drops the request's connection the moment its head has arrived, without a byte of answer. */
function drop(socket: Socket, how: Drop): void {
  if (how === 'reset') socket.resetAndDestroy();
  else socket.destroy();
}

/**
 * 200 `healthy`, its length said, as Nango (Express) says it on a HEAD too (connection-get.json "HEAD
 * /connections/conn-1"): node:http keeps a connection whose HEAD answer says none.
 */
const answerHealthy: UpstreamHandler = (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-length': 'healthy'.length });
    res.end(req.method === 'HEAD' ? undefined : 'healthy');
  });
};

/**
 * Answers the first request of every connection 200 `healthy`, and drops the connection at the head of the
 * second one (`close`: a FIN, as an upstream whose keep-alive timer fired; `reset`: an RST).
 */
function dropsReusedConnections(how: Drop): UpstreamHandler {
  const served = new WeakSet<Socket>();
  return (req, res) => {
    if (served.has(req.socket)) return drop(req.socket, how);
    served.add(req.socket);
    answerHealthy(req, res);
  };
}

/** Answers the very first request 200 `healthy`, and drops the connection of every later one. */
function dropsAllButTheFirst(how: Drop): UpstreamHandler {
  let calls = 0;
  return (req, res) => {
    calls += 1;
    if (calls > 1) return drop(req.socket, how);
    answerHealthy(req, res);
  };
}

/** The upstream connections (the shim's ends of them) that carried `requests`. */
function connectionsOf(requests: SeenRequest[]): number {
  return new Set(requests.map((seen) => seen.remotePort)).size;
}

async function through(
  handler: UpstreamHandler,
  overrides: Record<string, unknown> = {},
): Promise<{ upstream: RecordingUpstream; shim: RunningShim; metrics: () => Promise<string> }> {
  let metrics: Metrics | undefined;
  const upstream = track(await startUpstream(handler));
  const shim = track(
    await startShim(
      upstream.url,
      { upstream: { timeoutMs: TIMEOUT_MS }, ...overrides },
      [],
      ({ configs }) => {
        metrics = createMetrics({ configs });
        return { observer: metrics.observer };
      },
    ),
  );
  return { upstream, shim, metrics: async () => (await metrics?.render()) ?? '' };
}

function retryLines(shim: RunningShim) {
  return shim.logs().filter((line) => line.msg === 'upstream request retried');
}

function failureLines(shim: RunningShim) {
  return shim.logs().filter((line) => line.msg === 'upstream request failed');
}

describe('a pass-through request on a pooled connection the upstream has just closed', () => {
  it.each<[string, Drop]>([
    ['GET', 'close'],
    ['GET', 'reset'],
    ['HEAD', 'close'],
    ['HEAD', 'reset'],
    ['OPTIONS', 'close'],
  ])('answers a %s with the upstream’s 200 from a new connection (%s)', async (method, how) => {
    const { upstream, shim, metrics } = await through(dropsReusedConnections(how));
    // The first request leaves its connection in the shim's pool.
    expect((await request(shim.url, { method, path: '/providers' })).status).toBe(200);

    const res = await within(5_000, 'retried request', request(shim.url, { method, path: '/providers' }));

    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe(method === 'HEAD' ? '' : 'healthy');
    // Sent on the pooled connection, lost, and sent once more on a second connection.
    expect(upstream.requests.map((seen) => seen.method)).toEqual([method, method, method]);
    expect(connectionsOf(upstream.requests)).toBe(2);
    expect(connectionsOf(upstream.requests.slice(1))).toBe(2);
    expect(failureLines(shim)).toEqual([]);
    expect(retryLines(shim)).toEqual([
      expect.objectContaining({ level: 'warn', method, path: '/providers', reason: expect.any(String) }),
    ]);
    // One client request, one count and one duration, however many exchanges it took.
    await expect.poll(() => shim.shim.inFlight()).toBe(0);
    const rendered = await metrics();
    expect(rendered).toContain(
      `nango_shim_passthrough_requests_total{method="${method}",status_class="2xx"} 2`,
    );
    expect(rendered).not.toContain('status_class="5xx"');
    expect(rendered).toContain(
      'nango_shim_upstream_request_duration_seconds_count{route="passthrough",target="passthrough"} 2',
    );
    expect(rendered).toContain('\nnango_shim_upstream_retries_total 1\n');
  });

  it('sends it on a new connection, never on another pooled one that may be as dead', async () => {
    // The first two requests are answered together, so that both their connections wait in the pool; every
    // later request on either is dropped, as after an upstream restart.
    const dropReused = dropsReusedConnections('close');
    const held: Array<() => void> = [];
    const { upstream, shim } = await through((req, res) => {
      if (upstream.requests.length > 2) return dropReused(req, res);
      held.push(() => dropReused(req, res));
      if (held.length === 2) for (const answer of held) answer();
    });
    const first = await Promise.all([request(shim.url, { path: '/a' }), request(shim.url, { path: '/b' })]);
    expect(first.map((res) => res.status)).toEqual([200, 200]);
    const pooled = upstream.requests.map((seen) => seen.remotePort);
    expect(new Set(pooled).size).toBe(2);

    const res = await within(5_000, 'retried request', request(shim.url, { path: '/providers' }));

    expect(res.status).toBe(200);
    // One pooled connection, then a new one: the other pooled connection is not tried.
    expect(upstream.requests).toHaveLength(4);
    expect(pooled).toContain(upstream.requests[2]?.remotePort);
    expect(pooled).not.toContain(upstream.requests[3]?.remotePort);
    expect(retryLines(shim)).toHaveLength(1);
  });

  it('sends it again when it waited for a busy pool and was handed the connection an answer had just freed', async () => {
    // One pooled connection: the second request waits for it while the first holds it.
    const dropReused = dropsReusedConnections('close');
    let answerFirst: () => void = () => {};
    const { upstream, shim } = await through(
      (req, res) => {
        if (upstream.requests.length > 1) return dropReused(req, res);
        answerFirst = () => dropReused(req, res);
      },
      { upstream: { timeoutMs: TIMEOUT_MS, maxSockets: 1 } },
    );
    const first = request(shim.url, { path: '/a' });
    await expect.poll(() => upstream.requests.length).toBe(1);
    const second = within(5_000, 'handed-over request', request(shim.url, { path: '/b' }));
    await expect.poll(() => shim.shim.inFlight()).toBe(2);

    // node:http hands the freed connection straight to the waiting request, which the upstream then drops.
    answerFirst();

    expect((await first).status).toBe(200);
    const res = await second;
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('healthy');
    expect(upstream.requests.map((seen) => seen.url)).toEqual(['/a', '/b', '/b']);
    expect(connectionsOf(upstream.requests)).toBe(2);
    expect(connectionsOf(upstream.requests.slice(0, 2))).toBe(1);
    expect(retryLines(shim)).toHaveLength(1);
    expect(failureLines(shim)).toEqual([]);
  });

  it('keeps the client’s keep-alive connection, with one answer', async () => {
    const { shim } = await through(dropsReusedConnections('close'));
    expect((await request(shim.url, { path: '/providers' })).status).toBe(200);

    const reply = await exchangeRaw(
      shim.url,
      'GET /providers HTTP/1.1\r\nHost: a\r\n\r\nGET /providers HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );

    // Both pipelined requests answered 200, in order, each once: the retry wrote nothing twice.
    expect(answerCount(reply.text)).toBe(2);
    expect(reply.text.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
    expect(reply.closed).toBe(true);
  });

  it.each<[string, string | undefined]>([
    ['POST', 'a body'],
    ['PUT', 'a body'],
    ['DELETE', undefined],
    ['GET', 'a body'],
  ])('answers a %s (%s) 502 as before, sent once', async (method, body) => {
    const { upstream, shim, metrics } = await through(dropsReusedConnections('close'));
    expect((await request(shim.url, { path: '/providers' })).status).toBe(200);

    // node:http sends a GET's body only when its length is given.
    const headers = body === undefined ? {} : { 'content-length': Buffer.byteLength(body) };
    const res = await within(
      5_000,
      'lost request',
      request(shim.url, { method, path: '/providers', headers, body }),
    );

    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_response_lost', message: expect.any(String) },
    });
    expect(upstream.requests.map((seen) => seen.method)).toEqual(['GET', method]);
    expect(upstream.requests[1]?.headers['content-length']).toBe(body === undefined ? '0' : '6');
    expect(retryLines(shim)).toEqual([]);
    expect(failureLines(shim)).toEqual([expect.objectContaining({ method, failure: 'lost' })]);
    expect(await metrics()).toContain('\nnango_shim_upstream_retries_total 0\n');
  });

  it('answers 502 to a GET that fails on a new connection, sent once', async () => {
    const { upstream, shim } = await through((req) => drop(req.socket, 'close'));

    const res = await within(5_000, 'lost request', request(shim.url, { path: '/providers' }));

    expect(res.status).toBe(502);
    expect(upstream.requests).toHaveLength(1);
    expect(retryLines(shim)).toEqual([]);
    expect(failureLines(shim)).toEqual([expect.objectContaining({ method: 'GET', failure: 'lost' })]);
  });

  it.each<Drop>(['close', 'reset'])(
    'answers one 502 when the new connection is lost too (%s), and retries no more',
    async (how) => {
      const { upstream, shim, metrics } = await through(dropsAllButTheFirst(how));
      expect((await request(shim.url, { path: '/providers' })).status).toBe(200);

      const reply = await exchangeRaw(shim.url, 'GET /providers HTTP/1.1\r\nHost: a\r\n\r\n', {
        timeoutMs: 1_000,
      });

      expect(reply.status).toBe(502);
      expect(answerCount(reply.text)).toBe(1);
      expect(jsonBodyOf(reply.text)).toEqual({
        error: { code: 'upstream_response_lost', message: expect.any(String) },
      });
      // The pooled connection, then one new one: never a third attempt.
      expect(upstream.requests).toHaveLength(3);
      expect(connectionsOf(upstream.requests.slice(1))).toBe(2);
      expect(retryLines(shim)).toHaveLength(1);
      expect(failureLines(shim)).toEqual([expect.objectContaining({ method: 'GET', failure: 'lost' })]);
      await expect.poll(() => shim.shim.inFlight()).toBe(0);
      const rendered = await metrics();
      expect(rendered).toContain('nango_shim_passthrough_requests_total{method="GET",status_class="5xx"} 1');
      expect(rendered).toContain(
        'nango_shim_upstream_request_duration_seconds_count{route="passthrough",target="passthrough"} 2',
      );
      expect(rendered).toContain('\nnango_shim_upstream_retries_total 1\n');
    },
  );
});

describe('a request sent again after the keep-alive race', () => {
  it('answers 504 when its new connection never answers, within upstream.timeoutMs', async () => {
    const dropReused = dropsReusedConnections('close');
    const { upstream, shim } = await through(
      (req, res) => {
        // The retry, the third request, is never answered.
        if (upstream.requests.length < 3) dropReused(req, res);
      },
      { upstream: { timeoutMs: 300 } },
    );
    expect((await request(shim.url, { path: '/providers' })).status).toBe(200);

    const started = performance.now();
    const res = await within(5_000, 'retried request', request(shim.url, { path: '/providers' }));

    expect(res.status).toBe(504);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_timeout', message: expect.any(String) },
    });
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(upstream.requests).toHaveLength(3);
    expect(retryLines(shim)).toHaveLength(1);
    expect(failureLines(shim)).toEqual([expect.objectContaining({ failure: 'timeout' })]);
  });
});

describe('a legacy GET /connection/:id on a pooled connection the upstream has just closed', () => {
  const captured = loadCaptures('connection-get.json').find(
    (entry) => entry.name === 'GET /connections/conn-1?provider_config_key (new single)',
  );

  /** Nango's answer to GET /connections/conn-1, as captured. */
  const answerCaptured: UpstreamHandler = (req, res) => {
    const response = captured?.response;
    if (!response) throw new Error('capture missing');
    req.resume();
    res.writeHead(response.status, {
      'content-type': String(response.headers['content-type']),
      etag: String(response.headers.etag),
    });
    res.end(response.body);
  };

  it.each([
    ['a streamed translation', 'translate', 'successor', '/connections/conn-1?provider_config_key=unauth'],
    ['the passthrough stage', 'passthrough', 'legacy', '/connection/conn-1?provider_config_key=unauth'],
  ])('is sent once more on %s, and recorded once', async (_name, stage, target, sentPath) => {
    const served = new WeakSet<Socket>();
    const { upstream, shim, metrics } = await through(
      (req, res) => {
        if (served.has(req.socket)) return drop(req.socket, 'close');
        served.add(req.socket);
        answerCaptured(req, res);
      },
      { routes: { 'connection-get': { stage } } },
    );
    const get = () =>
      request(shim.url, {
        path: '/connection/conn-1?provider_config_key=unauth',
        headers: { authorization: `Bearer ${DEV_KEY}` },
      });
    expect((await get()).status).toBe(200);

    const res = await within(5_000, 'retried request', get());

    expect(res.status).toBe(captured?.response?.status);
    expect(res.body.toString()).toBe(captured?.response?.body);
    expect(upstream.requests.map((seen) => seen.url)).toEqual([sentPath, sentPath, sentPath]);
    expect(connectionsOf(upstream.requests)).toBe(2);
    expect(retryLines(shim)).toHaveLength(1);
    expect(failureLines(shim)).toEqual([]);
    await expect.poll(() => shim.shim.inFlight()).toBe(0);
    const usage = shim.logs().filter((line) => line.msg === 'deprecated endpoint called');
    expect(usage.map((line) => [line.status, line.action])).toEqual([
      [200, stage === 'translate' ? 'translated' : 'passed-through'],
      [200, stage === 'translate' ? 'translated' : 'passed-through'],
    ]);
    expect(await metrics()).toContain(
      `nango_shim_upstream_request_duration_seconds_count{route="connection-get",target="${target}"} 2`,
    );
  });
});
