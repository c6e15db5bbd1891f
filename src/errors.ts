/**
 * The one catalogue of answers the shim produces itself. Every body is in Nango's own StdError shape
 * (`{"error":{"code":…}}`, nango-api.md §3) so a legacy client's error handling keeps working.
 * Nothing else in src/ invents a status code or an error code.
 */

import { randomUUID } from 'node:crypto';

export interface ValidationIssue {
  code: string;
  message: string;
  path: string[];
}

export interface ErrorBody {
  error: {
    code: string;
    message?: string;
    errors?: ValidationIssue[];
    payload?: unknown;
    method?: string;
    path?: string;
  };
}

export interface LocalAnswer {
  status: number;
  body: ErrorBody;
}

const CATALOGUE = {
  invalidJson: { status: 400, code: 'invalid_json' },
  invalidContentType: { status: 415, code: 'invalid_content_type' },
  invalidQueryParams: { status: 400, code: 'invalid_query_params' },
  invalidBody: { status: 400, code: 'invalid_body' },
  missingAuthHeader: { status: 401, code: 'missing_auth_header' },
  invalidSecretKeyFormat: { status: 401, code: 'invalid_secret_key_format' },
  payloadTooLarge: { status: 413, code: 'payload_too_large' },
  gone: { status: 410, code: 'endpoint_gone' },
  tooManyRequests: { status: 429, code: 'too_many_request' },
  upstreamUnreachable: { status: 502, code: 'upstream_unreachable' },
  upstreamResponseLost: { status: 502, code: 'upstream_response_lost' },
  upstreamTimeout: { status: 504, code: 'upstream_timeout' },
  unauthorized: { status: 401, code: 'unauthorized' },
  notFound: { status: 404, code: 'not_found' },
  rateLimitUnavailable: { status: 503, code: 'rate_limit_unavailable' },
  ledgerUnavailable: { status: 503, code: 'ledger_unavailable' },
  internal: { status: 500, code: 'shim_internal_error' },
  invalidRequestTarget: { status: 400, code: 'invalid_request_target' },
  badRequest: { status: 400, code: 'bad_request' },
  requestTimeout: { status: 408, code: 'request_timeout' },
  headersTooLarge: { status: 431, code: 'request_header_fields_too_large' },
  methodNotAllowed: { status: 405, code: 'method_not_allowed' },
  unsupportedUpgrade: { status: 400, code: 'unsupported_upgrade' },
} as const;

export type ErrorName = keyof typeof CATALOGUE;

export function errorStatus(name: ErrorName): number {
  return CATALOGUE[name].status;
}

/** The codes the shim itself can answer with, for the README and tests. */
export function listErrorCodes(): Array<{ name: ErrorName; status: number; code: string }> {
  return (Object.keys(CATALOGUE) as ErrorName[]).map((name) => ({ name, ...CATALOGUE[name] }));
}

export function errorAnswer(
  name: ErrorName,
  detail: { message?: string; errors?: ValidationIssue[]; payload?: unknown } = {},
): LocalAnswer {
  const { status, code } = CATALOGUE[name];
  // Key order follows Nango's own bodies: StdError puts `code` first (metadata-patch.json "invalid body {}").
  const error: ErrorBody['error'] = { code };
  if (detail.message !== undefined) error.message = detail.message;
  if (detail.errors !== undefined) error.errors = detail.errors;
  if (detail.payload !== undefined) error.payload = detail.payload;
  return { status, body: { error } };
}

/**
 * Nango's 401 bodies come from NangoError, whose key order is message, code, payload
 * (metadata-patch.json "no Authorization header"). Byte-exact matters: SDKs surface the body as is.
 */
export function authErrorAnswer(name: 'missingAuthHeader' | 'invalidSecretKeyFormat'): LocalAnswer {
  const message =
    name === 'missingAuthHeader'
      ? 'Authentication failed. The request is missing the Authorization header.'
      : 'Authentication failed. The provided secret key is not a UUID v4.';
  const { status, code } = CATALOGUE[name];
  return { status, body: { error: { message, code, payload: {} } as ErrorBody['error'] } };
}

/**
 * Nango's own 429 names the request, not the limit: `{"error":{"code":"too_many_request","method":…,"path":…}}`
 * (rate-limit.json). The shim keeps those fields and adds a message saying the limit is the shim's.
 */
export function tooManyRequestsAnswer(method: string, path: string, message: string): LocalAnswer {
  const { status, code } = CATALOGUE.tooManyRequests;
  return { status, body: { error: { code, message, method, path } } };
}

/**
 * Nango's own 429 body, as its rate limiter sends it: `{error: {code, method: req.method, path: req.path}}`
 * (rate-limit.json). For a HEAD answer, whose body is never sent but whose length and ETag describe it.
 */
export function nangoTooManyRequestsBody(method: string, path: string): ErrorBody {
  return { error: { code: CATALOGUE.tooManyRequests.code, method, path } };
}

/**
 * Nango's generic error handler for an exception it did not expect: 500 with a fresh id each time, in
 * NangoError's key order (path-style.json "PATCH path-style missing provider_config_key").
 */
export function genericErrorAnswer(id: string = randomUUID()): LocalAnswer {
  const error = {
    message: `An error occurred. Please contact support with this unique id: "${id}"`,
    code: 'generic_error_support',
    payload: id,
  };
  return { status: 500, body: { error: error as ErrorBody['error'] } };
}

/**
 * The legacy route's own 404, a NangoError built from the ids it looked up (path-style.json "PATCH
 * path-style unknown connection"): NangoError appends its payload, pretty-printed, to the message.
 */
export function legacyUnknownConnection(connectionId: string, providerConfigKey: unknown): ErrorBody {
  const payload = { connectionId, providerConfigKey };
  const message = `No connection matching the provided params of 'connection_id' and 'provider_config_key'. Please make sure these values exist in the Nango dashboard ${JSON.stringify(payload, null, 2)}`;
  return { error: { message, code: 'unknown_connection', payload } };
}
