import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ipKeyGenerator, type Logger as LimiterLogger, MemoryStore, rateLimit } from 'express-rate-limit';
import type { Logger } from 'pino';
import { type RedisReply, RedisStore } from 'rate-limit-redis';
import { sendLocalAnswer } from './answer.js';
import { fingerprintOf } from './api-key.js';
import type { ConfigHolder, RequestLimiter } from './app.js';
import { type ActiveConfig, type Config, type RateLimitRule, ROUTE_IDS, type RouteId } from './config.js';
import { errorAnswer, tooManyRequestsAnswer } from './errors.js';
import type { RedisConnection } from './redis.js';
import { pathOf } from './request-target.js';

export type LimitScope = RouteId | 'passthrough';

export const RATE_LIMIT_KEY_PREFIX = 'nango-shim:rl:';
/** A budget check waits this long for Redis at most before the store counts as failed. */
const REDIS_TIMEOUT_MS = 1_000;
/** While a store keeps failing, one log line per this period (with how many were left out). */
const STORE_ERROR_LOG_INTERVAL_MS = 10_000;

type Next = (error?: unknown) => void;
type Middleware = (req: IncomingMessage, res: ServerResponse, next: Next) => Promise<void>;

interface ScopedLimiter {
  rule: RateLimitRule;
  failOpen: boolean;
  middleware: Middleware;
  logFailure(error: unknown): void;
  shutdown(): void;
}

export interface RateLimiter extends RequestLimiter {
  /** Stops the memory stores' timers. */
  close(): void;
}

export interface RateLimiterOptions {
  configs: ConfigHolder;
  logger: Logger;
  /** Present: one budget shared by every instance on this Redis. Absent: a memory store per instance. */
  redis?: RedisConnection;
}

/** Which scopes have a limit: the routes whose `rateLimit` is set, and pass-through traffic. Pure. */
export function limitRules(config: Config): Map<LimitScope, RateLimitRule> {
  const rules = new Map<LimitScope, RateLimitRule>();
  for (const id of ROUTE_IDS) {
    const rule = config.routes[id].rateLimit;
    if (rule !== null) rules.set(id, rule);
  }
  if (config.rateLimit.passthrough !== null) rules.set('passthrough', config.rateLimit.passthrough);
  return rules;
}

/** One budget per API key (by fingerprint: the key itself is never a store key); keyless callers by IP. */
function keyOf(req: IncomingMessage): string {
  const fingerprint = fingerprintOf(req.headers.authorization);
  if (fingerprint !== undefined) return `key:${fingerprint}`;
  // ipKeyGenerator folds an IPv6 client into its /56, so a host cannot dodge the limit by rotating addresses.
  return `ip:${ipKeyGenerator(req.socket.remoteAddress ?? '')}`;
}

/** express-rate-limit's draft-8 headers use Express's `res.append`; a plain node response has `appendHeader`. */
function append(this: ServerResponse, name: string, value: string | string[]): ServerResponse {
  return this.appendHeader(name, value);
}

/**
 * rate-limit-redis loads its scripts once, when the limiter is built: if Redis is down then, the failed
 * SCRIPT LOAD would fail every later call. Redis answers SCRIPT LOAD with the script's SHA1, so answer it
 * here instead; the first EVALSHA then gets NOSCRIPT and the store loads the script for real.
 */
function redisSender(redis: RedisConnection) {
  return async function sendCommand(...args: string[]): Promise<RedisReply> {
    try {
      return (await redis.sendCommand(args, REDIS_TIMEOUT_MS)) as RedisReply;
    } catch (error) {
      if (args[0] === 'SCRIPT' && args[1] === 'LOAD' && args[2] !== undefined) {
        return createHash('sha1').update(args[2]).digest('hex');
      }
      throw error;
    }
  };
}

/**
 * Per-key rate limits in front of deprecated routes and pass-through traffic, with express-rate-limit driven
 * by plain node requests: our own key generator (no `req.ip`), our own 429 in Nango's shape, and `append`
 * lent to the response. A scope without a rule costs one map lookup. Rules follow config reloads; a changed
 * rule starts with a fresh budget on the memory store.
 */
