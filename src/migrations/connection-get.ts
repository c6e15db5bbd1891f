import type { Migration } from './migration.js';
import { routePattern } from './migration.js';
import { forwardById } from './request-line.js';

/**
 * `GET /connection/:connectionId` → `GET /connections/:connectionId`. Nango serves both with the same
 * controller, so only the path changes and the answer streams back untouched (connection-get.json: the
 * legacy and new single-connection answers are identical, errors included).
 *
 * - The id is forwarded percent-encoded exactly as received: the successor's router decodes it the same
 *   way the legacy one did, so `acme%40example.com` and `acme@example.com` both still work.
 * - The query (`provider_config_key`, `force_refresh`, `refresh_token` from @nangohq/node ≤ 0.66.2) is kept
 *   as is; the successor judges it, as the legacy route did (same zod schema).
 * - `GET /connection/metadata` is this route with the id "metadata" (connection-get.json "GET
 *   /connection/metadata?provider_config_key (id "metadata")"), and so is its successor.
 * - Express answers HEAD with the GET handler, so HEAD is migrated too (connection-get.json "HEAD
 *   /connections/conn-1").
 */
export function createConnectionGetMigration(): Migration<undefined> {
  return {
    routeId: 'connection-get',
    name: 'GET /connection/:connectionId',
    methods: ['GET', 'HEAD'],
    pattern: routePattern('/connection/(?<connectionId>[^/]+)'),
    successor: '/connections/:connectionId',
    readsBody: false,

    requestUp: forwardById,
  };
}
