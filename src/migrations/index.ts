import type { OperationValidators } from '../openapi.js';
import { createConnectionDeleteMigration } from './connection-delete.js';
import { createConnectionGetMigration } from './connection-get.js';
import { createConnectionListMigration } from './connection-list.js';
import { createConnectionMetadataMigration } from './connection-metadata.js';
import { createConnectionPathMetadataMigration } from './connection-path-metadata.js';
import type { Migration } from './migration.js';

export interface MigrationDependencies {
  operations: Map<string, OperationValidators>;
}

function operation(operations: Map<string, OperationValidators>, key: string): OperationValidators {
  const found = operations.get(key);
  if (!found) throw new Error(`openapi: the document has no operation ${key}`);
  return found;
}

/**
 * The route table: every deprecated operation the shim owns, in one place. Adding the next deprecated
 * endpoint is one entry here and its test; the proxy does not change.
 *
 * The first entry that owns the method and matches the path wins, as in Nango's router. No two entries
 * overlap today: `/connection/metadata` is the body-style route for PATCH/POST only, while GET and DELETE
 * on it are the single-connection routes with the id "metadata" (connection-get.json, metadata-patch.json
 * "DELETE method (not routed for metadata)"); the path-style route has one more segment. PUT and
 * `POST /connection` (create) are not owned and pass through.
 */
export function createMigrations({ operations }: MigrationDependencies): Migration[] {
  // The body-style legacy route and its successor share their handlers, schema included (nango-api.md §2).
  const metadata = {
    patch: operation(operations, 'PATCH /connection/metadata'),
    post: operation(operations, 'POST /connection/metadata'),
  };
  return [
    createConnectionMetadataMigration(metadata) as Migration,
    createConnectionPathMetadataMigration(metadata) as Migration,
    createConnectionGetMigration() as Migration,
    createConnectionDeleteMigration() as Migration,
    createConnectionListMigration() as Migration,
  ];
}

export interface MigrationMatch {
  migration: Migration;
  params: Record<string, string>;
}

/** Finds the migration that owns this request line, if any. Plain loops: this runs on every request. */
export function matchMigration(
  migrations: readonly Migration[],
  method: string,
  path: string,
): MigrationMatch | undefined {
  for (const migration of migrations) {
    if (!migration.methods.includes(method)) continue;
    const match = migration.pattern.exec(path);
    if (match) return { migration, params: match.groups ? { ...match.groups } : {} };
  }
  return undefined;
}
