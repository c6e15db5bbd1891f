import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { sendLocalAnswerOnSocket } from './answer.js';
import type { App } from './app.js';
import type { Config } from './config.js';
import { errorAnswer } from './errors.js';
import { LiveList } from './live-list.js';

export interface ShimServer {
  server: Server;
  /** Stops accepting, lets in-flight requests finish within the grace period; true if all finished. */
  drain(graceMs: number): Promise<boolean>;
  readonly draining: boolean;
  inFlight(): number;
}

/** What a client that did not speak valid HTTP gets, in Nango's error shape, before its connection closes. */
function clientErrorAnswer(code: string | undefined) {
  if (code === 'HPE_HEADER_OVERFLOW') {
    // RFC 6585 §5, as Node itself answers.
    return errorAnswer('headersTooLarge', { message: 'The request headers are too large.' });
  }
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return errorAnswer('requestTimeout', { message: 'The request did not arrive in time.' });
  }
  return errorAnswer('badRequest', { message: 'The request is not valid HTTP.' });
}

/** The public listener: node:http with the timeouts a gateway needs, the app's handlers, and draining. */
export function createShimServer(app: App, config: Config, logger: Logger): ShimServer {
  let draining = false;
  // Not a Set: see LiveList for what a Set churned at request rate does to the garbage collector.
  const active = new LiveList<ServerResponse>();
  let onIdle: (() => void) | undefined;

  // Shared by every response (no closure per request).
  function onResponseClose(this: ServerResponse): void {
    active.delete(this);
    if (active.size === 0 && onIdle) onIdle();
  }

  const server = http.createServer(
    {
      // Slow or never-finished headers are cut while other clients are served (slowloris).
      headersTimeout: config.server.headersTimeoutMs,
      requestTimeout: config.server.requestTimeoutMs,
      keepAliveTimeout: config.server.keepAliveTimeoutMs,
      // Node checks those timeouts every 30 s by default: a 10 s headers timeout would cut a slow client
      // after up to 40 s. Check often enough for the configured values to mean what they say.
      connectionsCheckingInterval: Math.max(
        100,
        Math.min(1_000, Math.floor(config.server.headersTimeoutMs / 2)),
      ),
    },
    function handleShimRequest(req: IncomingMessage, res: ServerResponse) {
      active.add(res);
      // `on`: a response closes once, and `once` would allocate a wrapper per request.
      res.on('close', onResponseClose);
      // While draining, every answer closes its connection so keep-alive clients move on.
      if (draining) res.shouldKeepAlive = false;
      app.handleRequest(req, res);
    },
  );
  // Upgraded connections (WebSockets) are no longer the HTTP server's: they are tracked here so that a
  // shutdown can end them, since they never finish on their own.
  const upgraded = new LiveList<Duplex>();
  server.on('upgrade', (req, socket: Duplex, head) => {
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
    app.handleUpgrade(req, socket, head);
  });
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    if (error.code === 'ECONNRESET') socket.destroy();
    else sendLocalAnswerOnSocket(socket, clientErrorAnswer(error.code));
  });

  return {
    server,
    get draining() {
      return draining;
    },
    inFlight: () => active.size,
    drain(graceMs) {
      draining = true;
      // Answers still to come close their connection too, so their clients do not reuse a closing socket.
      for (const res of active.toArray()) res.shouldKeepAlive = false;
      // A WebSocket has no end to wait for: it is closed now, and its client reconnects elsewhere.
      for (const socket of upgraded.toArray()) socket.destroy();
      return new Promise((resolve) => {
        let settled = false;
        const finish = (clean: boolean) => {
          if (settled) return;
          settled = true;
          clearTimeout(deadline);
          if (!clean) server.closeAllConnections();
          resolve(clean);
        };
        const deadline = setTimeout(() => {
          logger.warn({ inFlight: active.size }, 'grace period over, cutting remaining requests');
          finish(false);
        }, graceMs);
        deadline.unref();
        server.close(() => finish(true));
        server.closeIdleConnections();
        onIdle = () => server.closeIdleConnections();
        if (active.size === 0) server.closeIdleConnections();
      });
    },
  };
}
