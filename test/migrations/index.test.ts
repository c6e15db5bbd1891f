import { describe, expect, it } from 'vitest';
import { createMigrations, matchMigration } from '../../src/migrations/index.js';
import { compileOperations, readOpenApiDocument } from '../../src/openapi.js';

const migrations = createMigrations({
  operations: compileOperations(
    readOpenApiDocument(new URL('../../config/openapi/connection-metadata.json', import.meta.url)),
  ),
});

function owner(method: string, path: string): string | undefined {
  return matchMigration(migrations, method, path)?.migration.routeId;
}

describe('the route table', () => {
  it.each([
    ['PATCH', '/connection/metadata', 'connection-metadata'],
    ['POST', '/connection/metadata/', 'connection-metadata'],
    ['PATCH', '/connection/conn-5/metadata', 'connection-path-metadata'],
    ['POST', '/connection/metadata/metadata', 'connection-path-metadata'],
    // Nango routes GET and DELETE on /connection/metadata to the single-connection routes, id "metadata"
    // (connection-get.json, metadata-patch.json "DELETE method (not routed for metadata)").
    ['GET', '/connection/metadata', 'connection-get'],
    ['HEAD', '/connection/conn-1', 'connection-get'],
    ['DELETE', '/connection/metadata', 'connection-delete'],
    ['DELETE', '/Connection/conn-1/', 'connection-delete'],
    ['GET', '/connection', 'connection-list'],
    ['HEAD', '/connection/', 'connection-list'],
  ])('gives %s %s to %s', (method, path, routeId) => {
    expect(owner(method, path)).toBe(routeId);
  });

  it.each([
    ['PUT', '/connection/metadata'],
    ['POST', '/connection'],
    ['PATCH', '/connection/conn-1'],
    ['GET', '/connection/conn-1/metadata'],
    ['GET', '/connections'],
    ['GET', '/connections/conn-1'],
    ['PATCH', '/connections/metadata'],
    ['PATCH', '/connections/conn-5/metadata'],
    ['OPTIONS', '/connection/metadata'],
  ])('leaves %s %s to pass through', (method, path) => {
    expect(owner(method, path)).toBeUndefined();
  });

  it('has one entry per route id', () => {
    const ids = migrations.map((migration) => migration.routeId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(5);
  });
});
