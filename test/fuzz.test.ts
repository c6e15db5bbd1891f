import type { OutgoingHttpHeaders } from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as z from 'zod';
import {
  DEV_KEY,
  type FakeNango,
  PROD_KEY,
  type RecordedRequest,
  startFakeNango,
} from './support/fake-nango.js';
import { type RunningShim, startShim } from './support/shim.js';
import { type RawResponse, request } from './support/upstream.js';

/** Runs per property: enough to reach the odd corners, bounded so the file stays within seconds. */
const RUNS = 250;

/**
 * Nango 0.71.4's own schema for `/connections/metadata` (helpers/validation.ts, nango-api.md §1), with zod
 * 4.0.5 as Nango uses it: the oracle for every body the shim forwards on the body-style route.
 */
const connectionIdSchema = z
  .string()
  .regex(/^[a-zA-Z0-9,.;:=+~[\]|@${}"'\\/_ -]+$/)
  .max(255);
const nangoMetadataBody = z
  .object({
    connection_id: z.union([connectionIdSchema, z.array(connectionIdSchema)]),
    provider_config_key: z
      .string()
      .regex(/^[a-zA-Z0-9~:.@ _-]+$/)
      .max(255),
    metadata: z.record(z.string(), z.unknown()),
  })
  .strict();
/** What the path-style translation always builds, whatever the successor then says of the ids. */
const pathStyleBody = z
  .object({
    connection_id: z.string(),
    provider_config_key: z.string(),
    metadata: z.record(z.string(), z.unknown()),
  })
  .strict();

let fake: FakeNango;
let shim: RunningShim;

beforeAll(async () => {
  // The successor only: a request the shim forwards can only have been translated.
  fake = await startFakeNango({ legacyRoutes: false });
  shim = await startShim(fake.url, { server: { bodyLimitBytes: 64 * 1024 } });
});

afterAll(async () => {
  await shim.close();
  await fake.close();
});

type Route = 'body-style' | 'path-style';

interface Call {
  route: Route;
  method: 'PATCH' | 'POST';
  path: string;
  headers: OutgoingHttpHeaders;
  body: Buffer | undefined;
}

interface Outcome {
  response: RawResponse;
  forwarded: RecordedRequest[];
}

/** Sends one call through the shim and collects what reached the upstream because of it. */
async function send(call: Call): Promise<Outcome> {
  const before = fake.requests.length;
  const response = await request(shim.url, {
    method: call.method,
    path: call.path,
    headers: call.headers,
    ...(call.body === undefined ? {} : { body: call.body }),
  });
  return { response, forwarded: fake.requests.slice(before) };
}

function errorCode(response: RawResponse): unknown {
  try {
    return (JSON.parse(response.body.toString('utf8')) as { error?: { code?: unknown } }).error?.code;
  } catch {
    return undefined;
  }
}

/**
 * The invariants of every hostile call: no 5xx of the shim's own (a path-style call may get the 500
 * `generic_error_support` Nango itself answers there), nothing forwarded but valid translated bodies.
 */
function checkOutcome(call: Call, { response, forwarded }: Outcome): void {
  const code = errorCode(response);
  if (response.status >= 500) {
    expect({ route: call.route, status: response.status, code }).toEqual({
      route: 'path-style',
      status: 500,
      code: 'generic_error_support',
    });
  }
  expect(code).not.toBe('shim_internal_error');
  expect(forwarded.length).toBeLessThanOrEqual(1);
  for (const seen of forwarded) {
    expect(`${seen.method} ${seen.url}`).toBe(`${call.method} /connections/metadata`);
    const body: unknown = JSON.parse(seen.body);
    if (call.route === 'body-style') {
      expect(nangoMetadataBody.safeParse(body).error).toBeUndefined();
      // What was validated is what is sent: the client's own value, re-serialised.
      expect(body).toEqual(JSON.parse(call.body?.toString('utf8') ?? ''));
    } else {
      expect(pathStyleBody.safeParse(body).error).toBeUndefined();
    }
  }
  if (call.route === 'body-style' && forwarded.length === 0)
    expect(response.status).toBeGreaterThanOrEqual(400);
}

// ---------------------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------------------

const VALID = { connection_id: 'conn-1', provider_config_key: 'unauth', metadata: { plan: 'pro' } };

/** Characters node:http's client accepts in a request target (it refuses controls, space and above 0xFF). */
const targetText = (max: number) =>
  fc.stringMatching(new RegExp(`^[A-Za-z0-9%@.:;,=+~'$_()*!\\[\\]{}|^\`"<>-]{1,${max}}$`));

/** Mostly what a client sends, often not: every arbitrary below leans towards calls that get far. */
const queryArbitrary = (route: Route) =>
  fc.oneof(
    { weight: 12, arbitrary: fc.constant(route === 'body-style' ? '' : 'provider_config_key=unauth') },
    fc.constant(''),
    fc.constant('provider_config_key=unauth&provider_config_key=other'),
    fc.constant('provider_config_key='),
    targetText(40),
    fc
      .array(fc.tuple(targetText(12), targetText(12)), { maxLength: 4 })
      .map((pairs) => pairs.map(([key, value]) => `${key}=${value}`).join('&')),
  );

const pathArbitrary = (route: Route) =>
  route === 'body-style'
    ? fc.oneof(
        { weight: 8, arbitrary: fc.constant('/connection/metadata') },
        fc.constantFrom('/connection/metadata/', '/CONNECTION/Metadata'),
      )
    : fc
        .oneof(
          { weight: 6, arbitrary: fc.constant('conn-1') },
          fc.constant('acme%40example.com'),
          targetText(40),
          fc.constant('%E0%A4%A'),
        )
        .map((id) => `/connection/${id}/metadata`);

const contentTypeArbitrary = fc.option(
  fc.oneof(
    { weight: 12, arbitrary: fc.constant('application/json') },
    fc.constantFrom(
      'application/json; charset=utf-8',
      'application/json; charset=UTF-8',
      'application/json; charset=latin1',
      'application/json;charset="utf-16"',
      'APPLICATION/JSON',
      'application/jsonx',
      'application/json-patch+json',
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      '',
    ),
    fc.stringMatching(/^[\x20-\x7e]{0,40}$/),
  ),
  { nil: undefined, freq: 10 },
);

const authorizationArbitrary = fc.option(
  fc.oneof(
    { weight: 12, arbitrary: fc.constant(`Bearer ${DEV_KEY}`) },
    fc.constant(`Bearer ${PROD_KEY}`),
    fc.constant(DEV_KEY),
    fc.constant('Bearer '),
    fc.uuid().map((uuid) => `Bearer ${uuid}`),
    fc.stringMatching(/^[\x21-\x7e]{0,60}$/),
  ),
  { nil: undefined, freq: 10 },
);

function callArbitrary(route: Route, body: fc.Arbitrary<Buffer | undefined>): fc.Arbitrary<Call> {
  return fc
    .record({
      method: fc.constantFrom('PATCH' as const, 'POST' as const),
      path: pathArbitrary(route),
      query: queryArbitrary(route),
      contentType: contentTypeArbitrary,
      authorization: authorizationArbitrary,
      providerConfigKeyHeader: fc.option(fc.constantFrom('unauth', 'other', ''), { nil: undefined, freq: 2 }),
      body,
    })
    .map(({ method, path, query, contentType, authorization, providerConfigKeyHeader, body: bytes }) => {
      const headers: OutgoingHttpHeaders = {};
      if (contentType !== undefined) headers['content-type'] = contentType;
      if (authorization !== undefined) headers.authorization = authorization;
      if (providerConfigKeyHeader !== undefined) headers['provider-config-key'] = providerConfigKeyHeader;
      return { route, method, path: query === '' ? path : `${path}?${query}`, headers, body: bytes };
    });
}

const randomBytes = fc.option(
  fc.uint8Array({ maxLength: 512 }).map((bytes) => Buffer.from(bytes)),
  { nil: undefined },
);

const randomJson = fc
  .oneof(
    fc.json({ maxDepth: 6 }),
    fc.jsonValue({ maxDepth: 6 }).map((value) => JSON.stringify(value)),
    fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 4 })).map((value) => JSON.stringify(value)),
  )
  .map((text) => Buffer.from(text));

