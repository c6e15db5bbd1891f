import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { createAccessLog } from './access-log.js';
import { sendLocalAnswer, sendLocalAnswerOnSocket } from './answer.js';
import { fingerprintOf } from './api-key.js';
import type { ActiveConfig, RouteConfig, RouteId } from './config.js';
import { chooseRoute, type RouteDecision } from './cutover.js';
import { DEPRECATION_HEADER_NAMES, deprecationHeaders } from './deprecation-headers.js';
import { errorAnswer, type LocalAnswer } from './errors.js';
import { CLIENT_CONNECTION_FIELDS, createForwarder, type Forwarder } from './forward.js';
import {
  type BodyToCheck,
  checkTranslation,
  readBodyToCheck,
  timeStreamedExchange,
  translate,
  upstreamFailureAnswer,
} from './migrate.js';
import { createMigrations, matchMigration } from './migrations/index.js';
import type { Migration } from './migrations/migration.js';
import { compileOperations, type OpenApiDocument } from './openapi.js';
import { originForm, pathOf } from './request-target.js';
import type { UpstreamFailure } from './upstream-failure.js';
import {
  settleValidation,
  type UsageAction,
  type UsageEvent,
  type UsageSink,
  type ValidationReport,
} from './usage.js';

/** Where the active configuration lives; a reload swaps `current` whole, never edits it. */
export interface ConfigHolder {
  current: ActiveConfig;
}

/** Optional observers of traffic (metrics); each hook costs nothing when absent. */
export interface TrafficObserver {
  /** A request no migration owns, once its answer is finished or the connection closed. */
  passThrough?(req: IncomingMessage, res: ServerResponse, durationMs: number): void;
  /** One upstream exchange on a deprecated route: the successor (translated) or the legacy route itself. */
  upstream?(routeId: RouteId, target: 'successor' | 'legacy', durationMs: number): void;
  /** A request sent once more on a new connection after the keep-alive race (forward.ts retryOnNewConnection). */
  retried?(): void;
}

/**
 * A rate limiter in front of a scope (a deprecated route id, or all pass-through traffic). It either answers
 * the request itself (429 over the budget; 503 when the budget cannot be checked, after calling
 * `unavailable`) or calls `proceed`. Absent scopes are not limited.
 */
export interface RequestLimiter {
  appliesTo(scope: RouteId | 'passthrough'): boolean;
  check(
    scope: RouteId | 'passthrough',
    req: IncomingMessage,
    res: ServerResponse,
    proceed: () => void,
    unavailable?: () => void,
  ): void;
}

export interface AppOptions {
  configs: ConfigHolder;
  logger: Logger;
  openapi: OpenApiDocument;
  usage: UsageSink[];
  observer?: TrafficObserver;
  limiter?: RequestLimiter;
  /** The certificates of `upstream.caFile`, as loadConfig read and checked them (readUpstreamCa). */
  upstreamCa?: string | undefined;
}

export interface App {
  /** The public listener's request handler. */
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  /** The public listener's `upgrade` handler: WebSockets pass through. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  readonly migrations: readonly Migration[];
  /** An answer the shim cuts itself (a shutdown past its grace period): its call counts as 'failed'. */
  markCut(res: ServerResponse): void;
  close(): void;
}

const INVALID_TARGET = errorAnswer('invalidRequestTarget', { message: 'The request target must be a path.' });
const UPGRADE_METHOD_NOT_ALLOWED = errorAnswer('methodNotAllowed', {
  message: 'Only a GET request can upgrade its connection, and only to a WebSocket.',
});
const UNSUPPORTED_UPGRADE = errorAnswer('unsupportedUpgrade', {
  message: 'A connection can only be upgraded to a WebSocket.',
});
/** RFC 9110 §15.5.6: a 405 names the methods that are allowed; an upgrade is accepted on a GET only. */
const ALLOW_GET = { allow: 'GET' } as const;

