import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { redisClientOptions } from '../src/redis.js';
import { DEFAULTS } from './support/shim.js';

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
