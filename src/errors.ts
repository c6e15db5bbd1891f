/**
 * The one catalogue of answers the shim produces itself. Every body is in Nango's own StdError shape
 * (`{"error":{"code":…}}`, nango-api.md §3) so a legacy client's error handling keeps working.
 * Nothing else in src/ invents a status code or an error code.
 */

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
  internal: { status: 500, code: 'shim_internal_error' },
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
