import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { type Duplex, Readable } from 'node:stream';
import { createProxyServer, type ServerOptions } from 'http-proxy-3';
import { OUTGOING_PASSES } from 'http-proxy-3/dist/lib/http-proxy/passes/web-outgoing.js';
import { decodeAnswer } from './answer-coding.js';
import type { Config } from './config.js';
import { rewrittenEtag, weakEtag } from './etag.js';
import { createSuccessorClient, type UpstreamRequest, type UpstreamResponse } from './successor-client.js';
import { classifyFailure, timeoutError, type UpstreamFailure } from './upstream-failure.js';
import { fieldTokens, HOP_FIELDS, setForwardedHeaders } from './upstream-headers.js';

export type PassThroughErrorHandler = (
  failure: UpstreamFailure,
  error: Error,
  req: IncomingMessage,
  res: ServerResponse | Duplex,
) => void;

/** A request sent once more after losing a reused upstream connection before any answer (retryOnNewConnection). */
export type PassThroughRetryHandler = (error: Error, req: IncomingMessage) => void;

export interface Forwarder {
  /**
   * Streams a request to the upstream unchanged and the answer back (http-proxy-3). `body` replaces the
   * request stream when the shim has already read it, or part of it (the validate stage), with the very
   * same bytes.
   */
  web(req: IncomingMessage, res: ServerResponse, body?: Buffer | Readable): void;
  /**
   * Streams a translated call whose answer is the successor's own (only the request line changed), as web()
   * does, except a small 429: it is read whole, decoded, and sent with the body `rename` gives instead
   * (Nango's 429 names the path that was called, rate-limit.json), with its length and ETag to match; a HEAD
   * 429 gets the length and ETag of the renamed body it stands for.
   */
  stream(req: IncomingMessage, res: ServerResponse, rename: RateLimitRename): void;
  /** Passes a WebSocket upgrade through. */
  ws(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** One buffered exchange, for translated calls. Never retried: a write may have been applied. */
  send(request: UpstreamRequest): Promise<UpstreamResponse>;
  /** The upstream's `host[:port]`, for the Host header of translated calls. */
  readonly host: string;
  close(): void;
}

/** How a streamed translation renames the upstream's 429 for the legacy client. */
export interface RateLimitRename {
  /** The body a 429 is sent with instead of its own, given it decoded; undefined keeps the upstream's. */
  body(body: Buffer): Buffer | undefined;
  /** On a HEAD: the body the upstream's 429 would have had, which its Content-Length and ETag describe. */
  headBody?: Buffer | undefined;
}

const NO_OPTIONS = Object.freeze({});
/** A 429 at most this long is read whole on a streamed translation (Nango's is under 100 bytes). */
const MAX_REWRITTEN_429_BYTES = 16 * 1024;
type AnswerPass = (
  req: IncomingMessage,
  res: ServerResponse,
  proxyRes: IncomingMessage,
  options: ServerOptions,
) => void;
/**
 * http-proxy-3's own steps that copy an answer's status and headers to the client, in its order (its types
 * want a normalised target; the options are the ones it is given on every call).
 */
const COPY_ANSWER_HEAD = Object.values(OUTGOING_PASSES) as unknown as AnswerPass[];
/** Nango closes idle keep-alive sockets after 61 s; the shim lets its pooled ones go well before. */
const MAX_IDLE_MS = 55_000;

/** Framing stays whatever Connection names: node:http frames the streamed body by it. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'host']);

function namedByConnection(value: string | string[] | undefined): string[] {
  return fieldTokens(value).filter((token) => !FRAMING.has(token));
}

/**
 * Removes a client's connection options (RFC 9110 §7.6.1), and any other field of its hop (HOP_FIELDS),
 * before http-proxy-3 forwards its headers: a client's `Connection: close` closed the pooled upstream socket
 * after every answer. The common case, `Connection: keep-alive` and nothing else, changes nothing and costs a
 * few property reads: deleting keys would put the headers object in V8's slow dictionary mode on the hottest
 * path.
 */
function dropRequestConnectionOptions(headers: IncomingHttpHeaders): void {
  const connection = headers.connection;
  if (connection !== undefined && connection.toLowerCase() !== 'keep-alive') {
    for (const name of namedByConnection(connection)) delete headers[name];
    delete headers.connection;
  }
  for (const name of HOP_FIELDS) if (headers[name] !== undefined) delete headers[name];
}

/**
 * What node:http says of a client connection it keeps, on every answer whose `Connection` it writes itself
 * (`_storeHeader`, lib/_http_outgoing.js): `Keep-Alive: timeout=<server.keepAliveTimeoutMs in whole seconds,
 * rounded down>` (RFC 2068 §19.7.1.1), with `, max=N` after it only when the server's maxRequestsPerSocket is
 * set, which the shim never sets. A client's pool (node:http's agent, undici) lets an idle connection go
 * before that, so it never sends a request on one the shim is closing. Worked out once, at start-up: the
 * timeout is read once by the listener too.
 */
function keepAliveHint(keepAliveTimeoutMs: number): string {
  return `timeout=${Math.floor(keepAliveTimeoutMs / 1000)}`;
}

/** The fields setAnswerConnection makes the client connection's own on a forwarded answer. */
export const CLIENT_CONNECTION_FIELDS: ReadonlySet<string> = new Set(['connection', 'keep-alive']);

/**
 * The answer's connection is the client's: the upstream's `Connection`/`Keep-Alive: timeout=61` must not
 * reach it (they describe the shim's upstream socket, and a draining server says close), nor any other field
 * of the upstream's hop (HOP_FIELDS). `keepAliveHint` is the client connection's own Keep-Alive when it stays
 * open, undefined when it closes: node:http writes none once `Connection` is set, as it is here, so the shim's
 * own answers had it and pass-through and streamed ones did not. Values are overwritten or set to undefined,
 * which http-proxy-3 skips, rather than deleted, for the reason above; the hint is one string made at start-up.
 */
function setAnswerConnection(headers: IncomingHttpHeaders, keepAliveHint: string | undefined): void {
  const connection = headers.connection;
  if (connection !== undefined && connection !== 'keep-alive' && connection !== 'close') {
    for (const name of namedByConnection(connection)) headers[name] = undefined;
  }
  for (const name of HOP_FIELDS) if (headers[name] !== undefined) headers[name] = undefined;
  if (keepAliveHint === undefined) {
    headers.connection = 'close';
  } else {
    headers.connection = 'keep-alive';
    headers['keep-alive'] = keepAliveHint;
  }
}

/**
 * RFC 9110 §7.6.1 on a WebSocket handshake, both ways: every field of one hop (HOP_FIELDS, and any the
 * `Connection` names) is dropped but the upgrade itself, which must reach the other side as `Connection:
 * Upgrade` and `Upgrade: websocket` (RFC 6455 §4.1, §4.2.2). http-proxy-3 copies the client's fields and writes
 * the upstream's 101 as they came, a client's `Proxy-Authorization` included. The `Sec-WebSocket-*` fields are
 * end-to-end and stay. Keys are deleted: upgrades are rare, and http-proxy-3 writes a 101's undefined values.
 */
function keepOnlyTheUpgrade(headers: IncomingHttpHeaders): void {
  for (const name of namedByConnection(headers.connection)) if (name !== 'upgrade') delete headers[name];
  for (const name of HOP_FIELDS) if (name !== 'upgrade') delete headers[name];
  headers.connection = 'Upgrade';
}

/** The upstream's `101 Switching Protocols`, before http-proxy-3 writes its head to the client. */
function passOnTheSwitch(answer: IncomingMessage): void {
  keepOnlyTheUpgrade(answer.headers);
}

/**
 * An upstream's answer other than 101 to a handshake: http-proxy-3 writes it to the client's socket and then
 * closes that socket, but with the upstream's own connection fields, `Connection: keep-alive` and
 * `Keep-Alive: timeout=61` included: a client that believed them would send its next request on a closed
 * connection. It says close, and carries no other field of the upstream's hop (setAnswerConnection). It writes
 * the status line itself, reason phrase as it came: one node:http could not write is replaced, as on any
 * other answer (dropUnwritableReason); and it frames a body of unknown length itself (keepBodilessUnframed).
 */
function refusedSwitch(answer: IncomingMessage): void {
  setAnswerConnection(answer.headers, undefined);
  dropUnwritableReason(answer);
  keepBodilessUnframed(answer);
}

/**
 * RFC 9110 §15.3.5, §15.4.5: a 204 or a 304 ends with its header section. http-proxy-3 chunks a refusal that
 * has no Content-Length, and on these statuses the client then read a `Transfer-Encoding` RFC 9112 §6.1 forbids
 * and, after the head, a last chunk it took for the start of a next answer (node:http's client: a parse error
 * once the answer was out). A null length is neither written (http-proxy-3 skips null values, as undefined
 * ones) nor taken for a missing one (it tests `=== undefined`): the head goes out as it came, with no body.
 */
function keepBodilessUnframed(answer: IncomingMessage): void {
  const status = answer.statusCode;
  if ((status === 204 || status === 304) && answer.headers['content-length'] === undefined)
    (answer.headers as Record<string, unknown>)['content-length'] = null;
}

/**
 * A `101 Switching Protocols` to a request that asked for no upgrade (RFC 9110 §7.8: a server switches only to
 * a protocol the request's Upgrade named). node:http hands it to an `upgrade` listener and, with none, drops
 * the socket without a word to the request: http-proxy-3 never hears of it, and the client would wait for
 * ever, past upstream.timeoutMs, holding a shutdown until its grace period ends. Reported through the request's
 * `error` like any answer the shim cannot pass on (502 upstream_response_lost); the socket is dropped.
 */
function refuseUnrequestedSwitch(this: http.ClientRequest, _answer: IncomingMessage, socket: Duplex): void {
  socket.destroy();
  this.emit('error', new Error('the upstream switched protocols although no upgrade was asked for'));
}

/** Errors already reported for a call: node:http may emit one again later (see limitSocketWait). */
const reportedErrors = new WeakSet<Error>();

/** Whether the agent queued `req` for a socket (all maxSockets busy) instead of giving it one. */
function waitsForSocket(agent: http.Agent, req: http.ClientRequest): boolean {
  const queues = agent.requests as Readonly<Record<string, readonly unknown[] | undefined>>;
  // No queue at all but when the pool is full: the usual call looks at an empty object and goes on.
  for (const name in queues) if (queues[name]?.at(-1) === req) return true;
  return false;
}

/**
 * Bounds a queued request's wait for an upstream socket by upstream.timeoutMs, as documented: a socket's
 * timeout cannot see a request that has none, and with every pooled socket busy (slow downloads, say) calls
 * would wait for as long as those take. A request still without a socket at the deadline is answered 504. node:http
 * emits a queued request's error only once a socket comes, so it is emitted now; the same error emitted
 * again then is not reported twice (reportedErrors).
 */
function limitSocketWait(req: http.ClientRequest, timeoutMs: number): void {
  const deadline = setTimeout(() => {
    // The client left meanwhile (http-proxy-3 destroyed the request): nobody is waiting for an answer.
    if (req.destroyed) return;
    const error = timeoutError(timeoutMs);
    req.destroy(error);
    req.emit('error', error);
  }, timeoutMs);
  req.once('socket', () => clearTimeout(deadline));
}

/**
 * Watches every request the agent carries, from where node:http hands it to its agent (`addRequest`):
 * http-proxy-3 announces no `proxyReq` for a request with an `Expect` header (its head is already flushed)
 * nor for a WebSocket upgrade. It arms the no-answer timeout (those requests hung for ever on a silent
 * upstream), bounds the wait for a socket when the pool is full (limitSocketWait), refuses a protocol switch
 * nobody asked for (refuseUnrequestedSwitch), passes on one that was asked for, or its refusal, without the
 * fields of the upstream's hop (passOnTheSwitch, refusedSwitch), and sends a request that came without a body
 * without one.
 */
function watchUpstreamRequests(agent: http.Agent, timeoutMs: number, agentTimeoutMs: number): void {
  const carrier = agent as http.Agent & { addRequest(req: http.ClientRequest, options: object): void };
  const addRequest = carrier.addRequest.bind(agent);
  const onAnswerTimeout = function onAnswerTimeout(this: http.ClientRequest) {
    this.destroy(timeoutError(timeoutMs));
  };
  carrier.addRequest = (req, options) => {
    // Usually the agent's own `timeout` is the same value and already arms the socket: the request only
    // listens, with one shared function, so nothing is allocated or re-armed per request. A longer
    // timeout than pooled sockets may idle is armed on the request itself.
    if (timeoutMs === agentTimeoutMs) req.on('timeout', onAnswerTimeout);
    else req.setTimeout(timeoutMs, onAnswerTimeout);
    // A WebSocket upgrade has http-proxy-3's own listener, which this one comes before; every other request
    // asked for no switch.
    if (req.getHeader('upgrade') === undefined) req.on('upgrade', refuseUnrequestedSwitch);
    else req.on('upgrade', passOnTheSwitch).on('response', refusedSwitch);
    // RFC 9112 §6.3: a request with neither Content-Length nor Transfer-Encoding has no body, and Nango's JSON
    // parser tells that apart from an empty one (type-is hasBody): a `PATCH /connection/metadata` without one
    // gets "expected object, received undefined", an empty one parses as `{}` and gets three issues, and a
    // path-style POST without one stores nothing where `{}` replaces the metadata. node:http frames every
    // PATCH, POST or PUT it sends (`Content-Length: 0`, or chunked once a body is piped in): such a request is
    // sent without either, as it came. http-proxy-3's `Content-Length: 0` on a bodiless DELETE or OPTIONS stays.
    if (!req.hasHeader('content-length') && !req.hasHeader('transfer-encoding'))
      req.useChunkedEncodingByDefault = false;
    addRequest(req, options);
    if (waitsForSocket(agent, req)) limitSocketWait(req, timeoutMs);
  };
}

/**
 * Runs `hook` on every socket the agent makes, as it is made: before node:http's own listeners are on it, so
 * the hook's run first. Per socket, never per request: pooled sockets are made once.
 */
function hookNewSockets(agent: http.Agent, hook: (socket: Duplex) => void): void {
  const carrier = agent as http.Agent & { createConnection(...args: unknown[]): Duplex };
  const createConnection = carrier.createConnection.bind(agent);
  carrier.createConnection = (...args) => {
    const socket = createConnection(...args);
    hook(socket);
    return socket;
  };
}

/** Errors of upstream sockets that failed before they were established (see markFailuresBeforeEstablished). */
const failedBeforeEstablished = new WeakSet<Error>();

/**
 * Marks the error of an upstream socket that fails before it is established: connected, and on an https
 * upstream past its TLS handshake. No byte of a request can have left by then, whatever the error's code
 * says (a reset handshake is ECONNRESET, a plain-HTTP port behind an https URL is EPROTO), so the failure
 * is 'unreachable', never "the call may have been applied"; the translated calls' client tells it the same
 * way. Hooked where the agent makes a socket (hookNewSockets): nothing per request.
 */
function markFailuresBeforeEstablished(agent: http.Agent, secure: boolean): void {
  hookNewSockets(agent, (socket) => {
    let established = false;
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      established = true;
    });
    // Before node:http's own listener, which hands the same error to the request.
    socket.once('error', (error: Error) => {
      if (!established) failedBeforeEstablished.add(error);
    });
  });
}

