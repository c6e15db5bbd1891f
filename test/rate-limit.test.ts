import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { weakEtag } from '../src/etag.js';
import { createLogger } from '../src/logger.js';
import { createRateLimiter, limitRules, type RateLimiter } from '../src/rate-limit.js';
import { createRedisConnection, type RedisConnection } from '../src/redis.js';
import type { UsageSink } from '../src/usage.js';
import { loadCaptures } from './support/captures.js';
import { type EchoUpstream, patchLegacyMetadata, startEchoUpstream } from './support/echo-upstream.js';
import { DEV_KEY, startFakeNango } from './support/fake-nango.js';
import { HAS_REDIS_SERVER, startTestRedis, type TestRedis } from './support/redis-server.js';
import { DEFAULTS, type RunningShim, startShim } from './support/shim.js';
import { request, sha256, startUpstream, within } from './support/upstream.js';

const KEY_A = '5ec7e7a1-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const KEY_B = '5ec7e7a1-bbbb-4bbb-8bbb-bbbbbbbbbbbb';
const METADATA_LIMIT = { routes: { 'connection-metadata': { rateLimit: { windowMs: 60_000, limit: 2 } } } };

let upstream: EchoUpstream;
const running: Array<{ close(): Promise<void> | void }> = [];

beforeAll(async () => {
  upstream = await startEchoUpstream();
});
afterAll(async () => {
  await upstream.close();
});
afterEach(async () => {
  for (const item of running.splice(0).reverse()) await item.close();
  upstream.requests.length = 0;
});

async function limitedShim(
  overrides: Record<string, unknown>,
  redis?: RedisConnection,
  usage: UsageSink[] = [],
): Promise<RunningShim> {
  let limiter: RateLimiter | undefined;
  const shim = await startShim(upstream.url, overrides, usage, ({ configs, logger }) => {
    limiter = createRateLimiter({ configs, logger, redis });
    return { limiter };
  });
  running.push(shim, { close: () => limiter?.close() });
  return shim;
}

describe('limitRules', () => {
  it('has no rule for a null limit, so nothing is limited by default', () => {
    const { config } = parseConfig([DEFAULTS]);
    expect(limitRules(config).size).toBe(0);
    const limiter = createRateLimiter({
      configs: { current: parseConfig([DEFAULTS]) },
      logger: createLogger('silent'),
    });
    expect(limiter.appliesTo('connection-metadata')).toBe(false);
    expect(limiter.appliesTo('passthrough')).toBe(false);
    limiter.close();
  });

  it('follows a config reload', () => {
    const configs = { current: parseConfig([DEFAULTS]) };
    const limiter = createRateLimiter({ configs, logger: createLogger('silent') });
    expect(limiter.appliesTo('connection-get')).toBe(false);
    configs.current = parseConfig([
      DEFAULTS,
      { routes: { 'connection-get': { rateLimit: { windowMs: 1000, limit: 5 } } } },
    ]);
    expect(limiter.appliesTo('connection-get')).toBe(true);
    expect(limiter.appliesTo('connection-list')).toBe(false);
    limiter.close();
  });
});

