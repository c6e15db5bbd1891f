import { describe, expect, it } from 'vitest';
import type { LocalAnswer } from '../../src/errors.js';
import {
  createConnectionPathMetadataMigration,
  type PathMetadataContext,
} from '../../src/migrations/connection-path-metadata.js';
import { matchMigration } from '../../src/migrations/index.js';
import type { LegacyRequest, Migration, RequestUpResult } from '../../src/migrations/migration.js';
import { compileOperations, type OperationValidators } from '../../src/openapi.js';
import { type CaptureEntry, loadCaptures } from '../support/captures.js';
import { OPENAPI } from '../support/shim.js';

type Capture = CaptureEntry;

type Exchange = Required<Pick<Capture, 'request' | 'response'>>;

const KEY = '3f2a9c1e-7b4d-4e8f-9a6b-1c2d3e4f5a6b';
const operations = compileOperations(OPENAPI);
const migration = createConnectionPathMetadataMigration({
  patch: operations.get('PATCH /connection/metadata') as OperationValidators,
  post: operations.get('POST /connection/metadata') as OperationValidators,
});

function captures(file: string): Capture[] {
  return loadCaptures(file);
}

function exchange(file: string, name: string): Exchange {
  const found = captures(file).find((entry) => entry.name === name);
  if (!found?.request || !found.response) throw new Error(`${file} has no exchange named ${name}`);
  return { request: found.request, response: found.response };
}

const pathStyle = (name: string) => exchange('path-style.json', name);

/** The legacy call as the proxy hands it over: Node's lower-cased headers, the params the route table found. */
function legacyRequest(request: Exchange['request']): LegacyRequest {
  const mark = request.path.indexOf('?');
  const path = mark === -1 ? request.path : request.path.slice(0, mark);
  const query = mark === -1 ? '' : request.path.slice(mark + 1);
  const match = matchMigration([migration as Migration], request.method, path);
  if (!match) throw new Error(`the migration does not own ${request.method} ${path}`);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    headers[name.toLowerCase()] = String(value).replace('<SECRET_KEY>', KEY);
  }
  return {
    method: request.method,
    path,
    query,
    params: match.params,
    headers,
    body: Buffer.from(request.body ?? ''),
  };
}

/** A synthetic legacy call, shaped like the SDK's (≤ 0.39.28) path-style requests in path-style.json. */
function call(
  method: string,
  url: string,
  body: string | null,
  headers: Record<string, string> = {},
): Exchange['request'] {
  const framing: Record<string, string> =
    body === null
      ? {}
      : { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) };
  return {
    method,
    path: url,
    headers: { Authorization: 'Bearer <SECRET_KEY>', ...framing, ...headers },
    body,
  };
}

type Up = RequestUpResult<PathMetadataContext>;

function forwarded(up: Up) {
  if (up.kind !== 'forward') throw new Error(`expected a forward, got a local ${up.answer.status}`);
  return up;
}

function answered(up: Up): LocalAnswer {
  if (up.kind !== 'answer') throw new Error(`expected a local answer, got a forward to ${up.request.path}`);
  return up.answer;
}

function upstream(status: number, body: string) {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8' }, body: Buffer.from(body) };
}

/** The successor echoes the body it was sent (nango-api.md §1; metadata-patch.json success entries). */
function successorEcho(up: ReturnType<typeof forwarded>) {
  return upstream(up.request.method === 'POST' ? 201 : 200, String(up.request.body ?? ''));
}

function down(up: ReturnType<typeof forwarded>, response: ReturnType<typeof upstream>) {
  const { responseDown } = migration;
  if (!responseDown) throw new Error('the path-style migration reshapes answers');
  return responseDown(response, up.context);
}

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const ANY_UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
const masked = (text: string) => text.replace(ANY_UUID, '<uuid>');

