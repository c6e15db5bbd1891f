import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createConnectionMetadataMigration } from '../../src/migrations/connection-metadata.js';
import type { LegacyRequest } from '../../src/migrations/migration.js';
import { compileOperations, type OperationValidators } from '../../src/openapi.js';
import { type CaptureEntry, loadCaptures, substituteKeys } from '../support/captures.js';
import { metadataBodyErrors } from '../support/fake-nango.js';
import { OPENAPI } from '../support/shim.js';

const operations = compileOperations(OPENAPI);
const patch = operations.get('PATCH /connection/metadata') as OperationValidators;
const post = operations.get('POST /connection/metadata') as OperationValidators;
const migration = createConnectionMetadataMigration({ patch, post });

function legacyCaptures(): CaptureEntry[] {
  return [
    ...loadCaptures('metadata-patch.json'),
    ...loadCaptures('metadata-post.json'),
    ...loadCaptures('sdk-0.66.2.json'),
  ]
    .filter((entry) => entry.request && /^(PATCH|POST)$/.test(entry.request.method))
    .filter((entry) => /^\/connection\/metadata\/?(\?|$)/i.test(entry.request?.path ?? ''))
    .map(substituteKeys);
}

function asLegacyRequest(entry: CaptureEntry): LegacyRequest {
  const request = entry.request as NonNullable<CaptureEntry['request']>;
  const mark = request.path.indexOf('?');
  const headers = Object.fromEntries(
    Object.entries(request.headers).map(([name, value]) => [name.toLowerCase(), value]),
  );
  return {
    method: request.method,
    path: mark === -1 ? request.path : request.path.slice(0, mark),
    query: mark === -1 ? '' : request.path.slice(mark + 1),
    params: {},
    headers,
    body: request.body === null ? null : Buffer.from(request.body),
  };
}

/** What Nango decides without its database: parse, content type, auth syntax, query, schema. */
const DECIDED_LOCALLY = new Set([
  'invalid_json',
  'invalid_content_type',
  'invalid_query_params',
  'invalid_body',
]);

describe('connection-metadata requestUp, against every legacy capture', () => {
  const captures = legacyCaptures();

  it('covers the captured cases', () => {
    expect(captures.length).toBeGreaterThan(60);
  });

  for (const entry of captures) {
    it(`handles "${entry.name}"`, () => {
      const response = entry.response as NonNullable<CaptureEntry['response']>;
      const code = (response.json as { error?: { code?: string } } | undefined)?.error?.code;
      const result = migration.requestUp(asLegacyRequest(entry));
      if (code !== undefined && DECIDED_LOCALLY.has(code)) expect(result.kind).toBe('answer');
      if (result.kind === 'answer') {
        // Answered exactly as Nango did: status and the whole body, byte for byte (an auth error included,
        // where the request was invalid and its header alone proves Nango's 401).
        expect(result.answer.status).toBe(response.status);
        expect(JSON.stringify(result.answer.body)).toBe(response.body);
        return;
      }
      // Everything else (success, unknown ids, account auth) is the upstream's call: forwarded, once, with
      // the body Nango would have parsed and no query string.
      expect(result.request.path).toBe('/connections/metadata');
      expect(result.request.method).toBe(entry.request?.method);
      expect(result.request.body?.toString()).toBe(JSON.stringify(JSON.parse(entry.request?.body ?? '')));
    });
  }
});

describe('connection-metadata requestUp, beyond the captures', () => {
  it('takes an empty Content-Type for none, as Nango does (metadata-patch.json "no Content-Type header")', () => {
    // jsonContentTypeMiddleware refuses only `if (req.headers['content-type'] && …)`, and the JSON parser
    // skips a body whose type is empty: the answer is the one captured without the header, not a 415.
    const captured = legacyCaptures().find(
      (entry) => entry.name === 'PATCH /connection/metadata: no Content-Type header, JSON body',
    ) as CaptureEntry;
    const request = asLegacyRequest(captured);
    const result = migration.requestUp({ ...request, headers: { ...request.headers, 'content-type': '' } });
    expect(result.kind === 'answer' && JSON.stringify(result.answer.body)).toBe(captured.response?.body);
    expect(result.kind === 'answer' && result.answer.status).toBe(400);
  });
});