/**
 * The answer to an upgrade the shim will not tunnel, or undefined for a WebSocket handshake (a GET with
 * `Upgrade: websocket`, the very test http-proxy-3 applies before it drops anything else without a byte).
 * Nango is a node server whose `ws` WebSocketServer takes every upgrade and refuses the rest with an HTTP
 * error, never running the route: 405 for a method other than GET, then 400 for an Upgrade other than
 * websocket (ws's abortHandshake). The shim answers with the same statuses in Nango's error shape. An h2c
 * upgrade (`curl --http2` over cleartext) is such a request: RFC 9113 §3.1 deprecates that upgrade.
 */
function refuseUpgrade(req: IncomingMessage): LocalAnswer | undefined {
  if (req.method !== 'GET') return UPGRADE_METHOD_NOT_ALLOWED;
  if (req.headers.upgrade?.toLowerCase() !== 'websocket') return UNSUPPORTED_UPGRADE;
  return undefined;
}

/** Rewrites `req.url` to origin form; false when the target has none (the caller answers 400). */
function toOriginForm(req: IncomingMessage): boolean {
  const path = originForm(req.url ?? '/');
  if (path === undefined) return false;
  req.url = path;
  return true;
}

/**
 * The headers the shim sets on an answer before it forwards the call: the deprecation headers of a deprecated
 * route (applyDeprecationHeaders) and the rate limiter's draft-8 RateLimit and RateLimit-Policy (named here:
 * the limiter is handed in, and the app never loads express-rate-limit itself).
 */
const SET_BEFORE_FORWARDING: ReadonlySet<string> = new Set([
  ...DEPRECATION_HEADER_NAMES,
  'ratelimit',
  'ratelimit-policy',
]);

/**
 * Takes back the head of an upstream answer that failed before any of its body: http-proxy-3 copied its status
 * and headers onto the response, which node:http sends only with the first byte of the body. The shim's own
 * 502/504 replaced just its status, type and length, and went out as `502 OK` with the upstream's
 * Content-Encoding (a client then fails to decode the JSON error), Set-Cookie, ETag and caching headers.
 */
function forgetUpstreamHead(res: ServerResponse): void {
  for (const name of res.getHeaderNames()) {
    // Connection and Keep-Alive are the shim's own, set from the client's connection (forward.ts
    // setAnswerConnection): node:http writes neither of its own once Connection has been removed.
    if (!SET_BEFORE_FORWARDING.has(name) && !CLIENT_CONNECTION_FIELDS.has(name)) res.removeHeader(name);
  }
  // Removing Date turns node:http's own off: the shim's answer gets the time it is written.
  res.sendDate = true;
  // node:http then writes the status's standard reason phrase.
  res.statusMessage = '';
}

function applyDeprecationHeaders(res: ServerResponse, route: RouteConfig): void {
  const headers = deprecationHeaders(route);
  for (const name of DEPRECATION_HEADER_NAMES) res.setHeader(name, headers[name]);
}

/**
 * RFC 9111 §4.2.2: a 410 is heuristically cacheable. A CDN or client cache could keep answering 410 after a
 * brownout window ended or a config rollback took the route out of `gone`: the shim's 410 is never stored.
 */
const GONE_HEADERS: OutgoingHttpHeaders = { 'cache-control': 'no-store' };

function goneAnswer(migration: Migration, method: string) {
  return errorAnswer('gone', {
    message: `This endpoint has been removed. Use ${method} ${migration.successor} instead.`,
  });
}

/**
 * Assembles the public side: a request no migration owns goes straight to http-proxy-3 (no router, no body
 * parser, no per-request allocation of ours); a deprecated call is decided by its route's stage, carries the
 * deprecation headers whatever its answer, and is recorded.
 */