export function createRateLimiter({ configs, logger, redis }: RateLimiterOptions): RateLimiter {
  let builtFor: ActiveConfig | undefined;
  let limiters = new Map<LimitScope, ScopedLimiter>();

  function storeLogger(scope: LimitScope, failOpen: boolean) {
    let lastLoggedAt = Number.NEGATIVE_INFINITY;
    let suppressed = 0;
    return function logStoreFailure(error: unknown): void {
      const code = (error as { code?: unknown }).code;
      const reason = error instanceof Error ? error.message : String(error);
      if (typeof code === 'string' && code.startsWith('ERR_ERL_')) {
        logger.error({ scope, code, reason }, 'rate limiter misconfigured');
        return;
      }
      const now = Date.now();
      if (now - lastLoggedAt < STORE_ERROR_LOG_INTERVAL_MS) {
        suppressed += 1;
        return;
      }
      logger.warn(
        { scope, reason, failOpen, suppressed },
        failOpen ? 'rate limit store failed, request allowed' : 'rate limit store failed, request refused',
      );
      lastLoggedAt = now;
      suppressed = 0;
    };
  }

  function build(scope: LimitScope, rule: RateLimitRule, failOpen: boolean): ScopedLimiter {
    const logFailure = storeLogger(scope, failOpen);
    const limiterLogger: LimiterLogger = { warn: logFailure, error: logFailure };
    const store = redis
      ? new RedisStore({ sendCommand: redisSender(redis), prefix: `${RATE_LIMIT_KEY_PREFIX}${scope}:` })
      : new MemoryStore();
    const windowSeconds = Math.ceil(rule.windowMs / 1000);
    // Whose budget ran out, as keyOf counts it: the key's, or the client address's for a call without one.
    const budget = `at most ${rule.limit} per ${windowSeconds} s`;
    const retry = 'Retry after the number of seconds in Retry-After.';
    const keyMessage = `Too many requests: ${budget} for this API key. ${retry}`;
    const addressMessage = `Too many requests: ${budget} for this client address. ${retry}`;
    const middleware = rateLimit({
      windowMs: rule.windowMs,
      limit: rule.limit,
      // RateLimit and RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers-08), plus Retry-After on a 429.
      standardHeaders: 'draft-8',
      legacyHeaders: false,
      identifier: scope,
      keyGenerator: keyOf,
      handler(req, res) {
        const message = fingerprintOf(req.headers.authorization) === undefined ? addressMessage : keyMessage;
        sendLocalAnswer(res, tooManyRequestsAnswer(req.method, pathOf(req.url ?? '/'), message));
      },
      passOnStoreError: failOpen,
      logger: limiterLogger,
      store,
    }) as unknown as Middleware;
    return {
      rule,
      failOpen,
      middleware,
      logFailure,
      shutdown() {
        // The memory store runs a timer; Redis keys expire by themselves.
        if (store instanceof MemoryStore) store.shutdown();
      },
    };
  }

  function current(): Map<LimitScope, ScopedLimiter> {
    const active = configs.current;
    if (active === builtFor) return limiters;
    const next = new Map<LimitScope, ScopedLimiter>();
    const { failOpen } = active.config.rateLimit;
    for (const [scope, rule] of limitRules(active.config)) {
      const existing = limiters.get(scope);
      // failOpen decides only what a failing Redis store does: the in-memory store cannot fail, and building
      // it again for that would hand every caller a fresh budget.
      const same =
        existing?.rule.limit === rule.limit &&
        existing.rule.windowMs === rule.windowMs &&
        (redis === undefined || existing.failOpen === failOpen);
      if (existing && same) {
        next.set(scope, existing);
      } else {
        existing?.shutdown();
        next.set(scope, build(scope, rule, failOpen));
      }
    }
    for (const [scope, limiter] of limiters) if (!next.has(scope)) limiter.shutdown();
    limiters = next;
    builtFor = active;
    return limiters;
  }

  current();

  return {
    appliesTo(scope) {
      return current().has(scope);
    },
    check(scope, req, res, proceed, unavailable = () => {}) {
      const limiter = current().get(scope);
      if (!limiter) {
        proceed();
        return;
      }
      (res as ServerResponse & { append?: typeof append }).append = append;
      let settled = false;
      void limiter.middleware(req, res, function afterLimit(error?: unknown) {
        if (settled) return;
        settled = true;
        if (error === undefined) {
          proceed();
          return;
        }
        // Only without failOpen: the budget cannot be checked, so the request is refused, not let through.
        limiter.logFailure(error);
        unavailable();
        sendLocalAnswer(
          res,
          errorAnswer('rateLimitUnavailable', {
            message: 'The rate limit cannot be checked right now. Retry shortly.',
          }),
        );
      });
    },
    close() {
      for (const limiter of limiters.values()) limiter.shutdown();
      limiters = new Map();
    },
  };
}