/**
 * Methods sent once more after the keep-alive race (retryOnNewConnection): the safe ones (RFC 9110 §9.2.1),
 * which change nothing however often they arrive. DELETE and PUT are idempotent (§9.2.2) but not safe: a
 * DELETE the upstream applied before the connection broke would be answered 404 the second time, so they
 * keep their 502, as every other method does.
 */
const RETRIED_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);
/** A connection the upstream reset (or closed: node:http's `socket hang up`) under a request, or wrote into closed. */
const CONNECTION_LOST: ReadonlySet<string | undefined> = new Set(['ECONNRESET', 'EPIPE']);

/** Errors of requests that lost a reused pooled socket before any answer came (markLossesOnReusedSockets). */
const lostOnReusedSocket = new WeakSet<Error>();

/** node:http's request on a socket (`_httpMessage`), and its answer once the head of one came (`res`). */
type CarriedRequest = http.ClientRequest & { res?: IncomingMessage | null };
type CarrierSocket = Duplex & { _httpMessage?: CarriedRequest | null };

/**
 * Pooled sockets that have carried a whole answer, and so were reused by any request on them since. node:http's
 * own `request.reusedSocket` says so only of a request that took its socket from the idle pool, not of one
 * that waited for a busy pool and was handed the socket an answer had just freed: under load, when every
 * request waits, the keep-alive race (an upstream restart closing its idle connections) hit those alone.
 */