describe('rate limits with the memory store', () => {
  it('answers 429 in Nango shape once a key spends its budget, and counts keys apart', async () => {
    const shim = await limitedShim(METADATA_LIMIT);
    const first = await patchLegacyMetadata(shim.url, KEY_A);
    expect(first.status).toBe(200);
    expect(first.headers.get('ratelimit')).toBe('"connection-metadata"; r=1; t=60');
    expect(first.headers.get('ratelimit-policy')).toMatch(
      /^"connection-metadata"; q=2; w=60; pk=:[A-Za-z0-9+/=]+:$/,
    );
    expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);

    const limited = await patchLegacyMetadata(shim.url, KEY_A);
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(limited.headers.get('ratelimit')).toBe('"connection-metadata"; r=0; t=60');
    // RFC 9745: a deprecated route says so on every answer, its 429 included.
    expect(limited.headers.get('deprecation')).toBeTruthy();
    const body = (await limited.json()) as { error: Record<string, unknown> };
    expect(body.error.code).toBe('too_many_request');
    expect(body.error.method).toBe('PATCH');
    expect(body.error.path).toBe('/connection/metadata');
    expect(body.error.message).toMatch(/at most 2 per 60 s for this API key\./);

    expect((await patchLegacyMetadata(shim.url, KEY_B)).status).toBe(200);
    // The limited call never reached the upstream.
    expect(upstream.requests.filter((request) => request.url === '/connections/metadata')).toHaveLength(3);
    expect(shim.logs().filter((line) => line.msg === 'rate limiter misconfigured')).toEqual([]);
  });

  it('keeps each budget spent across a reload that changes only failOpen, which no memory store uses', async () => {
    const shim = await limitedShim(METADATA_LIMIT);
    expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(429);
    shim.configs.current = parseConfig([
      DEFAULTS,
      METADATA_LIMIT,
      { upstream: { url: upstream.url }, rateLimit: { failOpen: false } },
    ]);
    expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(429);
    expect(upstream.requests.filter((request) => request.url === '/connections/metadata')).toHaveLength(2);
  });

  it('limits keyless pass-through traffic by client IP', async () => {
    const shim = await limitedShim({ rateLimit: { passthrough: { windowMs: 60_000, limit: 1 } } });
    expect((await fetch(`${shim.url}/providers`)).status).toBe(200);
    const limited = await fetch(`${shim.url}/providers?again=1`);
    expect(limited.status).toBe(429);
    expect(await limited.json()).toMatchObject({
      error: {
        code: 'too_many_request',
        // Keyless calls share their address's budget, and the message says whose budget it is.
        message: expect.stringMatching(/at most 1 per 60 s for this client address\./),
        method: 'GET',
        path: '/providers',
      },
    });
    expect(upstream.requests).toHaveLength(1);
  });

  it('records a limited deprecated call as rate-limited', async () => {
    const actions: string[] = [];
    let limiter: RateLimiter | undefined;
    const shim = await startShim(
      upstream.url,
      { routes: { 'connection-metadata': { rateLimit: { windowMs: 60_000, limit: 1 } } } },
      [{ record: (event) => actions.push(`${event.action} ${event.status}`) }],
      ({ configs, logger }) => {
        limiter = createRateLimiter({ configs, logger });
        return { limiter };
      },
    );
    running.push(shim, { close: () => limiter?.close() });
    await patchLegacyMetadata(shim.url, KEY_A);
    await patchLegacyMetadata(shim.url, KEY_A);
    await expect.poll(() => actions).toEqual(['translated 200', 'rate-limited 429']);
  });
});

/** rate-limit.json: Nango's own 429, whose body names the method and the path that was called. */
function captured429(name: string) {
  const entry = loadCaptures('rate-limit.json').find((candidate) => candidate.name === name);
  if (!entry?.response) throw new Error(`rate-limit.json has no exchange named ${name}`);
  return entry.response;
}