describe('connection-path-metadata: the successor request', () => {
  const cases: Array<[string, string]> = [
    [
      'PATCH /connection/conn-5/metadata?provider_config_key (raw metadata body)',
      '{"connection_id":"conn-5","provider_config_key":"unauth","metadata":{"legacy":"patch","n":1}}',
    ],
    [
      'POST /connection/conn-5/metadata?provider_config_key (replace) -> 201',
      '{"connection_id":"conn-5","provider_config_key":"unauth","metadata":{"legacy":"post"}}',
    ],
    [
      'PATCH path-style with Provider-Config-Key header instead of query',
      '{"connection_id":"conn-5","provider_config_key":"unauth","metadata":{"viaHeader":true}}',
    ],
    [
      'PATCH path-style with extra query param (not rejected)',
      '{"connection_id":"conn-5","provider_config_key":"unauth","metadata":{"extraQuery":true}}',
    ],
    [
      'PATCH path-style body in new-style shape (stored verbatim as metadata!)',
      '{"connection_id":"conn-6","provider_config_key":"unauth","metadata":{"connection_id":"conn-6","provider_config_key":"unauth","metadata":{"a":1}}}',
    ],
    [
      'PATCH path-style JSON array body',
      '{"connection_id":"conn-6","provider_config_key":"unauth","metadata":{"0":"x","1":"y"}}',
    ],
    [
      'PATCH path-style empty body (Content-Length 0)',
      '{"connection_id":"conn-6","provider_config_key":"unauth","metadata":{}}',
    ],
    [
      'POST path-style empty body (Content-Length 0)',
      '{"connection_id":"conn-6","provider_config_key":"unauth","metadata":{}}',
    ],
    [
      'PATCH path-style id with @ (percent-encoded)',
      '{"connection_id":"acme@example.com","provider_config_key":"unauth","metadata":{"encoded":true}}',
    ],
    [
      'PATCH path-style id with @ (raw)',
      '{"connection_id":"acme@example.com","provider_config_key":"unauth","metadata":{"raw":true}}',
    ],
  ];

  it.each(cases)('sends the body-style call for "%s"', (name, body) => {
    const { request } = pathStyle(name);
    const up = forwarded(migration.requestUp(legacyRequest(request)));
    expect(up.request).toEqual({ method: request.method, path: '/connections/metadata', body });
  });

  it.each(cases)('answers "%s" exactly as the path-style route did', (name) => {
    const { request, response } = pathStyle(name);
    const up = forwarded(migration.requestUp(legacyRequest(request)));
    const legacy = down(up, successorEcho(up));
    expect(legacy.status).toBe(response.status);
    expect(legacy.body?.toString('utf8')).toBe(response.body);
  });

  it('sends no query string, even when the legacy call carried extra parameters', () => {
    const up = forwarded(
      migration.requestUp(
        legacyRequest(call('PATCH', '/connection/c/metadata?provider_config_key=k&x=1', '{}')),
      ),
    );
    expect(up.request.path).toBe('/connections/metadata');
  });

  it('prefers a non-empty query key to the header, and falls back to the header on an empty one', () => {
    const both = call('PATCH', '/connection/c/metadata?provider_config_key=fromQuery', '{}', {
      'Provider-Config-Key': 'fromHeader',
    });
    const empty = call('PATCH', '/connection/c/metadata?provider_config_key=', '{}', {
      'Provider-Config-Key': 'fromHeader',
    });
    expect(
      JSON.parse(String(forwarded(migration.requestUp(legacyRequest(both))).request.body ?? ''))
        .provider_config_key,
    ).toBe('fromQuery');
    expect(
      JSON.parse(String(forwarded(migration.requestUp(legacyRequest(empty))).request.body ?? ''))
        .provider_config_key,
    ).toBe('fromHeader');
  });

  it('re-serialises the metadata it forwards and echoes (whitespace, exponents, duplicate keys)', () => {
    const request = call(
      'POST',
      '/connection/c/metadata?provider_config_key=k',
      '{ "n": 1.5e3, "d": 1, "d": 2 }',
    );
    const up = forwarded(migration.requestUp(legacyRequest(request)));
    expect(up.request.body).toBe(
      '{"connection_id":"c","provider_config_key":"k","metadata":{"n":1500,"d":2}}',
    );
    expect(down(up, successorEcho(up)).body?.toString('utf8')).toBe('{"n":1500,"d":2}');
  });
});