const reusedSockets = new WeakSet<Duplex>();

/** node:http offers a socket for another request (`free`) each time a kept-alive answer on it ends. */
function markSocketReused(this: Duplex): void {
  reusedSockets.add(this);
}

/** The socket's request, when it went out on a reused pooled socket and no answer has come for it yet. */
function unansweredOnReusedSocket(socket: CarrierSocket): CarriedRequest | undefined {
  const request = socket._httpMessage;
  return request && !request.res && reusedSockets.has(socket) ? request : undefined;
}

/** Marks a request's error as the loss of its reused socket, when it is a reset or a close (not a timeout). */
function markLostRequestError(error: Error): void {
  if (CONNECTION_LOST.has((error as NodeJS.ErrnoException).code)) lostOnReusedSocket.add(error);
}

/** A reset (or EPIPE) of a reused socket whose request has no answer yet: node:http hands the error on next. */
function markResetOfReusedSocket(this: CarrierSocket, error: Error): void {
  if (unansweredOnReusedSocket(this)) markLostRequestError(error);
}

/**
 * The upstream's FIN on a reused socket whose request has no answer yet: node:http reports it to the request
 * next, as a `socket hang up` of its own making, which this marks before anybody else hears of it.
 */
function markCloseOfReusedSocket(this: CarrierSocket): void {
  unansweredOnReusedSocket(this)?.prependOnceListener('error', markLostRequestError);
}