describe("the successor's own 429 on a translated call", () => {
  async function overBudget(method: string, path: string, body?: string) {
    const fake = await startFakeNango({ legacyRoutes: false, rateLimit: 1 });
    const shim = await startShim(fake.url);
    running.push(fake, shim);
    const send = () =>
      fetch(shim.url + path, {
        method,
        headers: { authorization: `Bearer ${DEV_KEY}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body }),
      });
    const first = await send();
    await first.arrayBuffer();
    expect(first.status).not.toBe(429);
    const limited = await send();
    const text = await limited.text();
    expect(fake.requests.at(-1)?.url).toMatch(/^\/connections/);
    return { status: limited.status, headers: limited.headers, body: text };
  }

  it('names the legacy path on the streamed migrations, with its length and ETag (rate-limit.json)', async () => {
    // The capture of the successor's 429, and the legacy route's own naming of the path that was called.
    const successor = captured429('GET /connections/conn-1 while rate-limited -> 429');
    expect(successor.body).toBe(
      '{"error":{"code":"too_many_request","method":"GET","path":"/connections/conn-1"}}',
    );
    const legacyBody = successor.body.replace('"/connections/conn-1"', '"/connection/conn-1"');
    const reply = await overBudget('GET', '/connection/conn-1?provider_config_key=unauth');
    expect(reply.status).toBe(429);
    expect(reply.body).toBe(legacyBody);
    expect(reply.headers.get('content-length')).toBe(String(Buffer.byteLength(legacyBody)));
    expect(reply.headers.get('etag')).toBe(weakEtag(Buffer.from(legacyBody)));
    expect(reply.headers.get('retry-after')).not.toBeNull();
    expect(reply.headers.get('deprecation')).toBe('@1755648000');
  });

  it.each([
    ['DELETE', '/connection/conn-2?provider_config_key=unauth', '/connection/conn-2'],
    ['GET', '/connection?connectionId=conn-1', '/connection'],
    ['GET', '/Connection/conn-1/?provider_config_key=unauth', '/Connection/conn-1/'],
  ])('names the path that was called on %s %s', async (method, path, legacyPath) => {
    const reply = await overBudget(method, path);
    expect(reply.status).toBe(429);
    expect(JSON.parse(reply.body)).toEqual({ error: { code: 'too_many_request', method, path: legacyPath } });
    expect(reply.headers.get('content-length')).toBe(String(Buffer.byteLength(reply.body)));
    expect(reply.headers.get('etag')).toBe(weakEtag(Buffer.from(reply.body)));
  });

  it('gives a HEAD 429 the length and ETag of the body naming the legacy path, as Express does', async () => {
    // Express sends a HEAD answer with the Content-Length and ETag of the body it leaves out (connection-get.json
    // "HEAD /connections/conn-1": 539 bytes, as the GET), and Nango's 429 body names the method and the path
    // that were called (rate-limit.json): the legacy route's HEAD 429 describes this body.
    const legacyBody = Buffer.from(
      '{"error":{"code":"too_many_request","method":"HEAD","path":"/connection/conn-1"}}',
    );
    const reply = await overBudget('HEAD', '/connection/conn-1?provider_config_key=unauth');
    expect(reply.status).toBe(429);
    expect(reply.body).toBe('');
    expect(reply.headers.get('content-length')).toBe(String(legacyBody.length));
    expect(reply.headers.get('etag')).toBe(weakEtag(legacyBody));
    expect(reply.headers.get('retry-after')).not.toBeNull();
    // The same as a Nango that still has the legacy route (an Express 5 app) answers.
    const nango = await startFakeNango({ legacyRoutes: true, rateLimit: 1 });
    running.push(nango);
    const head = () =>
      fetch(`${nango.url}/connection/conn-1?provider_config_key=unauth`, {
        method: 'HEAD',
        headers: { authorization: `Bearer ${DEV_KEY}` },
      });
    expect((await head()).status).toBe(200);
    const direct = await head();
    expect(direct.status).toBe(429);
    expect(direct.headers.get('content-length')).toBe(reply.headers.get('content-length'));
    expect(direct.headers.get('etag')).toBe(reply.headers.get('etag'));
  });

  it("leaves a HEAD 429 that is not Nango's own as the upstream sent it", async () => {
    // A gateway's 429 (its own body, length and validator): nothing says what the legacy route would have sent.
    const gateway = await startUpstream((_req, res) => {
      res.writeHead(429, { 'content-type': 'text/plain', 'content-length': '17', etag: '"gw-1"' }).end();
    });
    const shim = await startShim(gateway.url);
    running.push(gateway, shim);
    const reply = await fetch(`${shim.url}/connection/conn-1?provider_config_key=unauth`, { method: 'HEAD' });
    expect(reply.status).toBe(429);
    expect(reply.headers.get('content-length')).toBe('17');
    expect(reply.headers.get('etag')).toBe('"gw-1"');
  });

  // Nango never chunks or compresses its 429, but a gateway in front of it may: the legacy client is told its
  // own path all the same, in a plain body, as a body-style translation is (migrate.ts decodeAnswer).
  const SUCCESSOR_429 = captured429('GET /connections/conn-1 while rate-limited -> 429');
  const LEGACY_429 = SUCCESSOR_429.body.replace('"/connections/conn-1"', '"/connection/conn-1"');
  it.each([
    ['chunked', undefined, (body: string) => Buffer.from(body)],
    ['gzip', 'gzip', gzipSync],
    ['deflate', 'deflate', deflateSync],
    ['br', 'br', brotliCompressSync],
    ['gzip, chunked', 'gzip', gzipSync],
  ])(
    'names the legacy path in a %s 429 on a streamed migration, sent plain',
    async (framing, coding, encode) => {
      const encoded = encode(SUCCESSOR_429.body);
      const gateway = await startUpstream((_req, res) => {
        res.writeHead(429, {
          'content-type': SUCCESSOR_429.headers['Content-Type'],
          'retry-after': '55',
          etag: weakEtag(encoded),
          ...(coding === undefined ? {} : { 'content-encoding': coding }),
          ...(framing.endsWith('chunked') ? {} : { 'content-length': encoded.length }),
        });
        // Two writes: node:http chunks an answer with no length.
        res.write(encoded.subarray(0, 10));
        res.end(encoded.subarray(10));
      });
      const shim = await startShim(gateway.url);
      running.push(gateway, shim);

      const reply = await request(shim.url, { path: '/connection/conn-1?provider_config_key=unauth' });

      expect(gateway.requests[0]?.url).toBe('/connections/conn-1?provider_config_key=unauth');
      expect(reply.status).toBe(429);
      expect(reply.body.toString()).toBe(LEGACY_429);
      expect(reply.headers['content-encoding']).toBeUndefined();
      expect(reply.headers['transfer-encoding']).toBeUndefined();
      expect(reply.headers['content-length']).toBe(String(Buffer.byteLength(LEGACY_429)));
      expect(reply.headers.etag).toBe(weakEtag(Buffer.from(LEGACY_429)));
      expect(reply.headers['retry-after']).toBe('55');
    },
  );

  it('names the legacy path in a chunked 429 that announces trailer fields, sent plain without them', async () => {
    const gateway = await startUpstream((_req, res) => {
      res.writeHead(429, { 'content-type': SUCCESSOR_429.headers['Content-Type'], trailer: 'x-checksum' });
      res.write(SUCCESSOR_429.body);
      res.addTrailers({ 'x-checksum': sha256(Buffer.from(SUCCESSOR_429.body)) });
      res.end();
    });
    const shim = await startShim(gateway.url);
    running.push(gateway, shim);

    // node:http throws on a Trailer field in an answer of known length: left in, it killed the process.
    const reply = await request(shim.url, { path: '/connection/conn-1?provider_config_key=unauth' });

    expect(reply.status).toBe(429);
    expect(reply.body.toString()).toBe(LEGACY_429);
    expect(reply.headers['content-length']).toBe(String(Buffer.byteLength(LEGACY_429)));
    expect(reply.headers.trailer).toBeUndefined();
    expect((await request(shim.url, { path: '/providers' })).status).toBe(429);
  });

  it('passes a chunked 429 longer than 16 KiB on as it comes, whole', async () => {
    const long = Buffer.from(
      JSON.stringify({
        error: { code: 'too_many_request', path: '/connections/conn-1', pad: 'x'.repeat(40_000) },
      }),
    );
    const gateway = await startUpstream((_req, res) => {
      res.writeHead(429, { 'content-type': 'application/json' });
      for (let at = 0; at < long.length; at += 1_000) res.write(long.subarray(at, at + 1_000));
      res.end();
    });
    const shim = await startShim(gateway.url);
    running.push(gateway, shim);

    const reply = await request(shim.url, { path: '/connection/conn-1?provider_config_key=unauth' });

    expect(reply.status).toBe(429);
    expect(reply.body.equals(long)).toBe(true);
  });

  it('names the legacy path on the body-style route with the very ETag Nango sent (rate-limit.json)', async () => {
    const legacy = captured429('PATCH /connection/metadata while rate-limited -> 429');
    const reply = await overBudget(
      'PATCH',
      '/connection/metadata',
      '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"rl":2}}',
    );
    expect(reply.status).toBe(429);
    expect(reply.body).toBe(legacy.body);
    expect(reply.headers.get('content-length')).toBe(legacy.headers['Content-Length']);
    expect(reply.headers.get('etag')).toBe(legacy.headers.ETag);
  });
});

describe.skipIf(!HAS_REDIS_SERVER)('rate limits on Redis', () => {
  let redis: TestRedis;

  beforeAll(async () => {
    redis = await startTestRedis();
  });
  afterAll(async () => {
    await redis.close();
  });

  /** A connection to the test Redis, once ready: before that a limiter fails open, by design. */
  async function connect({ ready = true } = {}): Promise<RedisConnection> {
    const connection = createRedisConnection({ url: redis.url, logger: createLogger('silent') });
    running.push(connection);
    if (ready) await connection.whenReady(5_000);
    return connection;
  }

  it('shares one budget between two instances', async () => {
    const one = await limitedShim(METADATA_LIMIT, await connect());
    const two = await limitedShim(METADATA_LIMIT, await connect());
    const key = '5ec7e7a1-cccc-4ccc-8ccc-cccccccccccc';
    expect((await patchLegacyMetadata(one.url, key)).status).toBe(200);
    expect((await patchLegacyMetadata(two.url, key)).status).toBe(200);
    expect((await patchLegacyMetadata(one.url, key)).status).toBe(429);
    expect((await patchLegacyMetadata(two.url, key)).status).toBe(429);
    expect((await patchLegacyMetadata(two.url, KEY_B)).status).toBe(200);
  });

  it('fails open while Redis is down and limits again once it is back', async () => {
    const connection = await connect();
    const shim = await limitedShim(METADATA_LIMIT, connection);
    const key = '5ec7e7a1-dddd-4ddd-8ddd-dddddddddddd';
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(200);
    await redis.stop();
    try {
      for (let i = 0; i < 4; i += 1) expect((await patchLegacyMetadata(shim.url, key)).status).toBe(200);
      expect(shim.logs().some((line) => line.msg === 'rate limit store failed, request allowed')).toBe(true);
    } finally {
      await redis.start();
    }
    await connection.whenReady(5_000);
    // A restarted Redis is empty and has forgotten the scripts: the budget starts again, and is enforced.
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(429);
  });

  it('refuses with 503 while Redis is down when failOpen is off, counted as failed, not rate-limited', async () => {
    const connection = await connect();
    const actions: string[] = [];
    const shim = await limitedShim({ ...METADATA_LIMIT, rateLimit: { failOpen: false } }, connection, [
      { record: (event) => actions.push(`${event.action} ${event.status}`) },
    ]);
    await redis.stop();
    try {
      const refused = await patchLegacyMetadata(shim.url, KEY_A);
      expect(refused.status).toBe(503);
      expect(await refused.json()).toMatchObject({ error: { code: 'rate_limit_unavailable' } });
    } finally {
      await redis.start();
    }
    expect(upstream.requests).toEqual([]);
    // The key did not spend its budget: whoever graphs rate-limited calls must not see a Redis outage.
    await expect.poll(() => actions).toEqual(['failed 503']);
  });

  it('fails open within about 1 s when Redis hangs, says so once, and limits again once it resumes', async () => {
    const connection = await connect();
    const shim = await limitedShim(METADATA_LIMIT, connection);
    expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);
    redis.pause();
    try {
      const started = performance.now();
      const first = await within(
        4_000,
        'a limited call while Redis hangs',
        patchLegacyMetadata(shim.url, KEY_A),
      );
      expect(first.status).toBe(200);
      expect(performance.now() - started).toBeLessThan(2_000);
      // The unanswered connection was dropped: the next calls do not wait for a deadline of their own.
      const next = performance.now();
      for (let i = 0; i < 4; i += 1) expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);
      expect(performance.now() - next).toBeLessThan(1_000);
      expect(shim.logs().filter((line) => line.msg === 'rate limit store failed, request allowed')).toEqual([
        expect.objectContaining({ scope: 'connection-metadata', failOpen: true, suppressed: 0 }),
      ]);
    } finally {
      redis.resume();
    }
    await connection.whenReady(5_000);
    const key = '5ec7e7a1-ffff-4fff-8fff-ffffffffffff';
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(429);
  });

  it('refuses with 503 within about 1 s when Redis hangs and failOpen is off', async () => {
    const connection = await connect();
    const shim = await limitedShim({ ...METADATA_LIMIT, rateLimit: { failOpen: false } }, connection);
    redis.pause();
    try {
      const started = performance.now();
      const refused = await within(
        4_000,
        'a limited call while Redis hangs',
        patchLegacyMetadata(shim.url, KEY_B),
      );
      expect(performance.now() - started).toBeLessThan(2_000);
      expect(refused.status).toBe(503);
      expect(await refused.json()).toMatchObject({ error: { code: 'rate_limit_unavailable' } });
      expect(shim.logs().map((line) => line.msg)).toContain('rate limit store failed, request refused');
    } finally {
      redis.resume();
    }
    expect(upstream.requests).toEqual([]);
  });

  it('limits from the start even when Redis was down when the shim started', async () => {
    await redis.stop();
    const connection = await connect({ ready: false });
    let shim: RunningShim;
    try {
      shim = await limitedShim(METADATA_LIMIT, connection);
      expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);
    } finally {
      await redis.start();
    }
    await connection.whenReady(5_000);
    const key = '5ec7e7a1-eeee-4eee-8eee-eeeeeeeeeeee';
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, key)).status).toBe(429);
  });
});
