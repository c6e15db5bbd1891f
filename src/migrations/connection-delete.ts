import type { Migration } from './migration.js';
import { routePattern } from './migration.js';
import { forwardById } from './request-line.js';

/**
 * `DELETE /connection/:connectionId` → `DELETE /connections/:connectionId`, the same controller
 * (`deletePublicConnection`, nango-api.md §6): only the path changes, the answer streams back untouched.
 *
 * - The id stays percent-encoded exactly as received, and the query (`provider_config_key`) is kept.
 * - `DELETE /connection/metadata` is this route with the id "metadata", not a metadata operation
 *   (metadata-patch.json "DELETE method (not routed for metadata)"), and so is its successor.
 */
export function createConnectionDeleteMigration(): Migration<undefined> {
  return {
    routeId: 'connection-delete',
    name: 'DELETE /connection/:connectionId',
    methods: ['DELETE'],
    pattern: routePattern('/connection/(?<connectionId>[^/]+)'),
    successor: '/connections/:connectionId',
    readsBody: false,

    requestUp: forwardById,
  };
}
