import type { Migration, RequestUpResult } from './migration.js';
import { routePattern } from './migration.js';
import { withQuery } from './request-line.js';

/**
 * `GET /connection` → `GET /connections`: the same controller (`getPublicConnections`), so the answer
 * streams back untouched (connection-get.json: legacy and new list answers are identical). The query goes
 * as it came, byte for byte. Its `endUserId` and `endUserOrganizationId` filters are deprecated in favour of
 * `tags[…]` (nango-api.md §6), but `/connections` still reads them with the same controller, and
 * @nangohq/node 0.67.0, the SDK Nango tells legacy clients to move to, sends them there as they are;
 * renamed to `tags[…]` they were refused by Nango 0.71.4's strict list query (400 invalid_query_params).
 * HEAD is migrated too: Express answers it with the GET handler.
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
        request: { method: request.method, path: withQuery('/connections', request.query), body: null },
        context: undefined,
      };
    },
  };
}