/**
 * Marks the error of a request that lost its reused pooled socket before any answer came: the keep-alive
 * race, where the upstream closes an idle connection (its own timer, a restart, a load balancer in between
 * with a shorter one) just as the shim sends on it. node:http's own advice (`request.reusedSocket`) is to
 * send such a request again. Hooked where the agent makes a socket (hookNewSockets), with shared functions:
 * nothing per request, and only a socket's first answer and the upstream's reset or FIN run them (a socket
 * the shim destroys itself never ends). A head cut short by the close is not told apart: node:http reads no
 * answer until its head is whole.
 */
function markLossesOnReusedSockets(agent: http.Agent): void {
  hookNewSockets(agent, (socket) => {
    // Before node:http's own listeners, which hand the loss to the request. `once`: the first answer makes
    // the socket a reused one for good.
    socket.on('error', markResetOfReusedSocket).on('end', markCloseOfReusedSocket);
    socket.once('free', markSocketReused);
  });
}

/**
 * RFC 9112 §6.3: whether a request sends body bytes; none without Content-Length or Transfer-Encoding, or with
 * a length of 0. Not json-body.ts hasBody, which (as type-is) counts `Content-Length: 0` as a body.
 */
function sendsBodyBytes(headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) !== 0);
}

/**
 * Whether a request that lost its reused upstream connection may be sent again: a safe method, no body
 * (pass-through streams a body and keeps none to replay), and a client still there with nothing written to it.
 */
function mayRetry(req: IncomingMessage, res: ServerResponse): boolean {
  return (
    RETRIED_METHODS.has(req.method ?? '') &&
    !sendsBodyBytes(req.headers) &&
    !res.headersSent &&
    !res.destroyed &&
    !req.socket.destroyed
  );
}

/**
 * A 429 small enough to read whole: a declared length within the limit, or none (chunked, read until it
 * proves longer), and a body at all (HEAD has none to read: see describeRenamedHead).
 */
function isSmallRateLimitAnswer(proxyRes: IncomingMessage, method: string | undefined): boolean {
  if (proxyRes.statusCode !== 429 || method === 'HEAD') return false;
  const declared = proxyRes.headers['content-length'];
  return declared === undefined || Number(declared) <= MAX_REWRITTEN_429_BYTES;
}

/**
 * The body a 429 read whole is sent with instead of its own, once any content coding is undone (a gateway in
 * front of Nango may compress it; answer-coding.ts): undefined to send it as it came, as for a 429 that is not
 * Nango's, or one that cannot be decoded.
 */
function renamedRateLimitBody(
  proxyRes: IncomingMessage,
  body: Buffer,
  rename: RateLimitRename,
): Buffer | undefined {
  try {
    const decoded = decodeAnswer({ status: 429, headers: proxyRes.headers, body }, MAX_REWRITTEN_429_BYTES);
    return rename.body(decoded.body);
  } catch {
    // AnswerDecodeError: corrupt, or longer than any 429 the shim renames once decoded.
    return undefined;
  }
}

