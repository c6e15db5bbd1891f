import type { Logger } from 'pino';
import { createClient, type RedisClientOptions } from 'redis';

/** A command that gets no answer in this time fails, so a hung Redis never holds a request. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 2_000;
const MAX_RECONNECT_DELAY_MS = 1_000;

/**
 * The shim's one Redis connection, as the raw commands its users need (rate-limit-redis takes exactly this
 * shape). Only this module imports the Redis client.
 */
export interface RedisConnection {
  /**
   * Sends one command. While Redis is unreachable it rejects at once (no offline queue): callers buffer or
   * fail open instead of waiting.
   */
  sendCommand(args: string[], timeoutMs?: number): Promise<unknown>;
  readonly ready: boolean;
  /** Called every time the connection becomes usable: the first connect and each reconnect. */
  onReady(listener: () => void): void;
  /** Resolves once connected; rejects after `timeoutMs` (for one-shot commands such as the report). */
  whenReady(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface RedisConnectionOptions {
  url: string;
  logger: Logger;
  /** Keep reconnecting forever (the server) or give up after the first failure (a one-shot command). */
  reconnect?: boolean;
}

/**
 * Client options for a Redis URL: `redis://` and `rediss://` as the client reads them, plus a local socket as
 * `unix:///path/to/redis.sock` (also `redis+unix://`), with `?password=…&username=…&db=…` as redis-py reads it.
 */
export function redisClientOptions(url: string): RedisClientOptions {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // The configuration refuses such a URL first; were one to get here, `new URL()`'s own error carries it,
    // password and all, as `input`, and Node prints that on a crash.
    throw new TypeError('the Redis URL is not a valid URL');
  }
  if (parsed.protocol !== 'unix:' && parsed.protocol !== 'redis+unix:') return { url };
  const options: RedisClientOptions = { socket: { path: decodeURIComponent(parsed.pathname), tls: false } };
  const { searchParams } = parsed;
  const username = searchParams.get('username');
  const password = searchParams.get('password');
  const database = searchParams.get('db');
  if (username !== null) options.username = username;
  if (password !== null) options.password = password;
  if (database !== null) options.database = Number(database);
  return options;
}

function reconnectDelay(retries: number): number {
  return Math.min(50 * 2 ** retries, MAX_RECONNECT_DELAY_MS);
}

/** Connects in the background: the shim serves whether or not Redis is there. */
export function createRedisConnection({
  url,
  logger,
  reconnect = true,
}: RedisConnectionOptions): RedisConnection {
  const base = redisClientOptions(url);
  const client = createClient({
    ...base,
    disableOfflineQueue: true,
    socket: {
      ...base.socket,
      connectTimeout: DEFAULT_COMMAND_TIMEOUT_MS,
      reconnectStrategy: reconnect ? reconnectDelay : false,
    },
  } as RedisClientOptions);
  const listeners: Array<() => void> = [];
  let unavailable = false;

  // node-redis throws when nobody listens to `error`; one line per outage, not one per reconnect attempt.
  client.on('error', (error: Error) => {
    if (unavailable) return;
    unavailable = true;
    logger.warn({ reason: error.message }, 'redis unavailable');
  });
  client.on('ready', () => {
    if (unavailable) logger.info('redis available again');
    unavailable = false;
    for (const listener of listeners) listener();
  });
  client.connect().catch(() => {
    // Reported through the `error` event; with `reconnect` the client keeps trying on its own.
  });

  return {
    sendCommand(args, timeoutMs = DEFAULT_COMMAND_TIMEOUT_MS) {
      return client.sendCommand(args, { timeout: timeoutMs });
    },
    get ready() {
      return client.isReady;
    },
    onReady(listener) {
      listeners.push(listener);
    },
    whenReady(timeoutMs) {
      if (client.isReady) return Promise.resolve();
      if (!reconnect && !client.isOpen) return Promise.reject(new Error('redis is not reachable'));
      return new Promise((resolve, reject) => {
        const settle = (error?: Error) => {
          clearTimeout(timer);
          client.off('ready', onReady);
          client.off('error', onError);
          if (error) reject(error);
          else resolve();
        };
        const onReady = () => settle();
        // Without reconnection the first failure is final: say so at once.
        const onError = (error: Error) => {
          if (!reconnect) settle(new Error(`redis is not reachable (${error.message})`));
        };
        const timer = setTimeout(() => settle(new Error('redis is not reachable')), timeoutMs);
        timer.unref();
        client.on('ready', onReady);
        client.on('error', onError);
      });
    },
    async close() {
      // A clean close waits for the answers still due; without a connection there are none to wait for.
      if (client.isReady) await client.close();
      else if (client.isOpen) client.destroy();
    },
  };
}