describe('connection-path-metadata: errors', () => {
  it.each([
    ['PATCH path-style unknown connection', 'PATCH /connections/metadata: single string unknown id'],
    ['POST path-style unknown connection', 'PATCH /connections/metadata: single string unknown id'],
    [
      'PATCH path-style unknown provider_config_key',
      'PATCH /connections/metadata: unknown provider_config_key',
    ],
  ])('turns the successor 404 into the legacy NangoError 404 for "%s"', (name, successorName) => {
    const { request, response } = pathStyle(name);
    const successor = exchange('metadata-patch.json', successorName).response;
    const up = forwarded(migration.requestUp(legacyRequest(request)));
    const legacy = down(up, upstream(successor.status, successor.body));
    expect(legacy.status).toBe(404);
    expect(legacy.body?.toString('utf8')).toBe(response.body);
  });

  it('answers a missing provider config key with a generic_error_support 500 and a fresh id', () => {
    const { request, response } = pathStyle('PATCH path-style missing provider_config_key');
    const first = answered(migration.requestUp(legacyRequest(request)));
    const second = answered(migration.requestUp(legacyRequest(request)));
    expect(first.status).toBe(response.status);
    expect(JSON.parse(masked(JSON.stringify(first.body)))).toEqual(JSON.parse(masked(response.body)));
    // NangoError's key order too, byte for byte once the id is set aside.
    expect(masked(JSON.stringify(first.body))).toBe(masked(response.body));
    const payload = first.body.error.payload as string;
    expect(payload).toMatch(UUID_V4);
    expect(first.body.error.message).toContain(`"${payload}"`);
    expect(second.body.error.payload).not.toBe(payload);
  });

  it('answers the auth failure first when the provider config key is missing as well', () => {
    const { request } = pathStyle('PATCH path-style missing provider_config_key');
    const { Authorization: _, ...withoutAuth } = request.headers;
    const noAuth = pathStyle('PATCH path-style no Authorization').response;
    const answer = answered(migration.requestUp(legacyRequest({ ...request, headers: withoutAuth })));
    expect(answer.status).toBe(401);
    expect(JSON.stringify(answer.body)).toBe(noAuth.body);
  });

  it.each(['PATCH path-style malformed JSON', 'PATCH path-style text/plain'])(
    'answers "%s" locally, exactly as Nango did',
    (name) => {
      const { request, response } = pathStyle(name);
      const answer = answered(migration.requestUp(legacyRequest(request)));
      expect(answer.status).toBe(response.status);
      expect(JSON.stringify(answer.body)).toBe(response.body);
    },
  );

  it('checks the JSON before the provider config key and the auth', () => {
    const request = call('PATCH', '/connection/c/metadata', '{bad');
    const { Authorization: _, ...headers } = request.headers;
    const answer = answered(migration.requestUp(legacyRequest({ ...request, headers })));
    expect(answer.body.error.code).toBe('invalid_json');
  });

  it('forwards a call without Authorization and passes the upstream 401 back untouched', () => {
    const { request, response } = pathStyle('PATCH path-style no Authorization');
    const up = forwarded(migration.requestUp(legacyRequest(request)));
    expect(up.request.body).toBe(
      '{"connection_id":"conn-5","provider_config_key":"unauth","metadata":{"a":1}}',
    );
    expect(down(up, upstream(response.status, response.body))).toEqual({ status: 401 });
  });

  it('passes other upstream errors back untouched (unknown account)', () => {
    const successor = exchange(
      'metadata-patch.json',
      'PATCH /connections/metadata: Authorization unknown UUID v4 key',
    );
    const up = forwarded(
      migration.requestUp(legacyRequest(call('PATCH', '/connection/c/metadata?provider_config_key=k', '{}'))),
    );
    expect(down(up, upstream(successor.response.status, successor.response.body))).toEqual({ status: 401 });
  });

  it('names the legacy path in a 429, as Nango does for the route that was called', () => {
    const limited = exchange('rate-limit.json', 'PATCH /connections/metadata while rate-limited -> 429');
    const up = forwarded(
      migration.requestUp(
        legacyRequest(call('PATCH', '/connection/conn-5/metadata?provider_config_key=unauth', '{}')),
      ),
    );
    const legacy = down(up, upstream(429, limited.response.body));
    expect(legacy.status).toBe(429);
    expect(legacy.body?.toString('utf8')).toBe(
      '{"error":{"code":"too_many_request","method":"PATCH","path":"/connection/conn-5/metadata"}}',
    );
  });

  it('passes a non-JSON 404 (a successor route that does not exist) back untouched', () => {
    const html = pathStyle('PATCH /connections/conn-5/metadata (no plural path-style route)').response;
    const up = forwarded(
      migration.requestUp(legacyRequest(call('PATCH', '/connection/c/metadata?provider_config_key=k', '{}'))),
    );
    expect(down(up, upstream(404, html.body))).toEqual({ status: 404 });
  });
});

