import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { createClient, type RedisClientOptions } from 'redis';

/** A command that gets no answer in this time fails, so a hung Redis never holds a request (or a shutdown). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 2_000;
const MAX_RECONNECT_DELAY_MS = 1_000;

/**
 * The shim's one Redis connection, as the raw commands its users need (rate-limit-redis takes exactly this
 * shape). Only this module imports the Redis client.
 */
export interface RedisConnection {
  /**
   * Sends one command. While Redis is unreachable it rejects at once (no offline queue): callers buffer or
   * fail open instead of waiting. Without an answer within `timeoutMs` it rejects then, and the connection is
   * replaced.
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

type Client = ReturnType<typeof createClient>;

/**
 * Connects in the background: the shim serves whether or not Redis is there.
 *
 * Every command has a deadline that holds until its answer arrives. node-redis's own `timeout` option stops
 * once the command is written to the socket, so a Redis that accepts the bytes and never answers (a frozen
 * process, a network path lost without a reset) would hold each command, and every one queued behind it, for
 * as long as the TCP connection lives: minutes to forever.
 */
export function createRedisConnection({
  url,
  logger,
  reconnect = true,
}: RedisConnectionOptions): RedisConnection {
  const base = redisClientOptions(url);
  const options = {
    ...base,
    disableOfflineQueue: true,
    socket: {
      ...base.socket,
      connectTimeout: DEFAULT_COMMAND_TIMEOUT_MS,
      reconnectStrategy: reconnect ? reconnectDelay : false,
    },
  } as RedisClientOptions;
  const listeners: Array<() => void> = [];
  // `ready` and `failed` of whichever client is the current one, for `whenReady`.
  const events = new EventEmitter();
  // Commands sent and not yet answered or timed out, for close(). A count, not a Set of promises: a Set
  // churned at command rate keeps finished entries alive through young-generation GCs (live-list.ts).
  let pending = 0;
  let onDrained: (() => void) | undefined;
  let unavailable = false;
  let closed = false;

  // One line per outage, not one per reconnect attempt or per failed command.
  function reportUnavailable(reason: string): void {
    if (unavailable) return;
    unavailable = true;
    logger.warn({ reason }, 'redis unavailable');
  }

  function open(): Client {
    const fresh = createClient(options) as Client;
    // node-redis throws when nobody listens to `error`, so a replaced client keeps this listener.
    fresh.on('error', (error: Error) => {
      if (fresh !== client) return;
      reportUnavailable(error.message);
      events.emit('failed', error);
    });
    fresh.on('ready', () => {
      if (fresh !== client) return;
      if (unavailable) logger.info('redis available again');
      unavailable = false;
      events.emit('ready');
      for (const listener of listeners) listener();
    });
    fresh.connect().catch(() => {
      // Reported through the `error` event; with `reconnect` the client keeps trying on its own.
    });
    return fresh;
  }

  let client = open();

  /**
   * A command sent on `stalled` got no answer in time: the connection is dropped and a new one opened, as
   * redis-py does on a socket timeout, rather than kept while the late answers are awaited. Destroying it
   * rejects everything queued on it at once, so however long Redis hangs nothing piles up in memory; the new
   * client is not ready until Redis answers its handshake (CLIENT SETINFO), and until then every command is
   * refused at once (no offline queue), so callers fail open or buffer without waiting. A new connection also
   * finds a primary that failed over behind the same address, where the old one would wait for TCP to give up.
   * The price of an answer that was only slow: a reconnect, and a ledger delta written again (at least once).
   */
  function replace(stalled: Client, timeoutMs: number): void {
    if (stalled !== client) return;
    reportUnavailable(`no answer in ${timeoutMs} ms`);
    if (reconnect && !closed) client = open();
    if (stalled.isOpen) stalled.destroy();
  }

  return {
    sendCommand(args, timeoutMs = DEFAULT_COMMAND_TIMEOUT_MS) {
      if (closed) return Promise.reject(new Error('redis connection closed'));
      const sentOn = client;
      pending += 1;
      return new Promise<unknown>((resolve, reject) => {
        let open = true;
        // The first of the answer, its error and the deadline settles the command; the others are late.
        const settle = (): boolean => {
          if (!open) return false;
          open = false;
          clearTimeout(timer);
          pending -= 1;
          if (pending === 0) onDrained?.();
          return true;
        };
        const timer = setTimeout(() => {
          if (!settle()) return;
          reject(new Error(`redis gave no answer in ${timeoutMs} ms`));
          replace(sentOn, timeoutMs);
        }, timeoutMs);
        sentOn.sendCommand(args).then(
          (reply) => {
            if (settle()) resolve(reply);
          },
          (error: unknown) => {
            if (settle()) reject(error);
          },
        );
      });
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
          events.off('ready', onReady);
          events.off('failed', onFailed);
          if (error) reject(error);
          else resolve();
        };
        const onReady = () => settle();
        // Without reconnection the first failure is final: say so at once.
        const onFailed = (error: Error) => {
          if (!reconnect) settle(new Error(`redis is not reachable (${error.message})`));
        };
        const timer = setTimeout(() => settle(new Error('redis is not reachable')), timeoutMs);
        timer.unref();
        events.on('ready', onReady);
        events.on('failed', onFailed);
      });
    },
    async close() {
      closed = true;
      // A clean close waits for the answers still due; each comes within its deadline or the connection is
      // dropped (and not reopened), so a hung Redis holds the shutdown no longer than one deadline.
      if (pending > 0) {
        await new Promise<void>((resolve) => {
          onDrained = resolve;
        });
      }
      if (client.isReady) await client.close();
      else if (client.isOpen) client.destroy();
    },
  };
}