export function createApp({
  configs,
  logger,
  openapi,
  usage,
  observer,
  limiter,
  upstreamCa,
}: AppOptions): App {
  const migrations = createMigrations({ operations: compileOperations(openapi) });
  // Answers the upstream cut after their head was sent, or a shutdown cut past its grace period, for the
  // usage line to count them 'failed' rather than 'client-closed'. Touched only when an answer is cut: a
  // property on the response instead would give node:http's responses a second hidden class (see passThrough).
  const cutAnswers = new WeakSet<ServerResponse>();

  function onPassThroughError(
    failure: UpstreamFailure,
    error: Error,
    req: IncomingMessage,
    res: ServerResponse | Duplex,
  ) {
    logger.warn(
      { method: req.method, path: pathOf(req.url ?? '/'), failure, reason: error.message },
      'upstream request failed',
    );
    if ('writeHead' in res) {
      // Mid-answer, sendLocalAnswer destroys the client's connection: a framed answer cannot end early.
      if (res.headersSent) cutAnswers.add(res);
      else forgetUpstreamHead(res);
      sendLocalAnswer(res, upstreamFailureAnswer(failure));
    } else sendLocalAnswerOnSocket(res, upstreamFailureAnswer(failure));
  }

  /**
   * The client gets its answer, but the upstream broke a connection the shim believed open: a warning, as an
   * operator should hear of it when it recurs (a load balancer that closes idle connections before the shim
   * lets go of them). One line per lost pooled connection at most: a retry is never retried.
   */
  function onPassThroughRetry(error: Error, req: IncomingMessage) {
    logger.warn(
      { method: req.method, path: pathOf(req.url ?? '/'), reason: error.message },
      'upstream request retried',
    );
    observer?.retried?.();
  }

  const forwarder: Forwarder = createForwarder(
    configs.current.config,
    onPassThroughError,
    onPassThroughRetry,
    upstreamCa,
  );

  const observePassThrough = observer?.passThrough;
  const logAccess = createAccessLog(logger);

  function passThrough(req: IncomingMessage, res: ServerResponse): void {
    if (configs.current.config.log.passthrough) logAccess(req, res);
    if (observePassThrough) {
      // A closure, not a property on the response: adding one would give node:http's responses a second
      // hidden class and make every site that touches them polymorphic. `on`, not `once`: a response closes
      // once, and `once` allocates a wrapper per call.
      const started = performance.now();
      res.on('close', () => observePassThrough(req, res, performance.now() - started));
    }
    forwarder.web(req, res);
  }

  function recordOnClose(
    req: IncomingMessage,
    res: ServerResponse,
    migration: Migration,
    route: RouteConfig,
    fingerprint: string | undefined,
    outcome: { action: UsageAction; validation?: ValidationReport },
  ): void {
    const started = performance.now();
    // Read now: a streamed translation rewrites req.url and req.method to the successor's.
    const method = req.method ?? 'GET';
    const path = pathOf(req.url ?? '/');
    res.on('close', () => {
      // An answer that did not reach the client whole is no success of the status its head named: status 0,
      // and 'failed' when the upstream cut it, 'client-closed' when the client left (before or during it).
      const answered = res.writableFinished;
      const event: UsageEvent = {
        routeId: migration.routeId,
        method,
        path,
        fingerprint,
        userAgent: req.headers['user-agent'],
        status: answered ? res.statusCode : 0,
        durationMs: Math.round((performance.now() - started) * 1000) / 1000,
        stage: route.stage,
        action: answered ? outcome.action : cutAnswers.has(res) ? 'failed' : 'client-closed',
        at: Date.now(),
      };
      if (outcome.validation && answered) {
        event.validation = settleValidation(outcome.validation, res.statusCode);
        if (!event.validation.agrees) {
          logger.warn(
            { route: migration.routeId, fingerprint: fingerprint ?? null, ...event.validation },
            'translation would answer differently',
          );
        }
      }
      for (const sink of usage) sink.record(event);
    });
  }

  async function perform(
    req: IncomingMessage,
    res: ServerResponse,
    migration: Migration,
    params: Record<string, string>,
    decision: RouteDecision,
    bodyLimitBytes: number,
    outcome: { action: UsageAction; validation?: ValidationReport },
  ): Promise<void> {
    if (decision.action === 'gone') {
      outcome.action = 'gone';
      sendLocalAnswer(res, goneAnswer(migration, req.method ?? 'GET'), GONE_HEADERS);
      return;
    }
    if (decision.action === 'translate') {
      outcome.action = await translate(req, res, migration, params, {
        forwarder,
        bodyLimitBytes,
        onUpstream: observer?.upstream,
        onFailure: (failure, reason) =>
          logger.warn(
            { route: migration.routeId, method: req.method, failure, reason },
            'upstream request failed',
          ),
      });
      return;
    }
    outcome.action = 'passed-through';
    let body: BodyToCheck | null = null;
    if (decision.validate) {
      // The validate stage reads the body to check it, then forwards the very same bytes.
      if (migration.readsBody) {
        const read = await readBodyToCheck(req, res, bodyLimitBytes);
        if (read === undefined) {
          outcome.action = 'rejected';
          return;
        }
        body = read;
      }
      outcome.validation = checkTranslation(migration, req, params, body, bodyLimitBytes);
    }
    timeStreamedExchange(res, migration.routeId, 'legacy', observer?.upstream);
    forwarder.web(req, res, body === null ? undefined : body.kind === 'read' ? body.bytes : body.stream);
  }

  function handleOwned(
    req: IncomingMessage,
    res: ServerResponse,
    migration: Migration,
    params: Record<string, string>,
  ): void {
    // A request finishes under the configuration it started with, whatever a reload does meanwhile.
    const { config } = configs.current;
    const route = config.routes[migration.routeId];
    const fingerprint = fingerprintOf(req.headers.authorization);
    const decision = chooseRoute(route, fingerprint, Date.now());
    const limited = limiter?.appliesTo(migration.routeId) ?? false;
    const outcome: { action: UsageAction; validation?: ValidationReport } = {
      action: limited ? 'rate-limited' : 'passed-through',
    };
    recordOnClose(req, res, migration, route, fingerprint, outcome);
    // RFC 9745 §2 / RFC 8594 §3: every answer of a deprecated route says so, errors and 429s included.
    applyDeprecationHeaders(res, route);
    const run = () => {
      // The body limit is reloadable: each request keeps the one of the config it started under.
      perform(req, res, migration, params, decision, config.server.bodyLimitBytes, outcome).catch(
        (error: unknown) => {
          outcome.action = 'failed';
          logger.error({ err: error, route: migration.routeId }, 'migration failed');
          sendLocalAnswer(
            res,
            errorAnswer('internal', { message: 'The shim failed to handle this request.' }),
          );
        },
      );
    };
    if (limited && limiter) {
      // A budget that cannot be checked is no budget spent: the 503 counts as failed, not rate-limited.
      limiter.check(migration.routeId, req, res, run, () => {
        outcome.action = 'failed';
      });
    } else run();
  }

  function dispatch(req: IncomingMessage, res: ServerResponse): void {
    const target = req.url ?? '/';
    if (target.charCodeAt(0) !== 47 && !toOriginForm(req)) {
      sendLocalAnswer(res, INVALID_TARGET);
      return;
    }
    const found = matchMigration(migrations, req.method ?? 'GET', pathOf(req.url ?? '/'));
    if (found) {
      handleOwned(req, res, found.migration, found.params);
      return;
    }
    if (limiter?.appliesTo('passthrough'))
      limiter.check('passthrough', req, res, () => passThrough(req, res));
    else passThrough(req, res);
  }

  /** The refusal on the raw socket; on a deprecated route it carries the deprecation headers, as every answer. */
  function refuseUpgradeOnSocket(req: IncomingMessage, socket: Duplex, refusal: LocalAnswer): void {
    const found = matchMigration(migrations, req.method ?? 'GET', pathOf(req.url ?? '/'));
    const headers: Record<string, string> = refusal === UPGRADE_METHOD_NOT_ALLOWED ? { ...ALLOW_GET } : {};
    if (found)
      Object.assign(headers, deprecationHeaders(configs.current.config.routes[found.migration.routeId]));
    sendLocalAnswerOnSocket(socket, refusal, headers);
  }

  return {
    migrations,
    handleRequest: dispatch,
    handleUpgrade(req, socket, head) {
      if (!toOriginForm(req)) {
        sendLocalAnswerOnSocket(socket, INVALID_TARGET);
        return;
      }
      const refusal = refuseUpgrade(req);
      if (refusal) {
        refuseUpgradeOnSocket(req, socket, refusal);
        return;
      }
      forwarder.ws(req, socket, head);
    },
    markCut(res) {
      cutAnswers.add(res);
    },
    close() {
      forwarder.close();
    },
  };
}
