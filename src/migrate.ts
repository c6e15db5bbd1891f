import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import { JSON_TYPE, sendBytes, sendLocalAnswer } from './answer.js';
import { AnswerDecodeError, decodeAnswer } from './answer-coding.js';
import type { RouteId } from './config.js';
import { errorAnswer, type LocalAnswer, nangoTooManyRequestsBody } from './errors.js';
import { rewrittenEtag } from './etag.js';
import type { Forwarder } from './forward.js';
import {
  type LegacyRequest,
  type Migration,
  renameRateLimitPath,
  SAME_CONTROLLER,
} from './migrations/migration.js';
import { BodyError, readBody } from './read-body.js';
import { splitTarget } from './request-target.js';
import type { UpstreamResponse } from './successor-client.js';
import { UpstreamError, type UpstreamFailure } from './upstream-failure.js';
import { endToEndHeaders, successorRequestHeaders } from './upstream-headers.js';
import type { ValidationReport } from './usage.js';

/** How a translated call ended, for usage records. */
export type TranslationOutcome = 'translated' | 'rejected' | 'failed';

export interface TranslateOptions {
  forwarder: Forwarder;
  bodyLimitBytes: number;
  onUpstream?: ((routeId: RouteId, target: 'successor' | 'legacy', durationMs: number) => void) | undefined;
  /** Told when the successor exchange failed (for the log): the kind of failure and why. */
  onFailure?: ((failure: UpstreamFailure, reason: string) => void) | undefined;
}

const FAILURE_ANSWERS: Record<UpstreamFailure, LocalAnswer> = {
  unreachable: errorAnswer('upstreamUnreachable', {
    message: 'The upstream Nango server could not be reached.',
  }),
  timeout: errorAnswer('upstreamTimeout', { message: 'The upstream Nango server did not answer in time.' }),
  lost: errorAnswer('upstreamResponseLost', {
    message:
      'The connection to the upstream Nango server broke before its answer arrived; the call may have been applied.',
  }),
};

/**
 * An answer that arrived whole but cannot be read (corrupt compression, or too large once decoded): to the
 * client it is a lost answer, and the call may have been applied all the same.
 */
const UNREADABLE_ANSWER = errorAnswer('upstreamResponseLost', {
  message:
    'The answer of the upstream Nango server could not be read (corrupt or too large); the call may have been applied.',
});

export function upstreamFailureAnswer(failure: UpstreamFailure): LocalAnswer {
  return FAILURE_ANSWERS[failure];
}

/**
 * The largest successor answer a translated call reads, compressed or decoded: far above anything the
 * successor says to a translated call (the echo of a body under `server.bodyLimitBytes`, or an error),
 * and far below what would exhaust the process (a gzip bomb decodes a megabyte into a gigabyte).
 */
export function answerLimit(bodyLimitBytes: number): number {
  return Math.max(16 * 1024 * 1024, 4 * bodyLimitBytes);
}

export async function readLegacyBody(
  req: IncomingMessage,
  res: ServerResponse,
  limit: number,
): Promise<Buffer | undefined> {
  try {
    return await readBody(req, limit);
  } catch (error) {
    if (error instanceof BodyError && error.failure === 'too-large') {
      // The rest of the body is never read: the connection closes after the answer.
      res.shouldKeepAlive = false;
      sendLocalAnswer(
        res,
        errorAnswer('payloadTooLarge', { message: `The request body is larger than ${limit} bytes.` }),
        { connection: 'close' },
      );
      return undefined;
    }
    // A body that did not arrive whole is never forwarded, and nobody is left to answer.
    res.destroy();
    return undefined;
  }
}

/** What the validate stage read: the whole body, or one over the limit, as a stream of all its bytes. */
export type BodyToCheck = { kind: 'read'; bytes: Buffer } | { kind: 'over-limit'; stream: Readable };

/**
 * The validate stage's read, which must change nothing for the client. A body over the limit, which the
 * translation would refuse with 413 (readLegacyBody), still goes to the legacy route whole, as it does in
 * passthrough, where no body is limited: the chunks already read, then the rest as it comes. Undefined
 * when the body did not arrive whole (the connection is closed, nothing is forwarded).
 */
export async function readBodyToCheck(
  req: IncomingMessage,
  res: ServerResponse,
  limit: number,
): Promise<BodyToCheck | undefined> {
  try {
    return { kind: 'read', bytes: await readBody(req, limit) };
  } catch (error) {
    if (error instanceof BodyError && error.failure === 'too-large') {
      // A PassThrough, never ended early: a client that leaves mid-body closes the answer, and http-proxy-3
      // then abandons the upstream request instead of sending it as if whole.
      const stream = new PassThrough();
      for (const chunk of error.received) stream.write(chunk);
      req.pipe(stream);
      return { kind: 'over-limit', stream };
    }
    res.destroy();
    return undefined;
  }
}

function legacyRequest(
  req: IncomingMessage,
  params: Record<string, string>,
  body: Buffer | null,
  bodyLimitBytes: number,
): LegacyRequest {
  const { path, query } = splitTarget(req.url ?? '/');
  return { method: req.method ?? 'GET', path, query, params, headers: req.headers, body, bodyLimitBytes };
}

