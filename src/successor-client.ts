import {
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  validateHeaderName,
  validateHeaderValue,
} from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { LiveList } from './live-list.js';
import { type ParsedResponse, ResponseParser } from './response-parser.js';
import { classifyFailure, timeoutError, UpstreamError } from './upstream-failure.js';

/** One buffered exchange with the upstream, as a translated call makes it. */
export interface UpstreamRequest {
  /** The most answer bytes read; beyond, the exchange fails as 'lost' (nothing of it can be trusted). */
  maxAnswerBytes?: number;
  method: string;
  /** Path and query, starting with `/`. */
  path: string;
  headers: OutgoingHttpHeaders;
  body: Buffer | null;
}

export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface SuccessorClientOptions {
  /** The upstream's origin: `http:` or `https:`, host and port. */
  url: URL;
  /** PEM certificates trusted for an https upstream instead of the default ones. */
  ca?: string | undefined;
  /** Connections open at once, in use or idle; a call beyond waits for one. */
  maxSockets: number;
  /** Idle connections kept for the next call. */
  maxIdleSockets: number;
  /** An idle connection is closed after this long, well before the upstream's own keep-alive timeout. */
  idleTimeoutMs: number;
  /** The deadline of a whole exchange, waiting for a connection included. */
  timeoutMs: number;
}

export interface SuccessorClient {
  /** One buffered exchange. Never retried: a write may have been applied. Rejects with UpstreamError. */
  send(request: UpstreamRequest): Promise<UpstreamResponse>;
  /** Closes every connection; calls in flight fail as 'lost'. */
  close(): void;
}

/** node:http's default limit on an answer's head (--max-http-header-size). */
const MAX_HEAD_BYTES = 16 * 1024;
// node:http's rule for a request target (no space, no CTL); it does not export it, unlike its header checks.
const INVALID_TARGET = /[^\u0021-\u00ff]/;
// `Keep-Alive: timeout=N` (RFC 2068 §19.7.1.1), wherever the parameter stands in the field.
const KEEP_ALIVE_TIMEOUT = /(?:^|[\s,;])timeout\s*=\s*(\d+)/i;

/** What a connection is doing now: carrying one exchange, or idle in the pool (undefined). */
interface Exchange {
  data(chunk: Buffer): void;
  end(): void;
  fail(error: Error): void;
}

/** A call waiting for a connection, over maxSockets. */
interface Waiter {
  start(connection: Connection): void;
  fail(error: Error): void;
}

interface Connection {
  readonly socket: net.Socket;
  exchange: Exchange | undefined;
  /**
   * Connected, and past the TLS handshake on an https upstream. Before that no byte of a request can have
   * left, whatever the socket's error says (a reset handshake, a plain-HTTP port behind an https URL).
   */
  established: boolean;
  idleSince: number;
  /** How long it may stay idle: idleTimeoutMs, or less when the upstream said it closes sooner. */
  idleLimitMs: number;
}

/**
 * The request's head and body as one buffer: one write, one segment for a small call. Header values are
 * checked as node:http checks them, so no client value can split the request.
 */
export function serialiseRequest(request: UpstreamRequest): Buffer {
  if (INVALID_TARGET.test(request.path))
    throw new TypeError('the request target contains invalid characters');
  let head = `${request.method} ${request.path} HTTP/1.1\r\n`;
  let connection = false;
  for (const name in request.headers) {
    const value = request.headers[name];
    if (value === undefined) continue;
    validateHeaderName(name);
    if (name === 'connection') connection = true;
    if (Array.isArray(value)) {
      for (const item of value) head += fieldLine(name, String(item));
    } else {
      head += fieldLine(name, String(value));
    }
  }
  // The connection is pooled (RFC 9112 §9.3): said outright, as node:http's keep-alive agent says it.
  if (!connection) head += 'connection: keep-alive\r\n';
  head += '\r\n';
  const headLength = Buffer.byteLength(head, 'latin1');
  const bytes = Buffer.allocUnsafe(headLength + (request.body?.length ?? 0));
  bytes.write(head, 0, 'latin1');
  request.body?.copy(bytes, headLength);
  return bytes;
}

/**
 * How long a connection may idle in the pool: the configured limit, or less when the answer said
 * `Keep-Alive: timeout=N` (RFC 2068 §19.7.1.1; a proxy in front of Nango may close sooner than Nango's 61 s),
 * with two seconds to spare for the sweep and the upstream's own timer. Zero or less: not pooled.
 */
export function idleLimit(hint: string | string[] | undefined, idleTimeoutMs: number): number {
  const match = typeof hint === 'string' ? KEEP_ALIVE_TIMEOUT.exec(hint) : null;
  if (!match) return idleTimeoutMs;
  return Math.min(idleTimeoutMs, Number(match[1]) * 1000 - 2000);
}

function fieldLine(name: string, value: string): string {
  validateHeaderValue(name, value);
  return `${name}: ${value}\r\n`;
}

/**
 * The translated calls' own HTTP/1.1 client: a pool of keep-alive connections to the upstream and one
 * buffered exchange at a time on each. node:http's ClientRequest, Agent and IncomingMessage cost a
 * translated call 70-95 µs of its ~330 µs of CPU at 1 connection (A/B, docs/performance.md); a small JSON
 * exchange needs none of their streaming. Pass-through traffic keeps http-proxy-3 and its agent.
 */
