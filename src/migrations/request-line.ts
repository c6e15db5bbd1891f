import type { LegacyRequest, RequestUpResult } from './migration.js';

/** The successor's request line: its own path with the legacy query string kept byte for byte. */
export function withQuery(path: string, query: string): string {
  return query === '' ? path : `${path}?${query}`;
}

/**
 * A parameter the route pattern always captures. Its absence is a bug in the pattern, never in the
 * request: guessing a value instead could turn `GET /connection/x` into the list route `GET /connections/`.
 */
export function routeParam(request: LegacyRequest, name: string): string {
  const value = request.params[name];
  if (value === undefined || value === '')
    throw new Error(`migration: the route pattern captured no ${name}`);
  return value;
}

/**
 * `/connection/:connectionId` → `/connections/:connectionId`, method and query as received: the legacy and
 * successor routes share one controller, so only the request line changes and the answer streams back.
 */
export function forwardById(request: LegacyRequest): RequestUpResult<undefined> {
  const connectionId = routeParam(request, 'connectionId');
  return {
    kind: 'forward',
    request: {
      method: request.method,
      path: withQuery(`/connections/${connectionId}`, request.query),
      body: null,
    },
    context: undefined,
  };
}