/**
 * Reads a small 429 whole and sends it renamed, as a buffered translation sends its own: plain JSON with its
 * length and ETag, neither the upstream's coding nor its trailer fields, which describe the bytes it sent.
 * One that proves longer than MAX_REWRITTEN_429_BYTES is passed on as it comes.
 */
function sendRenamedRateLimitAnswer(
  proxyRes: IncomingMessage,
  res: ServerResponse,
  rename: RateLimitRename,
  copyHead: () => void,
): void {
  const chunks: Buffer[] = [];
  let length = 0;
  const onData = (chunk: Buffer) => {
    chunks.push(chunk);
    length += chunk.length;
    if (length <= MAX_REWRITTEN_429_BYTES) return;
    proxyRes.off('data', onData).off('end', onEnd);
    if (res.headersSent) return;
    copyHead();
    for (const read of chunks) res.write(read);
    proxyRes.pipe(res);
  };
  const onEnd = () => {
    // The call failed while its 429 was read (bytes after it that are not HTTP, in the same packet) and the
    // shim has answered 502: copying this head onto that sent answer would throw and kill the process.
    if (res.headersSent) return;
    const body = Buffer.concat(chunks);
    const renamed = renamedRateLimitBody(proxyRes, body, rename);
    copyHead();
    if (renamed === undefined) {
      res.end(body);
      return;
    }
    res.removeHeader('content-encoding');
    // RFC 9110 §6.6.2: nothing follows a body of known length (node:http throws on the announcement).
    res.removeHeader('trailer');
    res.setHeader('content-length', renamed.length);
    const etag = rewrittenEtag(proxyRes.headers.etag, renamed);
    if (etag !== undefined) res.setHeader('etag', etag);
    res.end(renamed);
  };
  proxyRes.on('data', onData).on('end', onEnd);
}

/**
 * RFC 9110 §9.3.2: a HEAD answer carries the header fields a GET would have, and Express computes its
 * Content-Length and ETag from the body it then leaves out (connection-get.json "HEAD /connections/conn-1":
 * 539 bytes, as the GET). A HEAD 429 whose length and ETag describe the successor's own 429 body is given those
 * of the body renamed for the legacy path, as the legacy route's Express sent; any other HEAD 429 keeps its own.
 */
function describeRenamedHead(res: ServerResponse, proxyRes: IncomingMessage, rename: RateLimitRename): void {
  const described = rename.headBody;
  if (described === undefined || Number(proxyRes.headers['content-length']) !== described.length) return;
  const etag = proxyRes.headers.etag;
  if (etag !== undefined && etag !== weakEtag(described)) return;
  const renamed = rename.body(described);
  if (renamed === undefined) return;
  res.setHeader('content-length', renamed.length);
  const renamedEtag = rewrittenEtag(etag, renamed);
  if (renamedEtag !== undefined) res.setHeader('etag', renamedEtag);
}

/** The request an upstream answer came for (node:http keeps it as the answer's undocumented `req`). */
function upstreamRequestOf(proxyRes: IncomingMessage): http.ClientRequest | undefined {
  return (proxyRes as IncomingMessage & { req?: http.ClientRequest }).req;
}

/**
 * An upstream answer that ends before its framing says it is whole (RFC 9112 §6.3: fewer bytes than its
 * Content-Length, or no last chunk) because the upstream closed or reset the connection. http-proxy-3 pipes
 * the answer into the client's response and listens for nothing on it: on a reset the request's own `error`
 * reached the per-call callback, but on a plain close node:http only destroys the answer, and the client's
 * connection stayed open for ever with a short body, the response in flight and nothing logged.
 *
 * node:http emits the answer's `aborted` error (ECONNRESET) only when it has an `error` listener; this one
 * hands it to the upstream request, whose `error` http-proxy-3 routes to the call's own callback with the
 * client's req and res (handleProxyError: logged as `lost`, and the client's connection destroyed, the only
 * way to tell it the framed body is cut, RFC 9112 §8). Where the client's socket is already gone (it left,
 * or a reset was already reported through the request), http-proxy-3 takes an ECONNRESET as `econnreset`,
 * so nothing is reported twice. Cost per pass-through request: adding this one listener to the upstream
 * answer (no allocation of ours); it runs only when an answer is cut.
 */
function reportCutAnswer(this: IncomingMessage, error: Error): void {
  upstreamRequestOf(this)?.emit('error', error);
}

/** What node:http will not write in a status line's reason phrase or a field value (its checkInvalidHeaderChar). */
const UNWRITABLE_TEXT = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * Replaces a reason phrase node:http cannot write by the status's standard one: llhttp passes control
 * characters in it (`200 O\x7fK`), and ServerResponse throws on them from inside the piped answer's stream,
 * which kills the process. RFC 9112 §4: a client should ignore the reason phrase, and the shim's own answers
 * never carry the upstream's. Set on the answer itself: http-proxy-3 writes a refused handshake's status line
 * from it (refusedSwitch). A status with no standard phrase gets none (node:http then writes `unknown`).
 */
function dropUnwritableReason(proxyRes: IncomingMessage): void {
  if (proxyRes.statusMessage !== undefined && UNWRITABLE_TEXT.test(proxyRes.statusMessage)) {
    proxyRes.statusMessage = http.STATUS_CODES[proxyRes.statusCode ?? 0] ?? '';
  }
}

