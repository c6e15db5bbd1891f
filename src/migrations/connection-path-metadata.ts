import { parse as parseQuery } from 'node:querystring';
import { syntacticAuthFailure } from '../api-key.js';
import {
  authErrorAnswer,
  errorAnswer,
  genericErrorAnswer,
  type LocalAnswer,
  legacyUnknownConnection,
  type ValidationIssue,
} from '../errors.js';
import type { OperationValidators } from '../openapi.js';
import { isPlainObject } from '../plain-object.js';
import { checkBeforeAuth, reserialise, SUCCESSOR_PATH } from './connection-metadata.js';
import {
  ACCEPTED,
  errorOf,
  type ForwardedPrediction,
  type LegacyRequest,
  type Migration,
  type RequestUpResult,
  renameRateLimitPath,
  routePattern,
} from './migration.js';
import { routeParam } from './request-line.js';

export interface PathMetadataContext {
  /** The legacy success body: the route's own parse of the request, re-serialised (`res.send(req.body)`). */
  echo: Buffer;
  successStatus: number;
  /** The ids as the legacy handler saw them, for its own 404 body. */
  connectionId: string;
  providerConfigKey: string;
  /** The path as received: Nango's 429 body names the path that was called. */
  legacyPath: string;
}

type Result = RequestUpResult<PathMetadataContext>;

