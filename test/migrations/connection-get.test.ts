import { describe, expect, it } from 'vitest';
import { createConnectionGetMigration } from '../../src/migrations/connection-get.js';
import { matchMigration } from '../../src/migrations/index.js';
import type { LegacyRequest, Migration } from '../../src/migrations/migration.js';
import { type CaptureEntry, loadCaptures } from '../support/captures.js';

type Capture = CaptureEntry;

const migration = createConnectionGetMigration();

function captures(file: string): Capture[] {
  return loadCaptures(file);
}

function legacyRequest(method: string, url: string): LegacyRequest {
  const [path = url, query = ''] = url.split(/\?(.*)/s);
  const match = matchMigration([migration as Migration], method, path);
  if (!match) throw new Error(`the migration does not own ${method} ${path}`);
  return { method, path, query, params: match.params, headers: {}, body: null };
}

function successorPath(method: string, url: string): string {
  const up = migration.requestUp(legacyRequest(method, url));
  if (up.kind !== 'forward') throw new Error('a path-only migration always forwards');
  expect(up.request.method).toBe(method);
  expect(up.request.body).toBeNull();
  return up.request.path;
}

/** Fields that change on every read (capture-meta.json "volatile_body_fields"). */
function stable(body: string): unknown {
  return JSON.parse(body, (key, value) =>
    ['created_at', 'updated_at', 'last_fetched_at', 'created'].includes(key) ? '<volatile>' : value,
  );
}

const legacySingles = captures('connection-get.json').filter(
  (entry) => entry.request?.method === 'GET' && /^\/connection\/[^/?]+/.test(entry.request.path),
);

describe('connection-get', () => {
  it('finds the legacy single-connection captures', () => {
    expect(legacySingles.map((entry) => entry.request?.path)).toEqual([
      '/connection/conn-1?provider_config_key=unauth',
      '/connection/does-not-exist?provider_config_key=unauth',
      '/connection/conn-1',
      '/connection/metadata?provider_config_key=unauth',
    ]);
  });

  it.each(legacySingles.map((entry) => [entry.name, entry] as const))(
    'sends "%s" to its /connections twin, which answered the same',
    (_name, legacy) => {
      if (!legacy.request || !legacy.response) throw new Error('incomplete capture');
      const path = successorPath('GET', legacy.request.path);
      // The twin sent the same headers (not the If-None-Match or no-Authorization variants).
      const headerNames = (entry: Capture) => Object.keys(entry.request?.headers ?? {}).join();
      const twin = captures('connection-get.json').find(
        (entry) =>
          entry.request?.method === 'GET' &&
          entry.request.path === path &&
          headerNames(entry) === headerNames(legacy),
      );
      if (!twin?.response) throw new Error(`no capture of GET ${path}`);
      // Streaming the successor's answer untouched is right only while the two answers are the same.
      expect(twin.response.status).toBe(legacy.response.status);
      expect(stable(twin.response.body)).toEqual(stable(legacy.response.body));
    },
  );

  it('streams the answer back untouched', () => {
    expect(migration.responseDown).toBeUndefined();
    expect(migration.readsBody).toBe(false);
  });

  it('keeps the query of @nangohq/node 0.66.2 getConnection/getMetadata byte for byte', () => {
    const sdkGets = captures('sdk-0.66.2.json').filter((entry) => entry.request?.method === 'GET');
    const paths = sdkGets
      .map((entry) => entry.request?.path ?? '')
      .filter((path) => path.startsWith('/connection/'));
    expect(paths).toContain(
      '/connection/sdk-1?provider_config_key=unauth&force_refresh=false&refresh_token=false',
    );
    for (const path of paths)
      expect(successorPath('GET', path)).toBe(path.replace('/connection/', '/connections/'));
  });

  it('keeps the id percent-encoded exactly as received', () => {
    // path-style.json "GET acme@example.com after" reads this id back through /connections/acme%40example.com.
    expect(successorPath('GET', '/connection/acme%40example.com?provider_config_key=unauth')).toBe(
      '/connections/acme%40example.com?provider_config_key=unauth',
    );
    expect(successorPath('GET', '/connection/a%2Fb%20c+d')).toBe('/connections/a%2Fb%20c+d');
  });

  it('migrates HEAD as HEAD (Express answers it with the GET handler)', () => {
    expect(successorPath('HEAD', '/connection/conn-1?provider_config_key=unauth')).toBe(
      '/connections/conn-1?provider_config_key=unauth',
    );
  });

  it('drops the trailing slash and the case of the legacy path', () => {
    expect(successorPath('GET', '/Connection/conn-1/?provider_config_key=unauth')).toBe(
      '/connections/conn-1?provider_config_key=unauth',
    );
  });

  it('owns only GET and HEAD on one id segment', () => {
    const owns = (method: string, path: string) => matchMigration([migration as Migration], method, path);
    expect(owns('GET', '/connection/metadata')?.params).toEqual({ connectionId: 'metadata' });
    expect(owns('GET', '/connection')).toBeUndefined();
    expect(owns('GET', '/connection/')).toBeUndefined();
    expect(owns('GET', '/connections/conn-1')).toBeUndefined();
    expect(owns('GET', '/connection/conn-1/metadata')).toBeUndefined();
    expect(owns('DELETE', '/connection/conn-1')).toBeUndefined();
    expect(owns('PATCH', '/connection/metadata')).toBeUndefined();
  });
});
