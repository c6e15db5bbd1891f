import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { sendLocalAnswer } from './answer.js';
import type { ConfigHolder } from './app.js';
import { redactConfig } from './config.js';
import { errorAnswer } from './errors.js';
import type { Ledger } from './ledger.js';
import type { Metrics } from './metrics.js';

export interface AdminOptions {
  configs: ConfigHolder;
  logger: Logger;
  metrics: Pick<Metrics, 'contentType' | 'render'>;
  ledger: Pick<Ledger, 'report'>;
  /** True once shutdown has begun: readiness fails so load balancers stop sending traffic. */
  isDraining: () => boolean;
}

/** Every admin path answers GET, and so HEAD (Express answers a HEAD with its GET route). */
const ALLOW_GET = { allow: 'GET, HEAD' } as const;

/**
 * RFC 9110 §15.5.6: a path the admin side serves, asked with another method, is a 405 naming the methods
 * it takes, not a 404 saying there is nothing there (`POST /admin/config` to reload, say).
 */
function methodNotAllowed(req: Request, res: Response): void {
  sendLocalAnswer(
    res,
    errorAnswer('methodNotAllowed', { message: `${req.path} answers GET and HEAD only, not ${req.method}.` }),
    ALLOW_GET,
  );
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/**
 * Whether an Authorization header carries the admin token. Both sides are hashed first so the comparison
 * is constant-time whatever the lengths (timingSafeEqual needs equal lengths). RFC 7235 §2.1: the scheme
 * is case-insensitive.
 */
export function carriesToken(authorization: string | undefined, token: string): boolean {
  const match = /^bearer +(\S+) *$/i.exec(authorization ?? '');
  return timingSafeEqual(digest(match?.[1] ?? ''), digest(token)) && match !== null;
}

/**
 * Whether a listener bound to this address can be reached from other hosts: anything but a loopback address
 * (127.0.0.0/8, ::1, and 127.x written as an IPv4-mapped IPv6 address). Without a token such an admin port
 * shows the ledger and the configuration to the network, which start-up then warns about.
 */
export function reachableFromOtherHosts(address: string): boolean {
  const ipv4 = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  return !(ipv4.startsWith('127.') || address === '::1');
}

/**
 * The admin side, on its own listener (main.ts): health checks for the orchestrator, Prometheus metrics,
 * the deprecation ledger and the active configuration. The token (`admin.token`) is read once: changing
 * it needs a restart, like the admin listener itself.
 */
export function createAdminApp({ configs, logger, metrics, ledger, isDraining }: AdminOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  const token = configs.current.config.admin.token;

  // Every admin answer is the state of this instant (readiness, counters, who still calls, the config in
  // effect): RFC 9111 §5.2.2.5, no cache between the operator and the shim may keep one, a 401 or 404 included.
  app.use(function noStore(_req: Request, res: Response, next: NextFunction) {
    res.setHeader('cache-control', 'no-store');
    next();
  });

  // Liveness and readiness stay open: orchestrators probe them without credentials.
  app.get('/healthz', function healthz(_req, res) {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', function readyz(_req, res) {
    if (isDraining()) res.status(503).json({ status: 'draining' });
    else res.json({ status: 'ready' });
  });
  app.all(['/healthz', '/readyz'], methodNotAllowed);

  if (token !== null) {
    app.use(function requireAdminToken(req: Request, res: Response, next: NextFunction) {
      if (carriesToken(req.headers.authorization, token)) {
        next();
        return;
      }
      // RFC 6750 §3: a refused bearer token names the scheme and realm it needs.
      sendLocalAnswer(res, errorAnswer('unauthorized', { message: 'A valid admin token is required.' }), {
        'www-authenticate': 'Bearer realm="nango-shim-admin"',
      });
    });
  }

  app.get('/metrics', async function metricsText(_req, res) {
    const text = await metrics.render();
    res.type(metrics.contentType).send(text);
  });
  app.get('/admin/deprecations', async function deprecations(_req, res) {
    let report: Awaited<ReturnType<Ledger['report']>>;
    try {
      report = await ledger.report();
    } catch (error) {
      logger.warn({ reason: (error as Error).message }, 'ledger cannot be read');
      sendLocalAnswer(
        res,
        errorAnswer('ledgerUnavailable', { message: 'The usage ledger cannot be read right now.' }),
      );
      return;
    }
    res.json(report);
  });
  app.get('/admin/config', function activeConfig(_req, res) {
    // What is in effect; a loaded change to a restart-only key is named in `pendingRestart`, not shown.
    const { config, version, pendingRestart } = configs.current;
    res.json({ version, config: redactConfig(config), pendingRestart });
  });
  app.all(['/metrics', '/admin/deprecations', '/admin/config'], methodNotAllowed);

  app.use(function notFound(req: Request, res: Response) {
    sendLocalAnswer(
      res,
      errorAnswer('notFound', { message: `No admin endpoint at ${req.method} ${req.path}.` }),
    );
  });
  app.use(function adminError(error: unknown, req: Request, res: Response, _next: NextFunction) {
    logger.error({ err: error, path: req.path }, 'admin request failed');
    sendLocalAnswer(res, errorAnswer('internal', { message: 'The admin endpoint failed.' }));
  });
  return app;
}
