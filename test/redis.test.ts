import { PassThrough } from 'node:stream';
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { createRedisConnection, type RedisConnection, redisClientOptions } from '../src/redis.js';
import { HAS_REDIS_SERVER, startTestRedis, type TestRedis } from './support/redis-server.js';
import { DEFAULTS } from './support/shim.js';
import { within } from './support/upstream.js';

describe('redisClientOptions', () => {
  it('hands redis:// and rediss:// URLs to the client as they are', () => {
    expect(redisClientOptions('redis://:secret@redis.internal:6379/2')).toEqual({
      url: 'redis://:secret@redis.internal:6379/2',
    });
    expect(redisClientOptions('rediss://redis.internal')).toEqual({ url: 'rediss://redis.internal' });
  });

  it('reads a unix socket URL, with its password and database', () => {
    expect(redisClientOptions('unix:///run/redis/redis.sock')).toEqual({
      socket: { path: '/run/redis/redis.sock', tls: false },
    });
    expect(redisClientOptions('unix:///run/redis/redis.sock?password=s%40cret&db=3')).toEqual({
      socket: { path: '/run/redis/redis.sock', tls: false },
      password: 's@cret',
      database: 3,
    });
  });

  // `new URL()`'s own error carries its input, which Node prints with the error on a crash.
  it('throws an error that does not carry the URL when it does not parse', () => {
    let thrown: unknown;
    try {
      redisClientOptions('redis://:hunter2/pw@redis.internal:6379');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(TypeError);
    expect(inspect(thrown)).not.toContain('hunter2');
  });

  it('is accepted by the configuration in every form', () => {
    for (const url of [
      'redis://localhost:6379',
      'rediss://r.example',
      'unix:///tmp/r.sock',
      'redis+unix:///tmp/r.sock',
    ]) {
      expect(parseConfig([DEFAULTS], { SHIM_REDIS_URL: url }).config.redisUrl).toBe(url);
    }
    expect(() => parseConfig([DEFAULTS], { SHIM_REDIS_URL: 'http://localhost:6379' })).toThrow(/redisUrl/);
  });
});

describe.skipIf(!HAS_REDIS_SERVER)('a Redis that stops answering', () => {
  let redis: TestRedis;
  let connection: RedisConnection | undefined;

  beforeEach(async () => {
    redis = await startTestRedis();
  });
  afterEach(async () => {
    redis.resume();
    await connection?.close();
    connection = undefined;
    await redis.close();
  });

  /** A connection to the test Redis, once ready, and the messages it logs. */
  async function connect(): Promise<{ connection: RedisConnection; messages: () => unknown[] }> {
    const stream = new PassThrough();
    let text = '';
    stream.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
    });
    connection = createRedisConnection({ url: redis.url, logger: createLogger('debug', stream) });
    await connection.whenReady(5_000);
    const messages = () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((line) => (JSON.parse(line) as { msg: unknown }).msg);
    return { connection, messages };
  }

  it('fails an unanswered command at its deadline, fails the next ones at once, and recovers on resume', async () => {
    const { connection, messages } = await connect();
    redis.pause();
    const started = performance.now();
    await expect(
      within(2_000, 'a command to a hung Redis', connection.sendCommand(['PING'], 200)),
    ).rejects.toThrow('redis gave no answer in 200 ms');
    expect(performance.now() - started).toBeLessThan(1_000);

    // Nothing piles up behind the unanswered command: while Redis hangs, commands are refused, not queued.
    expect(connection.ready).toBe(false);
    const burst = performance.now();
    const outcomes = await Promise.allSettled(
      Array.from({ length: 1_000 }, () => connection.sendCommand(['PING'], 200)),
    );
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toEqual([]);
    expect(performance.now() - burst).toBeLessThan(150);

    redis.resume();
    await connection.whenReady(5_000);
    expect(await connection.sendCommand(['PING'])).toBe('PONG');
    expect(messages().filter((msg) => msg === 'redis unavailable')).toHaveLength(1);
    expect(messages()).toContain('redis available again');
  });

  it("closes while Redis hangs with a command in flight, within that command's deadline", async () => {
    const { connection } = await connect();
    redis.pause();
    const inFlight = connection.sendCommand(['PING'], 300).then(
      () => 'answered',
      (error: Error) => error.message,
    );
    const started = performance.now();
    await within(2_000, 'close() of a connection to a hung Redis', connection.close());
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(await inFlight).toBe('redis gave no answer in 300 ms');
  });
});