/**
 * RFC 9110 §6.6.2: a `Trailer` field announces fields sent after a chunked body. node:http throws on it from
 * inside the piped answer (ERR_HTTP_TRAILER_INVALID) when the answer it writes to the client is not chunked,
 * which killed the process: an upstream answer with a Content-Length, one without a body (HEAD, 204, 304),
 * or any answer to an HTTP/1.0 client (RFC 9112 §6.1: never chunked). Nothing can follow such a body, so the
 * field announces nothing and is dropped (set to undefined, which http-proxy-3 skips).
 */
function dropUnsendableTrailer(req: IncomingMessage, res: ServerResponse, proxyRes: IncomingMessage): void {
  const headers = proxyRes.headers;
  if (headers.trailer === undefined) return;
  const status = proxyRes.statusCode;
  const chunkedToClient =
    headers['transfer-encoding'] !== undefined &&
    res.useChunkedEncodingByDefault &&
    req.method !== 'HEAD' &&
    status !== 204 &&
    status !== 304;
  if (!chunkedToClient) headers.trailer = undefined;
}

/** RFC 9110 §5.6.2: a field name is a token (node:http's checkIsHttpToken). */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * A flat `[name, value, name, value, …]` list, as node:http keeps raw fields, as pairs, leaving out any field
 * node:http would refuse to write: older llhttp (Node 20.19.0) reads a trailer line with no name, and
 * `addTrailers` then threw from the answer's `end`, which killed the process.
 */
function writableFieldPairs(raw: readonly string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    if (FIELD_NAME.test(name) && !UNWRITABLE_TEXT.test(value)) pairs.push([name, value]);
  }
  return pairs;
}

/**
 * RFC 9110 §6.5: the trailer fields after a chunked body (a checksum, a final status) are part of the answer,
 * but http-proxy-3 pipes only the body, so they were lost on the way while the `Trailer` field still announced
 * them. They are added to the client's answer when the upstream's ends, before the pipe ends it (this listener
 * comes first), repeated ones kept apart. node:http sends them on a chunked answer only, where
 * dropUnsendableTrailer left the announcement. Nango never chunks: its answers never get this listener.
 */
function forwardTrailers(proxyRes: IncomingMessage, res: ServerResponse): void {
  if (proxyRes.headers['transfer-encoding'] === undefined) return;
  proxyRes.once('end', () => {
    if (proxyRes.rawTrailers.length > 0) res.addTrailers(writableFieldPairs(proxyRes.rawTrailers));
  });
}

/**
 * Refuses an answer whose status node:http cannot write: llhttp reads any three digits as a status, but
 * ServerResponse throws on one under 100 from inside the piped answer's stream, so one such answer
 * (`HTTP/1.1 000`) would kill the whole process. RFC 9110 §15: it is no HTTP status. Reported through the
 * upstream request's `error` like any answer the shim cannot pass on (502 upstream_response_lost, nothing of
 * it sent), and its connection is dropped. True when refused: the caller then leaves the answer alone.
 */
function refuseUnwritableStatus(proxyRes: IncomingMessage): boolean {
  const status = proxyRes.statusCode ?? 0;
  if (status >= 100) return false;
  const upstreamRequest = upstreamRequestOf(proxyRes);
  upstreamRequest?.emit('error', new Error(`the upstream answered with status ${status}, which is not HTTP`));
  upstreamRequest?.destroy();
  return true;
}

/**
 * What every upstream answer goes through before its head is copied, on pass-through and on a streamed
 * translation alike: a status node:http cannot write refuses it (false: leave it alone), then a reason phrase
 * or `Trailer` it cannot write is dropped, trailer fields are passed on, the connection fields become the
 * client's (setClientConnection, with the listener's `keepAliveHint`), and an answer the upstream cuts is
 * reported and cuts the client's (reportCutAnswer: one shared listener, no closure, no timer).
 */
function prepareAnswer(
  proxyRes: IncomingMessage,
  req: IncomingMessage,
  res: ServerResponse,
  keepAliveHint: string,
): boolean {
  if (refuseUnwritableStatus(proxyRes)) return false;
  dropUnwritableReason(proxyRes);
  dropUnsendableTrailer(req, res, proxyRes);
  forwardTrailers(proxyRes, res);
  setClientConnection(req, res, proxyRes, keepAliveHint);
  proxyRes.on('error', reportCutAnswer);
  return true;
}

/**
 * Whether the client's connection stays open after this answer: as node:http decides when it writes the head
 * itself (unless the draining server said close), keep-alive needs a body whose end the client can find
 * without the close. An HTTP/1.0 client cannot be sent chunks (RFC 9112 §7, §9.3), so an answer of unknown
 * length to it ends with its connection: told `keep-alive`, it was closed anyway.
 */
function keepsClientConnection(res: ServerResponse, proxyRes: IncomingMessage): boolean {
  return (
    res.shouldKeepAlive &&
    (res.useChunkedEncodingByDefault || proxyRes.headers['content-length'] !== undefined)
  );
}

/**
 * The answer's `Connection` field, on the way to the client. http-proxy-3 answers an HTTP/1.0 client with the
 * client's own `Connection` instead (its setConnection step copies the request's field over the answer's), and
 * node:http keeps a connection open whose answer says `keep-alive`, a draining server's included: the request's
 * field, sent upstream long since, is given the answer's value. HTTP/1.1 clients get the answer's as it is.
 */