/** A valid body with one to three of its parts broken or replaced. */
const nearValidObject = fc
  .array(
    fc.oneof(
      fc.constantFrom('connection_id', 'provider_config_key', 'metadata').map((key) => ({ drop: key })),
      fc
        .tuple(
          fc.constantFrom('connection_id', 'provider_config_key', 'metadata'),
          fc.jsonValue({ maxDepth: 3 }),
        )
        .map(([key, value]) => ({ set: key, value })),
      fc
        .tuple(fc.string({ maxLength: 300 }), fc.constantFrom('connection_id', 'provider_config_key'))
        .map(([value, key]) => ({ set: key, value })),
      fc
        .array(fc.oneof(fc.constant('conn-1'), fc.string({ maxLength: 20 }), fc.integer()), { maxLength: 4 })
        .map((ids) => ({ set: 'connection_id', value: ids })),
      fc
        .tuple(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 2 }))
        .map(([key, value]) => ({ set: key, value })),
      fc.constant({ set: '__proto__', value: { polluted: true } }),
    ),
    { minLength: 1, maxLength: 3 },
  )
  .map((mutations) => {
    const body: Record<string, unknown> = { ...VALID };
    for (const mutation of mutations) {
      if ('drop' in mutation) delete body[mutation.drop];
      else
        Object.defineProperty(body, mutation.set, {
          value: mutation.value,
          enumerable: true,
          configurable: true,
          writable: true,
        });
    }
    return JSON.stringify(body);
  });

