import { parse as parseQuery } from 'node:querystring';
import { syntacticAuthFailure } from '../api-key.js';
import { authErrorAnswer, errorAnswer, genericErrorAnswer, type ValidationIssue } from '../errors.js';
import { type JsonBody, parseJsonBody } from '../json-body.js';
import { type OperationValidators, unrecognizedKeysIssue } from '../openapi.js';
import {
  ACCEPTED,
  type LegacyRequest,
  type Migration,
  type RequestUpResult,
  renameRateLimitPath,
  routePattern,
} from './migration.js';

export const SUCCESSOR_PATH = '/connections/metadata';

export interface MetadataContext {
  /** The body as sent to the successor (UTF-8 bytes); the legacy answer echoes exactly this. */
  serialised: Buffer;
  successStatus: number;
  /** The path as received, for the 429 body. */
  legacyPath: string;
}

/**
 * Nango's jsonContentTypeMiddleware: a Content-Type, when present, must start with application/json. It tests
 * `req.headers['content-type'] && …`, so an empty field (`Content-Type:` with no value) counts as none.
 */
export function contentTypeRejected(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType !== '' && !contentType.startsWith('application/json');
}

/** zod's strict empty query (requireEmptyQuery): every key is unrecognised. */
export function queryIssues(query: string): ValidationIssue[] {
  // The usual call has no query string: nothing to parse.
  if (query === '') return [];
  const keys = Object.keys(parseQuery(query));
  if (keys.length === 0) return [];
  return [unrecognizedKeysIssue(keys)];
}

/**
 * Serialises what was validated, so the upstream receives exactly the value the shim checked (a duplicate
 * key or odd whitespace cannot be read two ways), as Nango's own echo does (nango-api.md "echo").
 * Undefined when the value cannot be serialised (nesting deep enough to exhaust the stack).
 */
export function reserialise(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined;
  }
}

export interface BodyCheck {
  /** Rejects the body before any check Nango makes after auth: bad JSON (400) and bad media type (415). */
  early?: ReturnType<typeof errorAnswer>;
  parsed: JsonBody;
}

/** The checks Nango makes before authenticating: the JSON parser first, then the content type. */
export function checkBeforeAuth(request: LegacyRequest): BodyCheck {
  const parsed = parseJsonBody(request.headers, request.body ?? Buffer.alloc(0), request.bodyLimitBytes);
  if (parsed.kind === 'invalid')
    return { parsed, early: errorAnswer('invalidJson', { message: parsed.message }) };
  // body-parser's failure to decode reaches Nango's error handler, which answers it as any unexpected error.
  if (parsed.kind === 'undecodable') return { parsed, early: genericErrorAnswer() };
  if (parsed.kind === 'too-large') {
    return {
      parsed,
      early: errorAnswer('payloadTooLarge', {
        message: `The request body decodes to more than ${request.bodyLimitBytes} bytes.`,
      }),
    };
  }
  if (contentTypeRejected(request.headers['content-type']) || parsed.kind === 'unsupported-charset') {
    return {
      parsed,
      early: errorAnswer('invalidContentType', { message: 'Content-Type header must be application/json' }),
    };
  }
  return { parsed };
}

/**
 * Nango authenticates before it validates (nango-api.md "Order of checks"): a request that fails
 * validation is answered with the auth error the header alone already proves, and only else with 400.
 * A valid request is always forwarded, so only the upstream ever judges a well-formed key.
 */
export function rejectAfterAuth(
  authorization: string | undefined,
  query: ValidationIssue[],
  body: ValidationIssue[] | null,
): ReturnType<typeof errorAnswer> | undefined {
  if (query.length === 0 && body === null) return undefined;
  const auth = syntacticAuthFailure(authorization);
  if (auth) return authErrorAnswer(auth);
  if (query.length > 0) return errorAnswer('invalidQueryParams', { errors: query });
  return errorAnswer('invalidBody', { errors: body ?? [] });
}

export function createConnectionMetadataMigration(validators: {
  patch: OperationValidators;
  post: OperationValidators;
}): Migration<MetadataContext> {
  return {
    routeId: 'connection-metadata',
    name: 'PATCH|POST /connection/metadata',
    methods: ['PATCH', 'POST'],
    pattern: routePattern('/connection/metadata'),
    successor: SUCCESSOR_PATH,
    readsBody: true,

    requestUp(request): RequestUpResult<MetadataContext> {
      const { parsed, early } = checkBeforeAuth(request);
      if (early) return { kind: 'answer', answer: early };
      const operation = request.method === 'POST' ? validators.post : validators.patch;
      const value = parsed.kind === 'json' ? parsed.value : undefined;
      let bodyIssues = operation.validateBody(value);
      const serialised = bodyIssues === null ? reserialise(value) : undefined;
      if (bodyIssues === null && serialised === undefined) {
        bodyIssues = [
          { code: 'too_big', message: 'Too big: metadata is nested too deeply', path: ['metadata'] },
        ];
      }
      const rejection = rejectAfterAuth(
        request.headers.authorization,
        queryIssues(request.query),
        bodyIssues,
      );
      if (rejection) return { kind: 'answer', answer: rejection };
      // One buffer for the request to the successor and the comparison with its echo.
      const bytes = Buffer.from(serialised as string);
      return {
        kind: 'forward',
        // The successor takes no query string at all (requireEmptyQuery): none is added.
        request: { method: request.method, path: SUCCESSOR_PATH, body: bytes },
        context: {
          serialised: bytes,
          successStatus: request.method === 'POST' ? 201 : 200,
          legacyPath: request.path,
        },
      };
    },

    // requestUp checks the body and query as Nango does: whatever it forwards, Nango judges alike.
    predictForwarded: () => ACCEPTED,

    responseDown(response, context) {
      if (response.status < 200 || response.status > 299) {
        return renameRateLimitPath(response, context.legacyPath) ?? { status: response.status };
      }
      // The legacy contract is the echo of the request (nango-api.md §2). Nango's successor answers the same
      // bytes; should an upstream ever answer otherwise, the legacy body is rebuilt from the request.
      return response.body.equals(context.serialised)
        ? { status: context.successStatus }
        : { status: context.successStatus, body: context.serialised };
    },
  };
}