describe('connection-metadata responseDown', () => {
  const sent = '{"connection_id":"c","provider_config_key":"k","metadata":{"a":1}}';
  const context = { serialised: Buffer.from(sent), legacyPath: '/connection/metadata' };

  it('keeps the successor echo byte for byte, with the legacy status', () => {
    const body = Buffer.from(sent);
    expect(
      migration.responseDown?.({ status: 200, headers: {}, body }, { ...context, successStatus: 201 }),
    ).toEqual({
      status: 201,
    });
  });

  it('rebuilds the legacy body from the request when the successor answers otherwise', () => {
    const merged = Buffer.from('{"connection_id":"c","provider_config_key":"k","metadata":{"a":1,"old":2}}');
    const answer = migration.responseDown?.(
      { status: 200, headers: {}, body: merged },
      { ...context, successStatus: 200 },
    );
    expect(answer?.body?.toString()).toBe(sent);
    expect(patch.validateResponse(200, JSON.parse(answer?.body?.toString() ?? ''))).toBe(true);
  });

  it('passes errors back unchanged', () => {
    const body = Buffer.from('{"error":{"code":"unknown_connection","message":"x"}}');
    expect(
      migration.responseDown?.({ status: 404, headers: {}, body }, { ...context, successStatus: 200 }),
    ).toEqual({
      status: 404,
    });
  });

  it('names the legacy path in a 429, as Nango does for the path that was called (rate-limit.json)', () => {
    const [successor, legacy] = loadCaptures('rate-limit.json');
    const answer = migration.responseDown?.(
      { status: 429, headers: {}, body: Buffer.from(successor?.response?.body ?? '') },
      { ...context, successStatus: 200 },
    );
    expect(answer?.status).toBe(429);
    expect(answer?.body?.toString()).toBe(legacy?.response?.body);
  });
});

describe('the legacy response schema', () => {
  it('accepts every captured legacy success body, and refuses one without metadata', () => {
    const successes = legacyCaptures().filter((entry) => entry.response && entry.response.status < 300);
    expect(successes.length).toBeGreaterThan(20);
    for (const entry of successes) {
      const validators = entry.request?.method === 'POST' ? post : patch;
      expect(validators.validateResponse(entry.response?.status ?? 0, entry.response?.json)).toBe(true);
    }
    expect(patch.validateResponse(200, { connection_id: 'c', provider_config_key: 'k' })).toBe(false);
  });
});

describe('the body schema, against Nango own zod 4.0.5 schema', () => {
  const VALID = { connection_id: 'conn-1', provider_config_key: 'unauth', metadata: { a: 1 } };
  const field = fc.constantFrom('connection_id', 'provider_config_key', 'metadata');
  // Strings that break the patterns, the length or both (the pattern before the length, as zod checks them).
  const text = fc.oneof(
    fc.string({ maxLength: 300 }),
    fc.integer({ min: 0, max: 400 }).map((length) => 'a'.repeat(length)),
    fc.integer({ min: 250, max: 300 }).map((length) => '!'.repeat(length)),
  );
  const value = fc.oneof(
    text,
    fc.jsonValue({ maxDepth: 2 }),
    fc.array(fc.oneof(text, fc.integer()), { maxLength: 3 }),
  );
  const body = fc
    .array(
      fc.oneof(
        field.map((key) => ({ key, drop: true as const })),
        fc.tuple(fc.oneof(field, fc.string({ maxLength: 8 })), value).map(([key, set]) => ({ key, set })),
      ),
      { minLength: 1, maxLength: 3 },
    )
    .map((changes) => {
      const changed: Record<string, unknown> = { ...VALID };
      for (const change of changes) {
        if ('drop' in change) delete changed[change.key];
        else changed[change.key] = change.set;
      }
      return changed;
    });

  it('gives the same issues, in the same order, for any near-valid body', () => {
    fc.assert(
      fc.property(body, (candidate) => {
        expect(patch.validateBody(candidate)).toEqual(metadataBodyErrors(candidate));
      }),
      { numRuns: 2000 },
    );
  });

  it('lists a string that breaks both the pattern and the length as zod does: the pattern first', () => {
    const both = { ...VALID, provider_config_key: '!'.repeat(300) };
    expect(patch.validateBody(both)?.map((issue) => issue.code)).toEqual(['invalid_format', 'too_big']);
    expect(patch.validateBody(both)).toEqual(metadataBodyErrors(both));
  });

  it('quotes unknown keys as zod does, without escaping them', () => {
    const extra = { ...VALID, 'a"b\\': 1 };
    expect(patch.validateBody(extra)).toEqual([
      { code: 'unrecognized_keys', message: 'Unrecognized key: "a"b\\"', path: [] },
    ]);
    expect(patch.validateBody(extra)).toEqual(metadataBodyErrors(extra));
  });
});