/** The validate stage: what the translation would do with this call, without doing it. */
export function checkTranslation(
  migration: Migration,
  req: IncomingMessage,
  params: Record<string, string>,
  body: BodyToCheck | null,
  bodyLimitBytes: number,
): ValidationReport {
  if (body?.kind === 'over-limit') {
    const { status, body: answer } = errorAnswer('payloadTooLarge');
    return { predictedStatus: status, predictedCode: answer.error.code, predictedBy: 'shim' };
  }
  const up = migration.requestUp(legacyRequest(req, params, body?.bytes ?? null, bodyLimitBytes));
  if (up.kind === 'answer') {
    return {
      predictedStatus: up.answer.status,
      predictedCode: up.answer.body.error.code,
      predictedBy: 'shim',
    };
  }
  const forwarded = migration.predictForwarded?.(up.request, up.context) ?? SAME_CONTROLLER;
  switch (forwarded.kind) {
    case 'same-controller':
      return { predictedStatus: undefined, predictedCode: undefined, predictedBy: 'same-controller' };
    case 'accepted':
      return { predictedStatus: undefined, predictedCode: undefined, predictedBy: 'successor' };
    case 'refused':
      return { predictedStatus: forwarded.status, predictedCode: forwarded.code, predictedBy: 'successor' };
  }
}

/**
 * Runs one translated call: read the body (only on owned routes, under the limit), rewrite it with the
 * migration, send it to the successor once, reshape the answer. A write that may have reached the upstream
 * is never retried: a lost answer becomes a 502, never a success.
 */
export async function translate(
  req: IncomingMessage,
  res: ServerResponse,
  migration: Migration,
  params: Record<string, string>,
  { forwarder, bodyLimitBytes, onUpstream, onFailure }: TranslateOptions,
): Promise<TranslationOutcome> {
  const body = migration.readsBody ? await readLegacyBody(req, res, bodyLimitBytes) : null;
  if (body === undefined) return 'rejected';
  const up = migration.requestUp(legacyRequest(req, params, body, bodyLimitBytes));
  if (up.kind === 'answer') {
    sendLocalAnswer(res, up.answer, up.answer.body.error.code === 'invalid_json' ? {} : CORS_HEADERS);
    return 'rejected';
  }
  if (!migration.responseDown) {
    // Only the request line changes: the answer streams back untouched, but for a 429, which names the
    // path that was called (rate-limit.json): the legacy client is told its own, as for every migration.
    const legacyPath = splitTarget(req.url ?? '/').path;
    req.url = up.request.path;
    req.method = up.request.method;
    timeStreamedExchange(res, migration.routeId, 'successor', onUpstream);
    forwarder.stream(req, res, {
      body: (body) => renameRateLimitPath({ status: 429, body }, legacyPath)?.body,
      // Nango's 429 names req.method and req.path: on a HEAD, the successor's body is known without reading it.
      headBody:
        up.request.method === 'HEAD'
          ? Buffer.from(JSON.stringify(nangoTooManyRequestsBody('HEAD', splitTarget(up.request.path).path)))
          : undefined,
    });
    return 'translated';
  }
  const headers = successorRequestHeaders(req.headers, forwarder.host, req.socket, up.request.body);
  let response: UpstreamResponse;
  const started = performance.now();
  try {
    const answer = await forwarder.send({
      maxAnswerBytes: answerLimit(bodyLimitBytes),
      method: up.request.method,
      path: up.request.path,
      headers,
      body: bodyBuffer(up.request.body),
    });
    response = decodeAnswer(answer, answerLimit(bodyLimitBytes));
  } catch (error) {
    if (error instanceof AnswerDecodeError) {
      sendLocalAnswer(res, UNREADABLE_ANSWER);
      return 'failed';
    }
    const failure = error instanceof UpstreamError ? error.failure : 'lost';
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
    onFailure?.(failure, cause instanceof Error ? cause.message : String(cause));
    sendLocalAnswer(res, upstreamFailureAnswer(failure));
    return 'failed';
  } finally {
    onUpstream?.(migration.routeId, 'successor', performance.now() - started);
  }
  const down = migration.responseDown(response, up.context);
  if (down.body === undefined) {
    sendBytes(res, down.status, endToEndHeaders(response.headers, SAME_BODY), response.body);
    return 'translated';
  }
  // A body the shim wrote is plain JSON: the upstream's length, validator, coding and type no longer describe
  // it. It gets the type Express gives res.send(object), as the legacy route's did (path-style.json); an empty
  // one is the legacy route's res.send(undefined), which Express sends with no type.
  const outgoing = endToEndHeaders(response.headers, REWRITTEN_BODY);
  if (down.body.length > 0) outgoing['content-type'] = JSON_TYPE;
  const etag = rewrittenEtag(response.headers.etag, down.body);
  if (etag !== undefined) outgoing.etag = etag;
  sendBytes(res, down.status, outgoing, down.body);
  return 'translated';
}

/**
 * Times an exchange whose answer streams to the client, until that answer is done or abandoned: as
 * pass-through is timed, since the shim never sees the upstream's last byte apart from the client's.
 */
export function timeStreamedExchange(
  res: ServerResponse,
  routeId: RouteId,
  target: 'successor' | 'legacy',
  onUpstream: TranslateOptions['onUpstream'],
): void {
  if (!onUpstream) return;
  const started = performance.now();
  res.on('close', () => onUpstream(routeId, target, performance.now() - started));
}

const SAME_BODY: ReadonlySet<string> = new Set(['content-length']);
const REWRITTEN_BODY: ReadonlySet<string> = new Set([
  'content-length',
  'etag',
  'content-encoding',
  'content-type',
]);

function bodyBuffer(body: string | Buffer | null): Buffer | null {
  return typeof body === 'string' ? Buffer.from(body) : body;
}

/** Nango answers every error but invalid_json with CORS headers (its JSON parser runs before cors). */
const CORS_HEADERS = {
  'access-control-allow-origin': '*',
};
