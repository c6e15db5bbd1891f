import request from 'supertest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAdminApp } from '../src/admin.js';
import { fingerprintKey } from '../src/api-key.js';
import { parseConfig, ROUTE_IDS } from '../src/config.js';
import { createLedger, type Ledger } from '../src/ledger.js';
import { createRedisLedgerStore } from '../src/ledger-redis-store.js';
import { createLogger } from '../src/logger.js';
import { createMetrics } from '../src/metrics.js';
import { createRateLimiter } from '../src/rate-limit.js';
import { createRedisConnection, type RedisConnection } from '../src/redis.js';
import { type EchoUpstream, patchLegacyMetadata, startEchoUpstream } from './support/echo-upstream.js';
import { HAS_REDIS_SERVER, startTestRedis, type TestRedis } from './support/redis-server.js';
import { DEFAULTS, type RunningShim, startShim } from './support/shim.js';
import { within } from './support/upstream.js';
import { usageEvent } from './support/usage-event.js';

const KEY_A = 'a11ce000-1111-4111-8111-5ec2e7000001';
const KEY_B = 'b0b00000-2222-4222-8222-5ec2e7000002';

describe.skipIf(!HAS_REDIS_SERVER)('the ledger on Redis', () => {
  let redis: TestRedis;
  let upstream: EchoUpstream;
  let closers: Array<() => Promise<void> | void> = [];

  beforeAll(async () => {
    upstream = await startEchoUpstream();
  });
  afterAll(async () => {
    await upstream.close();
  });
  // Each test gets an empty Redis of its own.
  beforeEach(async () => {
    redis = await startTestRedis();
  });
  afterEach(async () => {
    redis.resume();
    for (const close of closers.reverse()) await close();
    closers = [];
    await redis.close();
  });

  function connect(): RedisConnection {
    const connection = createRedisConnection({ url: redis.url, logger: createLogger('silent') });
    closers.push(() => connection.close());
    return connection;
  }

  /** A shim whose ledger (and rate limits, fail-open) live on the test Redis. */
  async function shimOnRedis(
    overrides: Record<string, unknown> = {},
  ): Promise<{ shim: RunningShim; ledger: Ledger; connection: RedisConnection }> {
    let ledger: Ledger | undefined;
    let connection: RedisConnection | undefined;
    const shim = await startShim(upstream.url, overrides, [], ({ configs, logger }) => {
      connection = createRedisConnection({ url: redis.url, logger });
      ledger = createLedger({ store: createRedisLedgerStore(connection), configs, logger });
      return { usage: [ledger], limiter: createRateLimiter({ configs, logger, redis: connection }) };
    });
    const made = { shim, ledger: ledger as Ledger, connection: connection as RedisConnection };
    closers.push(
      () => shim.close(),
      () => made.ledger.close(),
      () => made.connection.close(),
    );
    await made.connection.whenReady(5_000);
    return made;
  }

  it('gives one merged answer for two shims on one Redis', async () => {
    const one = await shimOnRedis();
    const two = await shimOnRedis();
    expect((await patchLegacyMetadata(one.shim.url, KEY_A, 'crm-sync/1.0')).status).toBe(200);
    expect((await patchLegacyMetadata(one.shim.url, KEY_A, 'crm-sync/1.0')).status).toBe(200);
    expect((await patchLegacyMetadata(two.shim.url, KEY_B, 'billing/2.3')).status).toBe(200);
    expect((await patchLegacyMetadata(two.shim.url, KEY_A, 'crm-sync/1.1')).status).toBe(200);
    await one.ledger.flush();
    await two.ledger.flush();

    const fromOne = await one.ledger.report();
    const fromTwo = await two.ledger.report();
    expect(fromOne.routes).toEqual(fromTwo.routes);
    const consumers = fromOne.routes.find((route) => route.route === 'connection-metadata')?.consumers ?? [];
    expect(consumers).toHaveLength(2);
    expect(consumers.find((usage) => usage.consumer === fingerprintKey(KEY_A))).toMatchObject({
      total_calls: 3,
      calls: { '2xx': 3 },
      last_user_agent: 'crm-sync/1.1',
      stage: 'translate',
    });
    expect(consumers.find((usage) => usage.consumer === fingerprintKey(KEY_B))).toMatchObject({
      total_calls: 1,
      last_user_agent: 'billing/2.3',
    });

    // Nothing in Redis holds a raw key: not a key name, not a value.
    const reader = connect();
    await reader.whenReady(5_000);
    const keys = (await reader.sendCommand(['KEYS', '*'])) as string[];
    expect(keys.length).toBeGreaterThan(0);
    const everything: string[] = [...keys];
    for (const key of keys) {
      const type = await reader.sendCommand(['TYPE', key]);
      if (type === 'hash') everything.push(...((await reader.sendCommand(['HGETALL', key])) as string[]));
      else if (type === 'set')
        everything.push(...((await reader.sendCommand(['SMEMBERS', key])) as string[]));
      else if (type === 'string') everything.push(String(await reader.sendCommand(['GET', key])));
    }
    const dump = everything.join('\n');
    expect(dump).not.toContain(KEY_A);
    expect(dump).not.toContain(KEY_B);
  });

  it('keeps the earliest start of recording any instance stored, written before any call', async () => {
    const day = 86_400_000;
    const now = Date.now();
    const configs = { current: parseConfig([DEFAULTS]) };
    const logger = createLogger('silent');
    const ledgerStartedAt = async (startedAt: number) => {
      const connection = connect();
      await connection.whenReady(5_000);
      const ledger = createLedger({ store: createRedisLedgerStore(connection), configs, logger, startedAt });
      closers.push(() => ledger.close());
      await ledger.flush();
      return ledger;
    };
    const young = await ledgerStartedAt(now - day);
    expect((await young.report(now)).routes.map((route) => route.safe_to_sunset)).toEqual(
      ROUTE_IDS.map(() => false),
    );
    await ledgerStartedAt(now - 31 * day);
    await ledgerStartedAt(now - 2 * day);
    const report = await young.report(now);
    expect(report.routes.map((route) => [route.safe_to_sunset, route.recording_since])).toEqual(
      ROUTE_IDS.map(() => [true, new Date(now - 31 * day).toISOString()]),
    );
  });

  it('starts its record again when Redis comes back empty, rather than vouch for what Redis lost', async () => {
    const day = 86_400_000;
    const connection = connect();
    await connection.whenReady(5_000);
    const ledger = createLedger({
      store: createRedisLedgerStore(connection),
      configs: { current: parseConfig([DEFAULTS]) },
      logger: createLogger('silent'),
      startedAt: Date.now() - 40 * day,
    });
    closers.push(() => ledger.close());
    ledger.record(usageEvent({ fingerprint: '0123456789abcdef', at: Date.now() - 10 * day }));
    await ledger.flush();
    const safe = async () => (await ledger.report()).routes.map((route) => route.safe_to_sunset);
    expect(await safe()).toEqual([false, true, true, true, true]);

    // Restarted without persistence: the call of ten days ago is gone, and so is the record of quiet.
    await redis.stop();
    await redis.start();
    await connection.whenReady(5_000);
    await ledger.flush();
    expect(await safe()).toEqual(ROUTE_IDS.map(() => false));
  });

  it('refuses a damaged entry hash, naming it, instead of reporting it or leaving it out', async () => {
    const { ledger } = await shimOnRedis();
    const writer = connect();
    await writer.whenReady(5_000);
    const key = 'nango-shim:ledger:entry:connection-metadata:0123456789abcdef';
    const hash = {
      route: 'connection-metadata',
      consumer: '0123456789abcdef',
      fingerprint: '0123456789abcdef',
      first_seen: String(Date.now() - 1000),
      last_seen: String(Date.now()),
      last_user_agent: 'crm-sync/4.2',
      stage: 'translate',
      calls_2xx: '3',
    };
    const store = createRedisLedgerStore(writer);
    const damages: Array<[Record<string, string>, string]> = [
      [{ last_seen: 'yesterday' }, 'lastSeen is not a time in epoch milliseconds'],
      [{ first_seen: '' }, 'firstSeen is not a time in epoch milliseconds'],
      [{ calls_2xx: '2.5' }, 'calls.2xx is not a non-negative integer'],
      [{ calls_7xx: '1' }, 'calls.7xx is not a status class'],
      [{ fingerprint: 'fedcba9876543210' }, 'fingerprint must equal its consumer'],
    ];
    for (const [damage, problem] of damages) {
      await writer.sendCommand(['DEL', key]);
      await writer.sendCommand(['HSET', key, ...Object.entries({ ...hash, ...damage }).flat()]);
      await writer.sendCommand(['SADD', 'nango-shim:ledger:index', key]);
      await expect(store.read(), problem).rejects.toThrow(`${key} is not a ledger entry: ${problem}`);
      await expect(ledger.report()).rejects.toThrow(problem);
    }
    // A route this version does not know is another version's: left out, not an error.
    await writer.sendCommand(['DEL', key]);
    const future = 'nango-shim:ledger:entry:connection-put:0123456789abcdef';
    await writer.sendCommand([
      'HSET',
      future,
      ...Object.entries({ ...hash, route: 'connection-put' }).flat(),
    ]);
    await writer.sendCommand(['SADD', 'nango-shim:ledger:index', future]);
    expect((await store.read()).entries).toEqual([]);
  });

  it('keeps serving through a Redis outage and writes the buffered updates when Redis returns', async () => {
    const { shim, ledger } = await shimOnRedis({
      ledger: { flushIntervalMs: 100 },
      routes: { 'connection-metadata': { rateLimit: { windowMs: 60_000, limit: 1_000 } } },
    });
    for (let i = 0; i < 3; i += 1) expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);
    await ledger.flush();

    await redis.stop();
    const statuses: number[] = [];
    for (let i = 0; i < 10; i += 1)
      statuses.push((await patchLegacyMetadata(shim.url, KEY_A, 'during/1')).status);
    for (let i = 0; i < 5; i += 1)
      statuses.push((await patchLegacyMetadata(shim.url, KEY_B, 'during/2')).status);
    // A few flush intervals pass with Redis away.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(statuses).toEqual(new Array(15).fill(200));
    await redis.start();

    // The restarted Redis kept nothing (no persistence): what it holds is exactly what was buffered.
    const reader = connect();
    await reader.whenReady(5_000);
    const store = createRedisLedgerStore(reader);
    await expect
      .poll(
        async () =>
          (await store.read()).entries.map((entry) => [
            entry.consumer,
            entry.calls['2xx'],
            entry.lastUserAgent,
          ]),
        {
          timeout: 5_000,
        },
      )
      .toEqual(
        expect.arrayContaining([
          [fingerprintKey(KEY_A), 10, 'during/1'],
          [fingerprintKey(KEY_B), 5, 'during/2'],
        ]),
      );
    const messages = shim.logs().map((line) => line.msg);
    expect(messages).toContain('redis unavailable');
    expect(messages).toContain('redis available again');
    expect(messages).not.toContain('ledger updates dropped');
  });

  it('keeps its buffer while Redis hangs, answers 503 ledger_unavailable, and writes it once Redis resumes', async () => {
    const { shim, ledger } = await shimOnRedis({ ledger: { flushIntervalMs: 100 } });
    expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);
    await ledger.flush();
    const recordingSince = async () => (await ledger.report()).routes.map((route) => route.recording_since);
    const since = await recordingSince();
    const admin = createAdminApp({
      configs: shim.configs,
      logger: shim.logger,
      metrics: createMetrics({ configs: shim.configs }),
      ledger,
      isDraining: () => false,
    });

    redis.pause();
    try {
      for (let i = 0; i < 3; i += 1)
        expect((await patchLegacyMetadata(shim.url, KEY_A, 'during/1')).status).toBe(200);
      const started = performance.now();
      const answer = await within(
        5_000,
        'the report while Redis hangs',
        request(admin).get('/admin/deprecations'),
      );
      expect(performance.now() - started).toBeLessThan(3_000);
      expect(answer.status).toBe(503);
      expect(answer.body).toEqual({
        error: { code: 'ledger_unavailable', message: 'The usage ledger cannot be read right now.' },
      });
      expect((await patchLegacyMetadata(shim.url, KEY_B, 'during/2')).status).toBe(200);
    } finally {
      redis.resume();
    }

    const reader = connect();
    await reader.whenReady(5_000);
    const store = createRedisLedgerStore(reader);
    const stored = async () => new Map((await store.read()).entries.map((entry) => [entry.consumer, entry]));
    await expect
      .poll(async () => (await stored()).get(fingerprintKey(KEY_B)), { timeout: 5_000 })
      .toMatchObject({ calls: { '2xx': 1 }, lastUserAgent: 'during/2' });
    // At least once, never lost: the write cut off by the deadline sat in the frozen server's socket and ran
    // when it resumed, and the same delta, buffered again, was written once more.
    const first = (await stored()).get(fingerprintKey(KEY_A));
    expect(first?.lastUserAgent).toBe('during/1');
    expect(first?.calls['2xx']).toBeGreaterThanOrEqual(4);
    expect(first?.calls['2xx']).toBeLessThanOrEqual(7);
    // The same Redis, with its data, on a new connection: the record runs on from where it began.
    expect(await recordingSince()).toEqual(since);
    const messages = shim.logs().map((line) => line.msg);
    expect(messages.filter((msg) => msg === 'redis unavailable')).toHaveLength(1);
    expect(messages.filter((msg) => msg === 'ledger write failed')).toHaveLength(1);
    expect(messages).toContain('redis available again');
    expect(messages).not.toContain('ledger updates dropped');
  });

  it('closes within its 2 s deadline while Redis hangs, reporting what it could not write as lost', async () => {
    const { shim, ledger } = await shimOnRedis();
    // The default flush interval (5 s) is longer than this test: only close() tries to write.
    expect((await patchLegacyMetadata(shim.url, KEY_A)).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, KEY_B)).status).toBe(200);
    redis.pause();
    try {
      const started = performance.now();
      await within(5_000, 'ledger.close() while Redis hangs', ledger.close());
      expect(performance.now() - started).toBeLessThan(3_000);
    } finally {
      redis.resume();
    }
    expect(shim.logs().filter((line) => line.msg === 'ledger updates lost at shutdown')).toEqual([
      expect.objectContaining({ entries: 2 }),
    ]);
  });
});
