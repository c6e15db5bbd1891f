import { unescape as unescapeQuery } from 'node:querystring';
import type { Migration, RequestUpResult } from './migration.js';
import { routePattern } from './migration.js';
import { withQuery } from './request-line.js';

/**
 * The deprecated list filters and the tags that replace them (nango-api.md §6). A Map, not an object
 * literal, so a key such as `constructor` can never match a prototype property.
 */
const RENAMED_FILTERS = new Map([
  ['endUserId', 'tags[end_user_id]'],
  ['endUserOrganizationId', 'tags[organization_id]'],
]);

/**
 * Renames the deprecated filters and leaves every byte of everything else alone: values keep their
 * percent-encoding, other parameters keep their place. Keys are compared decoded, the way Nango's query
 * parser (node:querystring under Express 5) reads them, so `end%55serId` is renamed too. The new key is
 * written with literal brackets, as Nango's docs write it; a query parser decodes `%5B`/`%5D` to the same key.
 */
export function rewriteListQuery(query: string): string {
  if (query === '') return query;
  return query
    .split('&')
    .map((pair) => {
      const equals = pair.indexOf('=');
      const rawKey = equals === -1 ? pair : pair.slice(0, equals);
      const renamed = RENAMED_FILTERS.get(unescapeQuery(rawKey.replaceAll('+', ' ')));
      return renamed === undefined ? pair : renamed + pair.slice(rawKey.length);
    })
    .join('&');
}

/**
 * `GET /connection` → `GET /connections`: the same controller (`getPublicConnections`), so the answer
 * streams back untouched (connection-get.json: legacy and new list answers are identical); only the
 * deprecated filters in the query are renamed. HEAD is migrated too: Express answers it with the GET handler.
 */
export function createConnectionListMigration(): Migration<undefined> {
  return {
    routeId: 'connection-list',
    name: 'GET /connection',
    methods: ['GET', 'HEAD'],
    pattern: routePattern('/connection'),
    successor: '/connections',
    readsBody: false,

    requestUp(request): RequestUpResult<undefined> {
      return {
        kind: 'forward',
        request: {
          method: request.method,
          path: withQuery('/connections', rewriteListQuery(request.query)),
          body: null,
        },
        context: undefined,
      };
    },
  };
}
