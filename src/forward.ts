import { readFileSync } from 'node:fs';
import http, {
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import https from 'node:https';
import { type Duplex, Readable } from 'node:stream';
import { createProxyServer } from 'http-proxy-3';
import type { Config } from './config.js';

/** Why an upstream exchange failed; each maps to one answer in the error catalogue. */
export type UpstreamFailure = 'unreachable' | 'timeout' | 'lost';

export class UpstreamError extends Error {
  readonly failure: UpstreamFailure;
  constructor(failure: UpstreamFailure, cause?: unknown) {
    super(`upstream ${failure}`, { cause });
    this.name = 'UpstreamError';
    this.failure = failure;
  }
}

export interface UpstreamRequest {
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

export type PassThroughErrorHandler = (
  failure: UpstreamFailure,
  error: Error,
  req: IncomingMessage,
  res: ServerResponse | Duplex,
) => void;

export interface Forwarder {
  /**
   * Streams a request to the upstream unchanged and the answer back (http-proxy-3). `body` replaces the
   * request stream when the shim has already read it (the validate stage), with the very same bytes.
   */
  web(req: IncomingMessage, res: ServerResponse, body?: Buffer): void;
  /** Passes a WebSocket upgrade through. */
  ws(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** One buffered exchange, for translated calls. Never retried: a write may have been applied. */
  send(request: UpstreamRequest): Promise<UpstreamResponse>;
  /** The upstream's `host[:port]`, for the Host header of translated calls. */
  readonly host: string;
  close(): void;
}

const CONNECT_FAILURES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
]);
const TIMED_OUT = Symbol('timed out');
const NO_OPTIONS = Object.freeze({});

interface TimeoutMarked extends Error {
  [TIMED_OUT]?: true;
}

/** Classifies a failed exchange: before the request left (unreachable), no answer in time, or cut. */
export function classifyFailure(error: Error, requestSent: boolean): UpstreamFailure {
  if ((error as TimeoutMarked)[TIMED_OUT]) return 'timeout';
  const code = (error as NodeJS.ErrnoException).code ?? '';
  if (!requestSent && CONNECT_FAILURES.has(code)) return 'unreachable';
  if (CONNECT_FAILURES.has(code) && code !== 'ECONNABORTED') return 'unreachable';
  return 'lost';
}

function timeoutError(ms: number): TimeoutMarked {
  const error: TimeoutMarked = new Error(`no answer from the upstream within ${ms} ms`);
  error[TIMED_OUT] = true;
  return error;
}

export function createForwarder(config: Config, onPassThroughError: PassThroughErrorHandler): Forwarder {
  const target = new URL(config.upstream.url);
  const secure = target.protocol === 'https:';
  const ca = config.upstream.caFile ? readFileSync(config.upstream.caFile, 'utf8') : undefined;
  const agentOptions = {
    keepAlive: true,
    maxSockets: config.upstream.maxSockets,
    maxFreeSockets: Math.min(64, config.upstream.maxSockets),
    // Below Nango's own keep-alive timeout (61 s) so the shim never reuses a socket the upstream is closing.
    timeout: 55_000,
    scheduling: 'lifo' as const,
  };
  const agent = secure
    ? new https.Agent({ ...agentOptions, ca, rejectUnauthorized: true })
    : new http.Agent(agentOptions);
  const timeoutMs = config.upstream.timeoutMs;
  const host = target.host;
  const basePath = target.pathname.replace(/\/$/, '');

  const proxy = createProxyServer({
    // A URL, not a string: http-proxy-3 parses a string target again on every request.
    target,
    agent,
    xfwd: true,
    changeOrigin: true,
    secure: true,
    ws: true,
    ...(ca ? { ca } : {}),
  });
  // A no-answer timeout measured on the upstream socket, so 504 can be told apart from a reset.
  proxy.on('proxyReq', (proxyReq) => {
    proxyReq.setTimeout(timeoutMs, () => proxyReq.destroy(timeoutError(timeoutMs)));
  });
  const handleProxyError = (error: Error, req: IncomingMessage, res: ServerResponse | Duplex) => {
    onPassThroughError(classifyFailure(error, false), error, req, res);
  };
  // http-proxy-3 throws when nobody handles `error`: every call passes handleProxyError, and this is the net.
  proxy.on('error', handleProxyError);

  function send(request: UpstreamRequest): Promise<UpstreamResponse> {
    return new Promise((resolve, reject) => {
      let sent = false;
      const upstreamRequest = (secure ? https : http).request({
        protocol: target.protocol,
        hostname: target.hostname,
        port: target.port,
        method: request.method,
        path: basePath + request.path,
        headers: request.headers,
        agent,
      });
      upstreamRequest.setTimeout(timeoutMs, () => upstreamRequest.destroy(timeoutError(timeoutMs)));
      upstreamRequest.on('error', (error) => reject(new UpstreamError(classifyFailure(error, sent), error)));
      upstreamRequest.on('finish', () => {
        sent = true;
      });
      upstreamRequest.on('response', (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', (error) => reject(new UpstreamError('lost', error)));
        response.on('aborted', () => reject(new UpstreamError('lost')));
        response.on('end', () => {
          if (!response.complete) return reject(new UpstreamError('lost'));
          resolve({
            status: response.statusCode ?? 502,
            headers: response.headers,
            body: Buffer.concat(chunks),
          });
        });
      });
      upstreamRequest.end(request.body ?? undefined);
    });
  }

  return {
    host,
    web(req, res, body) {
      proxy.web(
        req,
        res,
        body === undefined ? NO_OPTIONS : { buffer: Readable.from([body]) },
        handleProxyError,
      );
    },
    ws(req, socket, head) {
      proxy.ws(req, socket, head, NO_OPTIONS, handleProxyError);
    },
    send,
    close() {
      proxy.close();
      agent.destroy();
    },
  };
}
