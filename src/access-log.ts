import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { pinoHttp } from 'pino-http';
import { pathOf } from './request-target.js';

/**
 * The optional access log of pass-through traffic (`log.passthrough`): one `request completed` line per
 * request no migration owns, from pino-http. Off by default: on the hot path of every Nango call it costs a
 * child logger and a line per request. The request is logged as method, path and client address only:
 * headers (and so the Authorization header) never reach it, nor the query string, where a client may carry
 * its key (`?secret_key=…`).
 */
export function createAccessLog(logger: Logger): (req: IncomingMessage, res: ServerResponse) => void {
  const middleware = pinoHttp({
    logger,
    quietReqLogger: true,
    customSuccessMessage: () => 'request completed',
    customErrorMessage: () => 'request failed',
    customLogLevel: (_req, res, error) => (error || res.statusCode >= 500 ? 'warn' : 'info'),
    serializers: {
      req: (req: { method?: string; url?: string; remoteAddress?: string }) => ({
        method: req.method,
        path: pathOf(req.url ?? '/'),
        remoteAddress: req.remoteAddress,
      }),
      res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode }),
    },
  });
  return function logAccess(req, res) {
    middleware(req, res);
  };
}