/** The valid body's text cut, with a character inserted or replaced, or a duplicate key appended. */
const nearValidText = fc
  .tuple(
    fc.constant(JSON.stringify(VALID)),
    fc.nat(),
    fc.constantFrom('cut', 'insert', 'replace', 'duplicate'),
    fc.string({ minLength: 1, maxLength: 3 }),
  )
  .map(([text, at, how, chars]) => {
    const index = at % (text.length + 1);
    if (how === 'cut') return text.slice(0, index);
    if (how === 'insert') return text.slice(0, index) + chars + text.slice(index);
    if (how === 'replace') return text.slice(0, index) + chars + text.slice(index + chars.length);
    return `${text.slice(0, -1)},"connection_id":${JSON.stringify(chars)}}`;
  });

const nearValid = fc.oneof(nearValidObject, nearValidText).map((text) => Buffer.from(text));

// ---------------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------------

/** Each kind of body, and whether some of its calls must get through (the property is then not vacuous). */
const bodies: Array<[string, fc.Arbitrary<Buffer | undefined>, boolean]> = [
  ['random bytes', randomBytes, false],
  ['random JSON values', randomJson, false],
  ['near-valid bodies', nearValid, true],
];

describe.each(['body-style', 'path-style'] as const)('hostile calls on the %s metadata route', (route) => {
  it.each(bodies)(
    'never get a 5xx of the shim own, and never forward an invalid body: %s',
    async (_name, body, somePass) => {
      let forwarded = 0;
      await fc.assert(
        fc.asyncProperty(callArbitrary(route, body), async (call) => {
          const outcome = await send(call);
          forwarded += outcome.forwarded.length;
          checkOutcome(call, outcome);
        }),
        { numRuns: RUNS },
      );
      if (somePass) expect(forwarded).toBeGreaterThan(0);
      expect(shim.logs().filter((line) => line.level === 'error' || line.msg === 'migration failed')).toEqual(
        [],
      );
      const alive = await request(shim.url, {
        path: '/connections',
        headers: { authorization: `Bearer ${DEV_KEY}` },
      });
      expect(alive.status).toBe(200);
    },
    60_000,
  );
});