function setClientConnection(
  req: IncomingMessage,
  res: ServerResponse,
  proxyRes: IncomingMessage,
  keepAliveHint: string,
): void {
  const keepAlive = keepsClientConnection(res, proxyRes);
  setAnswerConnection(proxyRes.headers, keepAlive ? keepAliveHint : undefined);
  if (req.httpVersionMinor === 0) req.headers.connection = keepAlive ? 'keep-alive' : 'close';
}

/**
 * Body bytes that came with an answer's head may still be on their way through http-proxy-3's pipe when the
 * call fails (a chunk or trailer that breaks the framing in the same packet) and the shim answers with its own
 * 502: written into that finished answer, they make node:http emit `error` on it, which the pipe takes to stop
 * but throws again when nobody else listens, killing the process. The shim's answer is whole: they are dropped.
 */
function dropLateWrites(): void {}

/**
 * `ca` is the PEM text of `upstream.caFile`, as loadConfig read and checked it (readUpstreamCa): the file is
 * not read again, so the certificates trusted are the ones checked.
 */
export function createForwarder(
  config: Config,
  onPassThroughError: PassThroughErrorHandler,
  onPassThroughRetry: PassThroughRetryHandler,
  ca?: string,
): Forwarder {
  if (config.upstream.caFile && ca === undefined)
    throw new Error('upstream.caFile is set, but its certificates were not passed on (readUpstreamCa)');
  const target = new URL(config.upstream.url);
  const secure = target.protocol === 'https:';
  const agentOptions = {
    keepAlive: true,
    maxSockets: config.upstream.maxSockets,
    maxFreeSockets: Math.min(64, config.upstream.maxSockets),
    // The no-answer timeout of a request, and the idle timeout of a pooled socket: keep it below Nango's own
    // keep-alive timeout (61 s) so the shim never reuses a socket the upstream is closing.
    timeout: Math.min(config.upstream.timeoutMs, MAX_IDLE_MS),
    scheduling: 'lifo' as const,
  };
  const createAgent = (options: http.AgentOptions) =>
    secure ? new https.Agent({ ...options, ca, rejectUnauthorized: true }) : new http.Agent(options);
  const agent = createAgent(agentOptions);
  // A request that lost a reused socket goes again on a new connection, never on another pooled socket that
  // may be just as dead (an upstream restart closes them all): no keep-alive, and no socket limit, so that
  // node:http closes each connection after its answer and never hands it to another request. Retries come
  // only from requests in the pool, so there are never more of them at once than upstream.maxSockets.
  const retryAgent = createAgent({ ...agentOptions, keepAlive: false, maxSockets: Number.POSITIVE_INFINITY });
  const timeoutMs = config.upstream.timeoutMs;
  for (const carrier of [agent, retryAgent]) {
    // A no-answer timeout measured on the upstream socket, so 504 can be told apart from a reset.
    watchUpstreamRequests(carrier, timeoutMs, agentOptions.timeout);
    markFailuresBeforeEstablished(carrier, secure);
  }
  markLossesOnReusedSockets(agent);
  const host = target.host;
  const basePath = target.pathname.replace(/\/$/, '');

  // http-proxy-3 reads its target on every request. A string it parses again each time; a URL's getters slice
  // a new string per read; a URL with a path (a prefix for every call) it re-parses per request to join it.
  // Without a path the target is these plain fields, and there is nothing to prepend.
  const prefixed = basePath !== '' || target.search !== '';
  const plainTarget = {
    protocol: target.protocol,
    host: target.host,
    hostname: target.hostname,
    port: Number(target.port) || (secure ? 443 : 80),
    href: target.href,
  };
  const proxyOptions: ServerOptions = {
    target: prefixed ? target : plainTarget,
    prependPath: prefixed,
    agent,
    // The X-Forwarded-* headers are the shim's own (setForwardedHeaders), the same as on translated calls.
    // http-proxy-3's xfwd builds each header name by concatenation, three times per header, and parses the
    // Host header for an X-Forwarded-Port (callgrind: 1-4 % of a pass-through request's instructions).
    xfwd: false,
    // The Host is the upstream's (Nango behind a virtual host needs its own name), set by web() and ws() to
    // the target's host: http-proxy-3's changeOrigin works the same value out again on every request.
    changeOrigin: false,
    secure: true,
    ws: true,
    // http-proxy-3 rebuilds the path through WHATWG URL parsing, which resolves dot segments
    // (`/x/../connection/metadata`, `%2e%2e`) and re-encodes characters (`{`, `'`): the upstream would get a
    // route the shim never matched. `toProxy` sends the origin-form target (RFC 9112 §3.2.1) as received;
    // the app reduces every target to origin form before it gets here. Set once: a per-call options object
    // makes http-proxy-3 spread a new object shape on every request (measured: +15% CPU, full GCs).
    toProxy: true,
    ...(ca ? { ca } : {}),
  };
  const proxy = createProxyServer(proxyOptions);
  const clientKeepAliveHint = keepAliveHint(config.server.keepAliveTimeoutMs);
  /** prepareAnswer with this listener's Keep-Alive hint: one function for every answer, nothing per request. */
  const prepareClientAnswer = (proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse) =>
    prepareAnswer(proxyRes, req, res, clientKeepAliveHint);
  // The answer's connection is the client's: keep-alive unless it, the draining server or the framing say otherwise.
  proxy.on('proxyRes', prepareClientAnswer);
  // Client connections whose WebSocket handshake the upstream accepted: their bytes are frames from then on.
  const switched = new WeakSet<Duplex>();
  proxy.on('proxyReqWs', (proxyReq, _req, socket) => {
    proxyReq.once('upgrade', () => switched.add(socket));
  });
  const handleProxyError = (error: Error, req: IncomingMessage, res: ServerResponse | Duplex) => {
    if (reportedErrors.has(error)) return;
    reportedErrors.add(error);
    if ('writeHead' in res) {
      if (lostOnReusedSocket.has(error) && mayRetry(req, res)) {
        retryOnNewConnection(error, req, res);
        return;
      }
      if (!res.headersSent) res.on('error', dropLateWrites);
    } else if (switched.has(res)) {
      // RFC 6455 §7.1.7: a failed tunnel is closed; the shim's HTTP answer, written into it after the 101,
      // reached the client's WebSocket as a broken frame (a protocol error instead of an abnormal closure).
      res.destroy();
    }
    onPassThroughError(classifyFailure(error, false, !failedBeforeEstablished.has(error)), error, req, res);
  };
  // http-proxy-3 throws when nobody handles `error`: every call passes handleProxyError, and this is the net.
  proxy.on('error', handleProxyError);

  // Streamed translations: a second proxy on the same pool that hands every answer to the shim, so a 429 can be
  // read before anything is sent. Pass-through keeps the first, with no per-answer check of its own.
  const streamedOptions: ServerOptions = { ...proxyOptions, selfHandleResponse: true };
  const streamed = createProxyServer(streamedOptions);
  const rateLimitRenames = new WeakMap<IncomingMessage, RateLimitRename>();
  streamed.on('proxyRes', (proxyRes, req, res) => {
    if (!prepareClientAnswer(proxyRes, req, res)) return;
    const rename = rateLimitRenames.get(req);
    const copyHead = () => {
      for (const pass of COPY_ANSWER_HEAD) pass(req, res, proxyRes, streamedOptions);
    };
    if (rename === undefined || !isSmallRateLimitAnswer(proxyRes, req.method)) {
      copyHead();
      if (rename !== undefined && proxyRes.statusCode === 429 && req.method === 'HEAD')
        describeRenamedHead(res, proxyRes, rename);
      proxyRes.pipe(res);
      return;
    }
    // The 429 is read whole before its head is copied: a drain begun meanwhile has said close to an answer not
    // yet sent (server.ts closeAfterAnswer), and the `keep-alive` set above would otherwise win over it.
    sendRenamedRateLimitAnswer(proxyRes, res, rename, () => {
      setClientConnection(req, res, proxyRes, clientKeepAliveHint);
      copyHead();
    });
  });
  streamed.on('error', handleProxyError);

  const retryOptions: ServerOptions = { agent: retryAgent };
  /**
   * Sends a request that lost its reused connection once more, on a connection of its own (retryAgent), by
   * the proxy that sent it: its answer reaches the client as the first would have, and the client's usage
   * line, metrics and access log, all taken when its answer closes, count it once. The request's headers
   * are already the upstream's (web, stream), and it has no body: http-proxy-3 pipes the client's request,
   * which has ended (or is about to), into the new one, and so ends it.
   */
  function retryOnNewConnection(error: Error, req: IncomingMessage, res: ServerResponse): void {
    onPassThroughRetry(error, req);
    (rateLimitRenames.has(req) ? streamed : proxy).web(req, res, retryOptions, handleProxyError);
  }

  // Translated calls: small buffered JSON exchanges, on the shim's own pool (successor-client.ts).
  const successor = createSuccessorClient({
    url: target,
    ca,
    maxSockets: config.upstream.maxSockets,
    maxIdleSockets: agentOptions.maxFreeSockets,
    idleTimeoutMs: agentOptions.timeout,
    timeoutMs,
  });

  /** The upstream's own Host, and where the request came from in X-Forwarded-*. */
  function addressToUpstream(req: IncomingMessage): void {
    setForwardedHeaders(req.headers, req.headers, req.socket);
    req.headers.host = host;
  }

  function send(request: UpstreamRequest): Promise<UpstreamResponse> {
    return successor.send(basePath === '' ? request : { ...request, path: basePath + request.path });
  }

  return {
    host,
    web(req, res, body) {
      dropRequestConnectionOptions(req.headers);
      addressToUpstream(req);
      proxy.web(
        req,
        res,
        body === undefined ? NO_OPTIONS : { buffer: Buffer.isBuffer(body) ? Readable.from([body]) : body },
        handleProxyError,
      );
    },
    stream(req, res, rename) {
      dropRequestConnectionOptions(req.headers);
      addressToUpstream(req);
      rateLimitRenames.set(req, rename);
      streamed.web(req, res, NO_OPTIONS, handleProxyError);
    },
    ws(req, socket, head) {
      keepOnlyTheUpgrade(req.headers);
      addressToUpstream(req);
      proxy.ws(req, socket, head, NO_OPTIONS, handleProxyError);
    },
    send,
    close() {
      proxy.close();
      streamed.close();
      agent.destroy();
      retryAgent.destroy();
      successor.close();
    },
  };
}