export function createSuccessorClient({
  url,
  ca,
  maxSockets,
  maxIdleSockets,
  idleTimeoutMs,
  timeoutMs,
}: SuccessorClientOptions): SuccessorClient {
  const secure = url.protocol === 'https:';
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(url.port) || (secure ? 443 : 80);
  // RFC 6066 §3: no server name for an address literal.
  const servername = net.isIP(host) === 0 ? host : undefined;
  const idle: Connection[] = [];
  const open = new LiveList<Connection>();
  const waiting: Waiter[] = [];
  let closed = false;

  // One timer for the whole pool instead of one per idle connection: an idle connection lives at most
  // idleTimeoutMs plus one sweep.
  const sweep = setInterval(
    () => {
      const now = performance.now();
      for (const connection of [...idle]) {
        if (now - connection.idleSince >= connection.idleLimitMs) discard(connection);
      }
    },
    Math.max(10, Math.min(1000, idleTimeoutMs)),
  );
  sweep.unref();

  function connect(): Connection {
    const socket = secure
      ? tls.connect({ host, port, servername, ca, rejectUnauthorized: true })
      : net.connect({ host, port });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 1000);
    const connection: Connection = {
      socket,
      exchange: undefined,
      established: false,
      idleSince: 0,
      idleLimitMs: idleTimeoutMs,
    };
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      connection.established = true;
    });
    // Listeners for the connection's whole life, not per exchange: an idle connection that hears anything
    // (bytes, the upstream closing it) is out of the pool.
    socket.on('data', (chunk: Buffer) => {
      if (connection.exchange) connection.exchange.data(chunk);
      else discard(connection);
    });
    socket.on('end', () => {
      if (connection.exchange) connection.exchange.end();
      else discard(connection);
    });
    socket.on('error', (error) => {
      if (connection.exchange) connection.exchange.fail(error);
      else discard(connection);
    });
    socket.on('close', () => {
      connection.exchange?.fail(new Error('the connection to the upstream closed before the answer'));
      forget(connection);
    });
    open.add(connection);
    return connection;
  }

  function discard(connection: Connection): void {
    connection.exchange = undefined;
    const index = idle.indexOf(connection);
    if (index !== -1) idle.splice(index, 1);
    connection.socket.destroy();
  }

  /** A connection that closed: out of the pool, and its place goes to a call waiting for one. */
  function forget(connection: Connection): void {
    const index = idle.indexOf(connection);
    if (index !== -1) idle.splice(index, 1);
    open.delete(connection);
    const next = closed ? undefined : waiting.shift();
    if (next) next.start(connect());
  }

  function acquire(waiter: Waiter): void {
    // Last in, first out: the most recently used connection is the least likely to be closing.
    for (let connection = idle.pop(); connection; connection = idle.pop()) {
      if (connection.socket.destroyed) continue;
      connection.socket.ref();
      waiter.start(connection);
      return;
    }
    if (open.size < maxSockets) waiter.start(connect());
    else waiting.push(waiter);
  }

  function release(connection: Connection, reusable: boolean, idleLimitMs: number): void {
    connection.exchange = undefined;
    if (!reusable || idleLimitMs <= 0 || closed || connection.socket.destroyed) {
      connection.socket.destroy();
      return;
    }
    const next = waiting.shift();
    if (next) {
      next.start(connection);
      return;
    }
    if (idle.length >= maxIdleSockets) {
      connection.socket.destroy();
      return;
    }
    connection.idleSince = performance.now();
    connection.idleLimitMs = idleLimitMs;
    connection.socket.unref();
    idle.push(connection);
  }

  function send(request: UpstreamRequest): Promise<UpstreamResponse> {
    return new Promise((resolve, reject) => {
      const bytes = serialiseRequest(request);
      const parser = new ResponseParser({
        maxHeadBytes: MAX_HEAD_BYTES,
        maxBodyBytes: request.maxAnswerBytes ?? Number.POSITIVE_INFINITY,
        headRequest: request.method === 'HEAD',
      });
      let connection: Connection | undefined;
      let settled = false;
      let sent = false;
      const settle = () => {
        settled = true;
        clearTimeout(deadline);
      };
      const fail = (error: Error) => {
        if (settled) return;
        settle();
        if (connection) {
          connection.exchange = undefined;
          connection.socket.destroy();
        } else {
          const index = waiting.indexOf(waiter);
          if (index !== -1) waiting.splice(index, 1);
        }
        reject(new UpstreamError(classifyFailure(error, sent, connection?.established === true), error));
      };
      const complete = (answer: ParsedResponse) => {
        if (settled) return;
        settle();
        // An answer that came before the whole request was written (an early 413, say) leaves the rest of
        // the request in the connection: it is never reused.
        release(
          connection as Connection,
          answer.reusable && sent,
          idleLimit(answer.headers['keep-alive'], idleTimeoutMs),
        );
        resolve({ status: answer.status, headers: answer.headers, body: answer.body });
      };
      const exchange: Exchange = {
        data(chunk) {
          try {
            const answer = parser.push(chunk);
            if (answer) complete(answer);
          } catch (error) {
            fail(error as Error);
          }
        },
        end() {
          try {
            const answer = parser.end();
            complete({ ...answer, reusable: false });
          } catch (error) {
            fail(error as Error);
          }
        },
        fail,
      };
      const markSent = () => {
        sent = true;
      };
      const waiter: Waiter = {
        start(assigned) {
          connection = assigned;
          assigned.exchange = exchange;
          assigned.socket.write(bytes, markSent);
        },
        fail,
      };
      // A translated call is one small JSON exchange: it gets a deadline for the whole of it, so an upstream
      // that trickles its answer a byte at a time is cut like a silent one.
      const deadline = setTimeout(() => fail(timeoutError(timeoutMs)), timeoutMs);
      if (closed) {
        fail(new Error('the successor client is closed'));
        return;
      }
      acquire(waiter);
    });
  }

  return {
    send,
    close() {
      closed = true;
      clearInterval(sweep);
      for (const waiter of waiting.splice(0)) waiter.fail(new Error('the successor client is closed'));
      for (const connection of open.toArray()) connection.socket.destroy();
    },
  };
}
