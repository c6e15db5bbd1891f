import type { IncomingHttpHeaders } from 'node:http';
import type { RouteId } from '../config.js';
import type { LocalAnswer } from '../errors.js';

/** A legacy call as the migration sees it: plain data, no sockets. */
export interface LegacyRequest {
  method: string;
  /** The raw path, as received (not decoded). */
  path: string;
  /** The raw query string without `?`; '' when there is none. */
  query: string;
  /** Parameters captured by the route pattern, still percent-encoded. */
  params: Record<string, string>;
  headers: IncomingHttpHeaders;
  /** The whole body, for migrations that read it; null otherwise. */
  body: Buffer | null;
  /** The most bytes the body may decode to under its Content-Encoding (server.bodyLimitBytes); absent: any. */
  bodyLimitBytes?: number;
}

/** What goes to the upstream instead: a new request line and, where it changes, a new body. */
export interface SuccessorRequest {
  method: string;
  /** Path and query on the upstream, starting with `/`. */
  path: string;
  /** A JSON body to send, already serialised (text or its UTF-8 bytes); null to send none. */
  body: string | Buffer | null;
}

export type RequestUpResult<Context> =
  | { kind: 'answer'; answer: LocalAnswer }
  | { kind: 'forward'; request: SuccessorRequest; context: Context };

/**
 * What the validate stage can tell, from the request alone, of how the translation would answer a call that
 * `requestUp` forwards (its local answers are compared as they are):
 * - `same-controller`: the successor is the legacy route's own controller under a new path, so whatever the
 *   legacy route answers, errors included, is what the translation answers (connection-get.json).
 * - `accepted`: the successor decides, and `requestUp` already refuses everything Nango refuses as malformed:
 *   a legacy 400 or 415 means the translation would let through what Nango rejects.
 * - `refused`: the successor's schema would refuse the rewritten call with this status and code, after
 *   authenticating it and counting it against the rate limit, where the legacy route may have accepted it.
 */
export type ForwardedPrediction =
  | { kind: 'same-controller' }
  | { kind: 'accepted' }
  | { kind: 'refused'; status: number; code: string };

export const SAME_CONTROLLER: ForwardedPrediction = Object.freeze({ kind: 'same-controller' });
export const ACCEPTED: ForwardedPrediction = Object.freeze({ kind: 'accepted' });

export interface LegacyAnswer {
  status: number;
  /** The JSON body to send; undefined keeps the upstream's bytes (and its Content-Length/ETag/Content-Type). */
  body?: Buffer;
}

/**
 * One deprecated operation and how it maps onto its successor. Everything here is pure: the proxy
 * supplies the bytes and sends what comes back. Adding a deprecated endpoint is a new Migration and a test.
 */
export interface Migration<Context = unknown> {
  /** The config key under `routes.` that holds this route's stage and deprecation dates. */
  routeId: RouteId;
  /** Methods and path this migration owns, e.g. `PATCH /connection/metadata`. */
  name: string;
  methods: readonly string[];
  /** Matched against the raw path; Nango routes are case-insensitive and accept one trailing slash. */
  pattern: RegExp;
  /** The successor, for the `Link: rel="successor-version"` header and the 410 message. */
  successor: string;
  /** Whether the migration needs the request body (bodies are only read on routes that need them). */
  readsBody: boolean;
  /** Rewrites the legacy request, or answers it locally exactly as Nango would have. */
  requestUp(request: LegacyRequest): RequestUpResult<Context>;
  /**
   * The validate stage only: how the successor would answer the call `requestUp` forwards. Absent: the
   * successor is the legacy route's own controller (`same-controller`), as for every streamed migration.
   */
  predictForwarded?(request: SuccessorRequest, context: Context): ForwardedPrediction;
  /**
   * Reshapes the successor's answer into the legacy contract. Absent: the answer is streamed back as it is
   * (only the request line changed), so large answers are never buffered.
   */
  responseDown?(
    response: { status: number; headers: IncomingHttpHeaders; body: Buffer },
    context: Context,
  ): LegacyAnswer;
}

export function routePattern(source: string): RegExp {
  // Express's default router: case-insensitive, one optional trailing slash (metadata-patch.json
  // "trailing slash path", "upper-case path").
  return new RegExp(`^${source}/?$`, 'i');
}

/** The `error` object of a Nango error body, if the bytes are one. */
export function errorOf(body: Buffer): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const error = (parsed as { error?: unknown }).error;
    return typeof error === 'object' && error !== null ? (error as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * rate-limit.json: Nango's 429 body names the method and path that was called. A translated call was made on
 * the successor's path; the legacy client is told its own.
 */
export function renameRateLimitPath(
  response: { status: number; body: Buffer },
  legacyPath: string,
): LegacyAnswer | undefined {
  if (response.status !== 429) return undefined;
  const error = errorOf(response.body);
  if (error?.code !== 'too_many_request' || error.path === legacyPath) return undefined;
  return { status: 429, body: Buffer.from(JSON.stringify({ error: { ...error, path: legacyPath } })) };
}