/** Express 5 decodes route parameters with decodeURIComponent; a malformed escape fails the route match. */
function decodeParam(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

/**
 * `req.query['provider_config_key'] || req.get('Provider-Config-Key')` (connection.controller.ts
 * setMetadataLegacy/updateMetadataLegacy): an empty query value falls back to the header; other query
 * parameters are ignored (path-style.json "extra query param (not rejected)"). A repeated query key stays
 * an array, as Express 5's query parser (node:querystring) gives it.
 */
function providerConfigKeyOf(request: LegacyRequest): string | string[] | undefined {
  const fromQuery = parseQuery(request.query).provider_config_key;
  if (fromQuery !== undefined && fromQuery !== '') return fromQuery;
  const header = request.headers['provider-config-key'];
  const fromHeader = Array.isArray(header) ? header.join(', ') : header;
  return fromHeader === undefined || fromHeader === '' ? undefined : fromHeader;
}

/**
 * A metadata key the successor cannot store as the path-style handler did (it stored any JSON object as it
 * came), judged as Nango's zod 4.0.5 record does (v4/core schemas.js $ZodRecord, util.js isPlainObject):
 * - `__proto__` is skipped, and the successor answers success having stored nothing for it;
 * - `constructor` makes zod read `metadata.constructor.prototype.isPrototypeOf`: unless that is there, the whole
 *   object is refused as "expected record, received object" (a TypeError, Nango's 500, when it is null).
 * Own keys only: the object is JSON.parse's, whose `__proto__` is a plain own key, never its prototype.
 */
function unstorableMetadataIssue(metadata: Record<string, unknown>): ValidationIssue | undefined {
  if (Object.hasOwn(metadata, '__proto__')) {
    return { code: 'invalid_key', message: 'Invalid key in record', path: ['metadata', '__proto__'] };
  }
  if (!Object.hasOwn(metadata, 'constructor')) return undefined;
  const ctor = metadata.constructor;
  const prototype = isPlainObject(ctor) && Object.hasOwn(ctor, 'prototype') ? ctor.prototype : undefined;
  if (isPlainObject(prototype) && Object.hasOwn(prototype, 'isPrototypeOf')) return undefined;
  return {
    code: 'invalid_type',
    message: 'Invalid input: expected record, received object',
    path: ['metadata'],
  };
}

/**
 * An answer Nango gave only after authenticating the call: the verdict the Authorization header alone
 * already proves comes first (nango-api.md "Order of checks"). A well-formed key that matches no account is
 * the one case only the upstream can tell, and would have been a 401 there.
 */
function answerAfterAuth(request: LegacyRequest, answer: LocalAnswer): Result {
  const auth = syntacticAuthFailure(request.headers.authorization);
  return { kind: 'answer', answer: auth ? authErrorAnswer(auth) : answer };
}

/**
 * Path-style `POST`/`PATCH /connection/:connectionId/metadata` (@nangohq/node ≤ 0.39.28: the body is the
 * raw metadata, the integration in `?provider_config_key` or `Provider-Config-Key`) → body-style
 * `POST`/`PATCH /connections/metadata` with `{connection_id, provider_config_key, metadata}`, and the answer
 * reshaped to what the path-style route said (path-style.json is the oracle):
 *
 * - Success echoes the raw metadata as parsed and re-serialised, 201 for POST and 200 for PATCH.
 * - An empty JSON body is `{}`; a JSON array merges as `{"0":…,"1":…}` (the handler spreads it into the
 *   stored object), so the successor is sent that object while the answer echoes the array; a body in the
 *   new-style shape is stored verbatim as metadata, like any other object.
 * - The successor's 404 `unknown_connection` becomes the legacy NangoError 404 built from the ids.
 * - Ids or keys that the successor's schema refuses (nango-api.md §1 regexes, 255 characters) are not
 *   checked here: the successor is the only judge of its own schema, and its 400 `invalid_body` is passed
 *   through unchanged. The legacy route accepted any id, but a 404 would claim the connection does not exist
 *   (it may: older Nango versions created such ids) and a 200 would claim a write that did not happen; the
 *   400 names the offending field (`connection_id` or `provider_config_key`), which is the honest answer.
 * - Metadata keys the successor's zod record cannot store as sent (`__proto__`, `constructor`) are refused
 *   here with a 400 `invalid_body`, for the same reason: the successor would refuse them or, for
 *   `__proto__`, drop the key and answer success.
 * - Any other answer (401, 403, 5xx…) is passed through; a 429 names the legacy path, as Nango's own would.
 * - `successor` holds the successor's validators, used only by the validate stage to tell which calls the
 *   successor would refuse where the legacy route answered otherwise.
 *
 * Without Nango's database a few legacy answers can only be approximated, all before anything is written:
 * see the local answers below.
 */
export function createConnectionPathMetadataMigration(successor: {
  patch: OperationValidators;
  post: OperationValidators;
}): Migration<PathMetadataContext> {
  return {
    routeId: 'connection-path-metadata',
    name: 'PATCH|POST /connection/:connectionId/metadata',
    methods: ['PATCH', 'POST'],
    pattern: routePattern('/connection/(?<connectionId>[^/]+)/metadata'),
    successor: SUCCESSOR_PATH,
    readsBody: true,

    requestUp(request): Result {
      // Nango's JSON parser, then the content-type middleware mounted on /connection, run before routing.
      const { parsed, early } = checkBeforeAuth(request);
      if (early) return { kind: 'answer', answer: early };
      // Express decodes the id while matching the route, before its auth middleware runs; the failure
      // reaches Nango's generic error handler. Inferred from Express 5 and routes.ts, not captured.
      const connectionId = decodeParam(routeParam(request, 'connectionId'));
      if (connectionId === undefined) return { kind: 'answer', answer: genericErrorAnswer() };

      const providerConfigKey = providerConfigKeyOf(request);
      // The handler passes the missing key to a database query, which throws (path-style.json "missing
      // provider_config_key": 500 generic_error_support). No upstream call can reproduce that answer.
      if (providerConfigKey === undefined) return answerAfterAuth(request, genericErrorAnswer());
      // A repeated key reaches the lookup as an array, which matches no connection (inferred from the
      // handler; not captured). Nothing was written then, and nothing is now.
      if (Array.isArray(providerConfigKey)) {
        return answerAfterAuth(request, {
          status: 404,
          body: legacyUnknownConnection(connectionId, providerConfigKey),
        });
      }

      const isPost = request.method === 'POST';
      const value = parsed.kind === 'json' ? parsed.value : undefined;
      // POST stores the body as is. Without a JSON content type the body is left unparsed (undefined) and an
      // array is sent by the pg driver as a Postgres array literal: both make the replace query throw, a 500
      // after the connection lookup. Inferred from connection.service.ts, not captured; answered here so the
      // successor is never asked to store something the legacy route never stored.
      if (isPost && (value === undefined || Array.isArray(value))) {
        return answerAfterAuth(request, genericErrorAnswer());
      }
      // PATCH spreads the body into the stored object: nothing for an unparsed body (the legacy answer is
      // then an empty 200), index keys for an array (path-style.json "JSON array body").
      // body-parser's strict JSON is an object or an array.
      const metadata = (Array.isArray(value) ? { ...value } : (value ?? {})) as Record<string, unknown>;
      // The successor would refuse such a key, or drop it and claim the write: refused here, nothing written,
      // with the issue its schema gives (an invented one for `__proto__`, which it never reports).
      const unstorable = unstorableMetadataIssue(metadata);
      if (unstorable) return answerAfterAuth(request, errorAnswer('invalidBody', { errors: [unstorable] }));
      const echo = value === undefined ? '' : reserialise(value);
      const body = reserialise({
        connection_id: connectionId,
        provider_config_key: providerConfigKey,
        metadata,
      });
      // Nesting deep enough to exhaust the stack made Nango's own serialisation throw: its generic 500.
      if (echo === undefined || body === undefined) return answerAfterAuth(request, genericErrorAnswer());

      return {
        kind: 'forward',
        // The successor takes no query string at all (requireEmptyQuery); the legacy one ignored extras.
        request: { method: request.method, path: SUCCESSOR_PATH, body },
        context: {
          echo: Buffer.from(echo),
          successStatus: isPost ? 201 : 200,
          connectionId,
          providerConfigKey,
          legacyPath: request.path,
        },
      };
    },

    // The validate stage only: the successor's schema (the body-style route's, nango-api.md §1) judges the
    // rewritten call, so an id or key the legacy route accepted and the successor refuses is a difference.
    predictForwarded(request): ForwardedPrediction {
      const operation = request.method === 'POST' ? successor.post : successor.patch;
      // requestUp forwards what it serialised itself: always JSON text.
      return operation.validateBody(JSON.parse(String(request.body))) === null
        ? ACCEPTED
        : { kind: 'refused', status: 400, code: 'invalid_body' };
    },

    responseDown(response, context) {
      if (response.status >= 200 && response.status <= 299) {
        return { status: context.successStatus, body: context.echo };
      }
      const error = errorOf(response.body);
      if (response.status === 404 && error?.code === 'unknown_connection') {
        return {
          status: 404,
          body: Buffer.from(
            JSON.stringify(legacyUnknownConnection(context.connectionId, context.providerConfigKey)),
          ),
        };
      }
      return renameRateLimitPath(response, context.legacyPath) ?? { status: response.status };
    },
  };
}
