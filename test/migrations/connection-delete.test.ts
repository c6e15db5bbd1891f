import { describe, expect, it } from 'vitest';
import { createConnectionDeleteMigration } from '../../src/migrations/connection-delete.js';
import { matchMigration } from '../../src/migrations/index.js';
import type { LegacyRequest, Migration } from '../../src/migrations/migration.js';
import { type CaptureEntry, loadCaptures } from '../support/captures.js';

type Capture = CaptureEntry;

const migration = createConnectionDeleteMigration();

type Exchange = Capture & Required<Pick<Capture, 'request' | 'response'>>;

function capture(file: string, name: string): Exchange {
  const found = loadCaptures(file).find((entry) => entry.name === name);
  if (!found?.request || !found.response) throw new Error(`${file} has no exchange named ${name}`);
  return { name, request: found.request, response: found.response };
}

function legacyRequest(method: string, url: string): LegacyRequest {
  const [path = url, query = ''] = url.split(/\?(.*)/s);
  const match = matchMigration([migration as Migration], method, path);
  if (!match) throw new Error(`the migration does not own ${method} ${path}`);
  return { method, path, query, params: match.params, headers: {}, body: null };
}

function successorRequest(method: string, url: string) {
  const up = migration.requestUp(legacyRequest(method, url));
  if (up.kind !== 'forward') throw new Error('a path-only migration always forwards');
  return up.request;
}

describe('connection-delete', () => {
  it('sends DELETE /connection/metadata to its /connections twin, which answered the same', () => {
    const legacy = capture(
      'metadata-patch.json',
      'PATCH /connection/metadata: DELETE method (not routed for metadata)',
    );
    const twin = capture(
      'metadata-patch.json',
      'PATCH /connections/metadata: DELETE method (not routed for metadata)',
    );
    expect(successorRequest('DELETE', legacy.request.path)).toEqual({
      method: 'DELETE',
      path: twin.request.path,
      body: null,
    });
    expect(twin.response.status).toBe(legacy.response.status);
    expect(twin.response.body).toBe(legacy.response.body);
  });

  it('keeps the query of @nangohq/node 0.66.2 deleteConnection and the encoded id', () => {
    expect(successorRequest('DELETE', '/connection/acme%40example.com?provider_config_key=unauth')).toEqual({
      method: 'DELETE',
      path: '/connections/acme%40example.com?provider_config_key=unauth',
      body: null,
    });
    expect(successorRequest('DELETE', '/CONNECTION/conn-1/').path).toBe('/connections/conn-1');
  });

  it('streams the answer back untouched', () => {
    expect(migration.responseDown).toBeUndefined();
    expect(migration.readsBody).toBe(false);
  });

  it('owns only DELETE on one id segment', () => {
    const owns = (method: string, path: string) => matchMigration([migration as Migration], method, path);
    expect(owns('DELETE', '/connection/metadata')?.params).toEqual({ connectionId: 'metadata' });
    expect(owns('DELETE', '/connection')).toBeUndefined();
    expect(owns('DELETE', '/connection/conn-1/metadata')).toBeUndefined();
    expect(owns('DELETE', '/connections/conn-1')).toBeUndefined();
    expect(owns('GET', '/connection/conn-1')).toBeUndefined();
  });
});
