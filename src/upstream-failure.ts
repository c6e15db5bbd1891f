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

const CONNECT_FAILURES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
]);
/**
 * A certificate the upstream's TLS handshake did not pass (untrusted, expired, wrong name): no byte of the
 * request left, so the upstream is unreachable as configured, never "the call may have been applied".
 */
const CERTIFICATE_REJECTED = /CERT|^UNABLE_TO_|^HOSTNAME_MISMATCH$|^INVALID_CA$/;
const TIMED_OUT = Symbol('timed out');

interface TimeoutMarked extends Error {
  [TIMED_OUT]?: true;
}

/**
 * Classifies a failed exchange: before the request left (unreachable), no answer in time, or cut. `connected`
 * says the connection got past connecting (and its TLS handshake): a failure before that is unreachable,
 * whatever its code, as no byte of the request can have left. Pass-through tells it by the error of a socket
 * that failed before it was established (forward.ts, markFailuresBeforeEstablished).
 */
export function classifyFailure(error: Error, requestSent: boolean, connected = true): UpstreamFailure {
  if ((error as TimeoutMarked)[TIMED_OUT]) return 'timeout';
  if (!connected) return 'unreachable';
  const code = (error as NodeJS.ErrnoException).code ?? '';
  if (CERTIFICATE_REJECTED.test(code)) return 'unreachable';
  if (!requestSent && CONNECT_FAILURES.has(code)) return 'unreachable';
  if (CONNECT_FAILURES.has(code) && code !== 'ECONNABORTED') return 'unreachable';
  return 'lost';
}

/** The error of an exchange that had no answer in time; classifyFailure reads it as 'timeout'. */
export function timeoutError(ms: number): Error {
  const error: TimeoutMarked = new Error(`no answer from the upstream within ${ms} ms`);
  error[TIMED_OUT] = true;
  return error;
}
