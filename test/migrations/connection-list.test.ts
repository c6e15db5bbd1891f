import { describe, expect, it } from 'vitest';
import { createConnectionListMigration } from '../../src/migrations/connection-list.js';
import { matchMigration } from '../../src/migrations/index.js';
import type { LegacyRequest, Migration } from '../../src/migrations/migration.js';
import { type CaptureEntry, loadCaptures } from '../support/captures.js';

type Capture = CaptureEntry;

const migration = createConnectionListMigration();

function captures(file: string): Capture[] {
  return loadCaptures(file);
}

function successorRequest(method: string, url: string) {
  const [path = url, query = ''] = url.split(/\?(.*)/s);
  const match = matchMigration([migration as Migration], method, path);
  if (!match) throw new Error(`the migration does not own ${method} ${path}`);
  const request: LegacyRequest = { method, path, query, params: match.params, headers: {}, body: null };
  const up = migration.requestUp(request);
  if (up.kind !== 'forward') throw new Error('the list migration always forwards');
  return up.request;
}

/** Fields that change on every read (capture-meta.json "volatile_body_fields"). */
function stable(body: string): unknown {
  return JSON.parse(body, (key, value) => (key === 'created' ? '<volatile>' : value));
}

describe('connection-list', () => {
  it.each([
    ['GET /connection (legacy list)', 'GET /connections (new list)'],
    [
      'GET /connection?connectionId=conn-1 (legacy list filter)',
      'GET /connections?connectionId=conn-1 (new list filter)',
    ],
  ])('sends "%s" to "%s", which answered the same', (legacyName, twinName) => {
    const all = captures('connection-get.json');
    const legacy = all.find((entry) => entry.name === legacyName);
    const twin = all.find((entry) => entry.name === twinName);
    if (!legacy?.request || !legacy.response || !twin?.request || !twin.response)
      throw new Error('missing capture');
    expect(successorRequest('GET', legacy.request.path)).toEqual({
      method: 'GET',
      path: twin.request.path,
      body: null,
    });
    expect(twin.response.status).toBe(legacy.response.status);
    expect(stable(twin.response.body)).toEqual(stable(legacy.response.body));
  });

  it('sends @nangohq/node 0.66.2 listConnections where 0.67.0 sends it', () => {
    const legacy = captures('sdk-0.66.2.json').find((entry) => entry.name === "listConnections('sdk-1')");
    const modern = captures('sdk-0.67.0.json').find((entry) => entry.name === "listConnections('sdk67-1')");
    if (!legacy?.request || !modern?.request) throw new Error('missing capture');
    expect(successorRequest('GET', legacy.request.path).path).toBe(
      modern.request.path.replace('sdk67-1', 'sdk-1'),
    );
  });

  it('keeps the query byte for byte, the deprecated end-user filters included, as 0.67.0 sends them', () => {
    // @nangohq/node 0.67.0's listConnections (the SDK Nango tells legacy clients to move to) appends
    // endUserId and endUserOrganizationId to /connections as they are: the same controller reads them.
    for (const query of [
      'endUserId=u%40x.com&search=a+b&endUserOrganizationId=org%2F1&connectionId=c',
      'end%55serId=1',
      'a=1&&b=%ZZ',
      'constructor=1&__proto__=2',
    ]) {
      expect(successorRequest('GET', `/connection?${query}`).path).toBe(`/connections?${query}`);
    }
  });

  it('migrates HEAD as HEAD and drops the trailing slash and case', () => {
    expect(successorRequest('HEAD', '/Connection/?search=x')).toEqual({
      method: 'HEAD',
      path: '/connections?search=x',
      body: null,
    });
  });

  it('streams the answer back untouched', () => {
    expect(migration.responseDown).toBeUndefined();
  });

  it('owns only GET and HEAD on /connection itself', () => {
    const owns = (method: string, path: string) => matchMigration([migration as Migration], method, path);
    expect(owns('GET', '/connection')).toBeDefined();
    expect(owns('POST', '/connection')).toBeUndefined();
    expect(owns('GET', '/connections')).toBeUndefined();
    expect(owns('GET', '/connection/conn-1')).toBeUndefined();
    expect(owns('GET', '/connection//')).toBeUndefined();
  });
});