describe('connection-path-metadata: decisions where no capture exists', () => {
  it('leaves ids the successor schema refuses to the successor, and passes its 400 invalid_body back', () => {
    // "café" fails the successor's connection_id regex (nango-api.md §1); the path-style route took any id.
    const up = forwarded(
      migration.requestUp(
        legacyRequest(call('PATCH', '/connection/caf%C3%A9/metadata?provider_config_key=k', '{"a":1}')),
      ),
    );
    expect(JSON.parse(String(up.request.body ?? '')).connection_id).toBe('café');
    const invalid =
      '{"error":{"code":"invalid_body","errors":[{"code":"invalid_union","message":"Invalid input","path":["connection_id"]}]}}';
    expect(down(up, upstream(400, invalid))).toEqual({ status: 400 });
  });

  it('leaves provider config keys the successor schema refuses to the successor too', () => {
    const up = forwarded(
      migration.requestUp(
        legacyRequest(call('PATCH', '/connection/c/metadata?provider_config_key=a%2Fb', '{}')),
      ),
    );
    expect(JSON.parse(String(up.request.body ?? '')).provider_config_key).toBe('a/b');
  });

  it('refuses metadata keys the successor cannot store only after auth, and forwards a class-like constructor', () => {
    const request = call('PATCH', '/connection/c/metadata?provider_config_key=k', '{"constructor":null}');
    expect(answered(migration.requestUp(legacyRequest(request))).body.error.code).toBe('invalid_body');
    const { Authorization: _, ...headers } = request.headers;
    expect(answered(migration.requestUp(legacyRequest({ ...request, headers }))).status).toBe(401);
    // zod's isPlainObject takes this for a class's constructor: the successor stores it like any key.
    const classLike = '{"constructor":{"prototype":{"isPrototypeOf":1}}}';
    const up = forwarded(
      migration.requestUp(
        legacyRequest(call('PATCH', '/connection/c/metadata?provider_config_key=k', classLike)),
      ),
    );
    expect(JSON.parse(String(up.request.body)).metadata).toEqual(JSON.parse(classLike));
  });

  it('answers a malformed escape in the id with the generic 500, before auth', () => {
    const request = call('PATCH', '/connection/%E0%A4%A/metadata?provider_config_key=k', '{}');
    const { Authorization: _, ...headers } = request.headers;
    const answer = answered(migration.requestUp(legacyRequest({ ...request, headers })));
    expect(answer.status).toBe(500);
    expect(answer.body.error.code).toBe('generic_error_support');
  });

  it('refuses a POST of a JSON array locally (the legacy replace query failed), after auth', () => {
    const request = call('POST', '/connection/c/metadata?provider_config_key=k', '["x","y"]');
    expect(answered(migration.requestUp(legacyRequest(request))).body.error.code).toBe(
      'generic_error_support',
    );
    const { Authorization: _, ...headers } = request.headers;
    expect(answered(migration.requestUp(legacyRequest({ ...request, headers }))).status).toBe(401);
  });

  it('refuses a POST whose body is not JSON-typed (nothing to store), and merges nothing on PATCH', () => {
    const post = {
      ...call('POST', '/connection/c/metadata?provider_config_key=k', null, { 'Content-Length': '7' }),
      body: '{"a":1}',
    };
    expect(answered(migration.requestUp(legacyRequest(post))).status).toBe(500);
    const patch = { ...post, method: 'PATCH' };
    const up = forwarded(migration.requestUp(legacyRequest(patch)));
    expect(up.request.body).toBe('{"connection_id":"c","provider_config_key":"k","metadata":{}}');
    // res.send(undefined): an empty 200.
    expect(down(up, successorEcho(up))).toEqual({ status: 200, body: Buffer.alloc(0) });
  });

  it('takes an empty Content-Type for none: nothing merged, an empty 200, as Nango (not a 415)', () => {
    // jsonContentTypeMiddleware refuses only `if (req.headers['content-type'] && …)`; the body stays unparsed.
    const request = call('PATCH', '/connection/c/metadata?provider_config_key=k', '{"a":1}', {
      'Content-Type': '',
    });
    const up = forwarded(migration.requestUp(legacyRequest(request)));
    expect(up.request.body).toBe('{"connection_id":"c","provider_config_key":"k","metadata":{}}');
    expect(down(up, successorEcho(up))).toEqual({ status: 200, body: Buffer.alloc(0) });
  });

  it('answers a repeated provider config key with the legacy 404, after auth', () => {
    const request = call('PATCH', '/connection/c/metadata?provider_config_key=a&provider_config_key=b', '{}');
    const answer = answered(migration.requestUp(legacyRequest(request)));
    expect(answer.status).toBe(404);
    expect(answer.body.error).toMatchObject({
      code: 'unknown_connection',
      payload: { connectionId: 'c', providerConfigKey: ['a', 'b'] },
    });
  });
});

describe('connection-path-metadata: matching', () => {
  const owns = (method: string, path: string) => matchMigration([migration as Migration], method, path);

  it('owns POST and PATCH on /connection/:id/metadata, case-insensitive, one trailing slash', () => {
    expect(owns('PATCH', '/connection/conn-5/metadata')?.params).toEqual({ connectionId: 'conn-5' });
    expect(owns('POST', '/CONNECTION/acme%40example.com/Metadata/')?.params).toEqual({
      connectionId: 'acme%40example.com',
    });
  });

  it('leaves other shapes and methods alone', () => {
    expect(owns('PATCH', '/connection/metadata')).toBeUndefined();
    expect(owns('PATCH', '/connections/conn-5/metadata')).toBeUndefined();
    expect(owns('PATCH', '/connection//metadata')).toBeUndefined();
    expect(owns('PATCH', '/connection/conn-5/metadata//')).toBeUndefined();
    expect(owns('GET', '/connection/conn-5/metadata')).toBeUndefined();
    expect(owns('PUT', '/connection/conn-5/metadata')).toBeUndefined();
  });
});
