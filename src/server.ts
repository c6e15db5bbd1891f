import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { App } from './app.js';
import type { Config } from './config.js';

export interface ShimServer {
  server: Server;
  /** Stops accepting, lets in-flight requests finish within the grace period; true if all finished. */
  drain(graceMs: number): Promise<boolean>;
  readonly draining: boolean;
  inFlight(): number;
}

const BAD_REQUEST =
  'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\nContent-Length: 73\r\n\r\n{"error":{"code":"bad_request","message":"The request is not valid HTTP."}}';

/** The public listener: node:http with the timeouts a gateway needs, the app's handlers, and draining. */
export function createShimServer(app: App, config: Config, logger: Logger): ShimServer {
  let draining = false;
  const active = new Set<ServerResponse>();
  let onIdle: (() => void) | undefined;

  const server = http.createServer(
    {
      // Slow or never-finished headers are cut while other clients are served (slowloris).
      headersTimeout: config.server.headersTimeoutMs,
      requestTimeout: config.server.requestTimeoutMs,
      keepAliveTimeout: config.server.keepAliveTimeoutMs,
    },
    function handleShimRequest(req: IncomingMessage, res: ServerResponse) {
      active.add(res);
      res.once('close', () => {
        active.delete(res);
        if (active.size === 0 && onIdle) onIdle();
      });
      // While draining, every answer closes its connection so keep-alive clients move on.
      if (draining) res.shouldKeepAlive = false;
      app.handleRequest(req, res);
    },
  );
  // Upgraded connections (WebSockets) are no longer the HTTP server's: they are tracked here so that a
  // shutdown can end them, since they never finish on their own.
  const upgraded = new Set<Duplex>();
  server.on('upgrade', (req, socket: Duplex, head) => {
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
    app.handleUpgrade(req, socket, head);
  });
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    if (error.code !== 'ECONNRESET' && socket.writable && !socket.writableEnded) socket.end(BAD_REQUEST);
    else socket.destroy();
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
      for (const res of active) res.shouldKeepAlive = false;
      // A WebSocket has no end to wait for: it is closed now, and its client reconnects elsewhere.
      for (const socket of upgraded) socket.destroy();
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
