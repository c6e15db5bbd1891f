import type { OperationValidators } from '../openapi.js';
import { createConnectionMetadataMigration } from './connection-metadata.js';
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
 */
export function createMigrations({ operations }: MigrationDependencies): Migration[] {
  return [
    createConnectionMetadataMigration({
      patch: operation(operations, 'PATCH /connection/metadata'),
      post: operation(operations, 'POST /connection/metadata'),
    }) as Migration,
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
