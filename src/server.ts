import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { sendLocalAnswerOnSocket } from './answer.js';
import type { App } from './app.js';
import type { Config } from './config.js';
import { errorAnswer, type LocalAnswer } from './errors.js';
import { LiveList } from './live-list.js';

export interface ShimServer {
  server: Server;
  /** Stops accepting, lets in-flight requests finish within the grace period; true if all finished. */
  drain(graceMs: number): Promise<boolean>;
  readonly draining: boolean;
  inFlight(): number;
}

/**
 * How long a shutdown past its grace period waits, once it has cut the answers still under way, for their
 * 'close' events: each records its call (usage line, metrics, ledger), which must happen before the ledger's
 * last write. They come within a turn or two of the event loop; the bound only keeps a shutdown from hanging.
 */
const CUT_SETTLE_MS = 1_000;

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

/** The answer node:http is writing on a connection, if any (the field its own clientError default reads). */
function answerInProgress(socket: Socket): ServerResponse | undefined {
  return (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage ?? undefined;
}

/**
 * Answers bytes that are not valid HTTP (or came too slowly) with one of the shim's own answers and closes
 * the connection, without breaking an answer already under way on it. Pipelined after a whole request (a
 * client's body longer than its Content-Length, say), they cannot be answered at once on the raw socket:
 * that would land inside the streamed body of the answer in progress (the client reads the 400's bytes as
 * its 200's body), or before it, so a request the upstream applied would seem refused. RFC 9112 §9.3.2:
 * answers go in the order of the requests, so the refusal waits for every answer before it. Only when the request being
 * answered is itself the broken one (its body cannot be read, or did not come in time) is the refusal its
 * answer, as in node:http's default: sent if nothing of the answer has been, else the connection is cut.
 */
function refuseClient(socket: Socket, refusal: LocalAnswer): void {
  const answering = answerInProgress(socket);
  if (answering === undefined) {
    sendLocalAnswerOnSocket(socket, refusal);
  } else if (answering.req.complete) {
    // `close` comes after `finish`, once node:http has moved on to the next pipelined answer, if any.
    answering.once('close', () => refuseClient(socket, refusal));
  } else if (!answering.headersSent) {
    sendLocalAnswerOnSocket(socket, refusal);
  } else {
    socket.destroy();
  }
}

/** Answers waiting behind another on their pipelined connection, in order (closeQueuedAnswers). */
const queuedAnswers = new WeakMap<Socket, ServerResponse[]>();

/**
 * Closes the answers still queued behind another on a pipelined connection (RFC 9112 §9.3.2) when it closes,
 * as node:http closes the answer being written on it. Node 20 aborts a queued answer's request but never
 * closes the answer itself (fixed later: nodejs/node#62534), and everything that ends a call waits for its
 * 'close': the call, which went upstream as soon as it arrived, was never recorded (no usage line, no ledger
 * count), its upstream request ran on for nobody (http-proxy-3 aborts on 'close'), and it stayed in flight
 * for ever, so a shutdown past its grace period waited all of CUT_SETTLE_MS for it, in vain.
 */
function closeQueuedAnswers(this: Socket): void {
  for (const res of queuedAnswers.get(this) ?? []) {
    if (res.socket !== null || res.closed) continue;
    // What node:http does to an answer whose connection closes (emitCloseNT): destroyed, closed, 'close'.
    res.destroy();
    (res as ServerResponse & { _closed: boolean })._closed = true;
    res.emit('close');
  }
}

/**
 * Keeps an answer that waits for its connection, to close it with that connection (closeQueuedAnswers). One
 * listener per pipelined connection, and only the answers still waiting are kept: answers go out in order, so
 * those at the front that have had their connection since, or have closed, are dropped as this one joins.
 */
function queueAnswer(res: ServerResponse, connection: Socket): void {
  let queued = queuedAnswers.get(connection);
  if (queued === undefined) {
    queued = [];
    queuedAnswers.set(connection, queued);
    connection.once('close', closeQueuedAnswers);
  }
  while (queued[0] !== undefined && (queued[0].socket !== null || queued[0].closed)) queued.shift();
  queued.push(res);
}

/**
 * Whether no answer waits behind this one on its connection (RFC 9112 §9.3.2: answers go in the order of the
 * requests). The answer being written is in front of every one still waiting in queuedAnswers; one waiting is
 * followed by those queued after it.
 */
function isLastOnConnection(res: ServerResponse): boolean {
  const queued = queuedAnswers.get(res.req.socket as Socket);
  if (queued === undefined) return true;
  for (let index = queued.indexOf(res) + 1; index < queued.length; index++) {
    const behind = queued[index];
    if (behind !== undefined && behind.socket === null && !behind.writableFinished && !behind.closed)
      return false;
  }
  return true;
}

/**
 * An answer not yet sent closes its connection, and says so. node:http sends a head with the first byte of the
 * body: a forwarded answer whose head came before the drain carries the shim's `Connection: keep-alive` and
 * `Keep-Alive: timeout=N` (forward.ts setAnswerConnection), which node:http obeys over shouldKeepAlive. Its
 * client was told to keep a connection the drain then closed, and could send its next request on it.
 */
function closeAfterAnswer(res: ServerResponse): void {
  res.shouldKeepAlive = false;
  if (res.headersSent || !res.hasHeader('connection')) return;
  res.setHeader('connection', 'close');
  res.removeHeader('keep-alive');
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
      // node:http gives an answer its connection before this runs, unless an answer before it still has it.
      if (res.socket === null) queueAnswer(res, req.socket);
      // While draining, every answer closes its connection so keep-alive clients move on.
      if (draining) closeAfterAnswer(res);
      app.handleRequest(req, res);
    },
  );
  // Client connections, for a drain to close those on which nothing has arrived (closeUnusedConnections). One
  // listener per connection, shared, none per request.
  const connections = new LiveList<Socket>();
  function forgetConnection(this: Socket): void {
    connections.delete(this);
  }
  server.on('connection', (socket: Socket) => {
    connections.add(socket);
    socket.on('close', forgetConnection);
  });
  // Upgraded connections (WebSockets) are no longer the HTTP server's: they are tracked here so that a
  // shutdown can end them, since they never finish on their own.
  const upgraded = new LiveList<Duplex>();
  server.on('upgrade', (req, socket: Duplex, head) => {
    connections.delete(socket as Socket);
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
    app.handleUpgrade(req, socket, head);
  });
  // node:http reports a broken connection again with every chunk that follows: it is refused once.
  const refused = new WeakSet<Socket>();
  function refuseOnce(socket: Socket, code: string | undefined): void {
    if (refused.has(socket)) return;
    refused.add(socket);
    refuseClient(socket, clientErrorAnswer(code));
  }
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    if (error.code === 'ECONNRESET') socket.destroy();
    else refuseOnce(socket, error.code);
  });

  /**
   * server.close() stops node:http's check of the headers timeout (it clears connectionsCheckingInterval): a
   * head still arriving when the drain began, and never finished, held the shutdown for the whole grace period,
   * which then ended in `grace period over` with `inFlight: 0` and exit 1. server.headersTimeoutMs after the
   * drain began, a connection with no answer under way is one whose head has taken longer than that (every
   * other connection was closed at the drain, or closes after its answer): it gets the 408 node:http's check
   * would have given it, and one already refused is closed.
   */
  function refuseStalledHeads(): void {
    for (const socket of connections.toArray()) {
      if (answerInProgress(socket) !== undefined) continue;
      if (refused.has(socket)) socket.destroy();
      else refuseOnce(socket, 'ERR_HTTP_REQUEST_TIMEOUT');
    }
  }

  /**
   * Cuts every answer still under way and waits (at most CUT_SETTLE_MS) until each has closed. Resolved at once,
   * the shutdown wrote the ledger before their records came: logged as `ledger updates lost at shutdown`, or
   * lost without a line when the process exited first, though the calls had reached the upstream.
   */
  function cutRemaining(): Promise<void> {
    for (const res of active.toArray()) app.markCut(res);
    server.closeAllConnections();
    if (active.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const settle = setTimeout(resolve, CUT_SETTLE_MS);
      settle.unref();
      onIdle = () => {
        clearTimeout(settle);
        resolve();
      };
    });
  }

  /**
   * A draining server closes the connections it is not using: those node:http calls idle (a keep-alive
   * connection between requests), and those on which no byte has arrived. node:http counts the latter (a client
   * pool's connection opened ahead of its first request, a probe that connects and waits) as receiving a
   * request, not as idle, and the headers timeout that would have cut one stops with server.close(): it held
   * every shutdown for the whole grace period, which then ended in `grace period over` with `inFlight: 0` and
   * exit 1. A connection whose request is still arriving is not closed: that request is served (its answer
   * says close), as any that came before the drain.
   */
  function closeUnusedConnections(): void {
    server.closeIdleConnections();
    for (const socket of connections.toArray()) {
      if (socket.bytesRead === 0) socket.destroy();
    }
  }

  return {
    server,
    get draining() {
      return draining;
    },
    inFlight: () => active.size,
    drain(graceMs) {
      draining = true;
      // Answers still to come close their connection too, so their clients do not reuse a closing socket: the
      // last on each connection. Closing after one a pipelined answer waits behind lost that answer, though its
      // request had gone upstream (and may have been applied there): node:http ends the connection after it.
      for (const res of active.toArray()) if (isLastOnConnection(res)) closeAfterAnswer(res);
      // A WebSocket has no end to wait for: it is closed now, and its client reconnects elsewhere.
      for (const socket of upgraded.toArray()) socket.destroy();
      return new Promise((resolve) => {
        let settled = false;
        const finish = (clean: boolean) => {
          if (settled) return;
          settled = true;
          clearTimeout(deadline);
          clearTimeout(stalledHeads);
          if (clean) resolve(true);
          else void cutRemaining().then(() => resolve(false));
        };
        const deadline = setTimeout(() => {
          logger.warn({ inFlight: active.size }, 'grace period over, cutting remaining requests');
          finish(false);
        }, graceMs);
        deadline.unref();
        const stalledHeads = setTimeout(refuseStalledHeads, config.server.headersTimeoutMs);
        stalledHeads.unref();
        server.close(() => finish(true));
        closeUnusedConnections();
        onIdle = closeUnusedConnections;
      });
    },
  };
}
