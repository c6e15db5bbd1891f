/**
 * A stateful stand-in for a Nango 0.71.4 server, faithful to the recorded captures in
 * ../shared/fixtures/nango-captures (test/fake-nango.test.ts replays them against it).
 * It speaks only the connection and metadata API the shim fronts, for one account with two
 * environments: `dev` (DEV_KEY, owns everything) and `prod` (PROD_KEY, empty).
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import * as z from 'zod';

/** Stands for `<SECRET_KEY>` in the captures: the dev environment, which owns every connection. */
export const DEV_KEY = '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b';
/** Stands for `<PROD_SECRET_KEY>` in the captures: the prod environment of the same account. */
export const PROD_KEY = 'a8b7c6d5-e4f3-4a2b-9c1d-0e9f8a7b6c5d';

export interface FakeNangoOptions {
  /** Serve the deprecated `/connection…` routes as Nango 0.71.4 still does. Default false: they 404. */
  legacyRoutes?: boolean;
  /** Start with the integration and connections setup.json created. Default true; false starts empty. */
  seed?: boolean;
  /** Answer 429 past this many authenticated requests per account per 60 s. Default: never limit. */
  rateLimit?: number;
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface FakeNango {
  url: string;
  port: number;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export async function startFakeNango(options: FakeNangoOptions = {}): Promise<FakeNango> {
  const requests: RecordedRequest[] = [];
  const database = options.seed === false ? emptyDatabase() : seededDatabase();
  const server = http.createServer(createFakeNangoApp(database, options, requests));
  // Nango answers `Keep-Alive: timeout=61` (every capture).
  server.keepAliveTimeout = 61_000;
  const port = await listenOnFreePort(server);
  return { url: `http://127.0.0.1:${port}`, port, requests, close: once(() => closeServer(server)) };
}

function listenOnFreePort(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        reject(new Error('fake Nango is not listening on a TCP port'));
        return;
      }
      resolve(address.port);
    });
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((error) => (error ? reject(error) : resolve()));
    server.closeAllConnections();
  });
}

function once(close: () => Promise<void>): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => {
    closing ??= close();
    return closing;
  };
}

// ---------------------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------------------

type EnvironmentName = 'dev' | 'prod';

const ENVIRONMENT_BY_KEY: ReadonlyMap<string, EnvironmentName> = new Map([
  [DEV_KEY, 'dev'],
  [PROD_KEY, 'prod'],
]);

/** A Postgres timestamptz: JS dates stop at milliseconds, list items show microseconds. */
interface Timestamp {
  epochMs: number;
  micros: number;
}

interface Integration {
  environment: EnvironmentName;
  uniqueKey: string;
  provider: string;
  displayName: string;
  forwardWebhooks: boolean;
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

interface Connection {
  id: number;
  environment: EnvironmentName;
  connectionId: string;
  providerConfigKey: string;
  provider: string;
  metadata: Jsonb;
  connectionConfig: Jsonb;
  tags: Record<string, string>;
  createdAt: Timestamp;
  updatedAt: Timestamp;
  lastFetchedAt: Timestamp | null;
}

interface Database {
  integrations: Integration[];
  connections: Connection[];
  lastId: number;
}

/** The one provider the captures use (setup.json): auth mode NONE, so credentials are `{}`. */
const PROVIDERS: ReadonlyMap<string, { authMode: string; displayName: string }> = new Map([
  ['unauthenticated', { authMode: 'NONE', displayName: 'Unauthenticated' }],
]);

/** NANGO_SERVER_URL of the captured server; it shows in integration logos (setup.json). */
const SERVER_URL = 'http://localhost:3003';

/** What setup.json created: ids and creation times as GET /connections reports them (connection-get.json). */
const SEED_CONNECTIONS: ReadonlyArray<readonly [id: number, connectionId: string, created: string]> = [
  [1, 'conn-1', '2026-11-25T23:47:41.52333+00:00'],
  [2, 'conn-2', '2026-11-25T23:47:41.554139+00:00'],
  [3, 'conn-3', '2026-11-25T23:47:41.578537+00:00'],
  [4, 'conn-4', '2026-11-25T23:47:41.597841+00:00'],
  [5, 'conn-5', '2026-11-25T23:47:41.620324+00:00'],
  [6, 'conn-6', '2026-11-25T23:47:41.650121+00:00'],
  [7, 'acme@example.com', '2026-11-25T23:47:41.684573+00:00'],
  [8, 'sdk-1', '2026-11-25T23:47:41.702148+00:00'],
  [9, 'sdk-2', '2026-11-25T23:47:41.717739+00:00'],
  [10, 'sdk67-1', '2026-11-25T23:47:41.734172+00:00'],
  [11, 'sdk67-2', '2026-11-25T23:47:41.755173+00:00'],
];

function emptyDatabase(): Database {
  return { integrations: [], connections: [], lastId: 0 };
}

function seededDatabase(): Database {
  const integrationCreated = parseTimestamp('2026-11-25T23:47:41.498+00:00');
  const integration: Integration = {
    environment: 'dev',
    uniqueKey: 'unauth',
    provider: 'unauthenticated',
    displayName: 'Unauthenticated test',
    forwardWebhooks: true,
    createdAt: integrationCreated,
    updatedAt: integrationCreated,
  };
  const connections = SEED_CONNECTIONS.map(([id, connectionId, created]): Connection => {
    const createdAt = parseTimestamp(created);
    return {
      id,
      environment: 'dev',
      connectionId,
      providerConfigKey: 'unauth',
      provider: 'unauthenticated',
      metadata: toJsonb({ seeded: true, name: connectionId }),
      connectionConfig: toJsonb({}),
      tags: {},
      createdAt,
      updatedAt: createdAt,
      lastFetchedAt: null,
    };
  });
  return { integrations: [integration], connections, lastId: connections.length };
}

function findIntegration(database: Database, environment: EnvironmentName, uniqueKey: string) {
  return database.integrations.find((i) => i.environment === environment && i.uniqueKey === uniqueKey);
}

function findConnection(
  database: Database,
  environment: EnvironmentName,
  connectionId: string,
  providerConfigKey: string,
): Connection | undefined {
  return database.connections.find(
    (c) =>
      c.environment === environment &&
      c.connectionId === connectionId &&
      c.providerConfigKey === providerConfigKey,
  );
}

// ---------------------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------------------

function now(): Timestamp {
  return { epochMs: Date.now(), micros: 0 };
}

function parseTimestamp(text: string): Timestamp {
  const match = /^(.+T\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\+00:00$/.exec(text);
  if (!match?.[1]) throw new Error(`not a UTC timestamp: ${text}`);
  const fraction = Number((match[2] ?? '').padEnd(6, '0'));
  return { epochMs: Date.parse(`${match[1]}Z`) + Math.floor(fraction / 1000), micros: fraction % 1000 };
}

/** `2026-11-25T23:47:41.523Z`: what a freshly inserted row looks like (setup.json). */
function isoTimestamp(timestamp: Timestamp): string {
  return new Date(timestamp.epochMs).toISOString();
}

/** `2026-11-25T23:47:41.523+00:00`: a single connection (connection-get.json). */
function millisTimestamp(timestamp: Timestamp): string {
  return isoTimestamp(timestamp).replace('Z', '+00:00');
}

/** `2026-11-25T23:47:41.52333+00:00`: Postgres text, trailing zeros trimmed (GET /connections list). */
function microsTimestamp(timestamp: Timestamp): string {
  const iso = isoTimestamp(timestamp);
  const fraction = `${iso.slice(20, 23)}${String(timestamp.micros).padStart(3, '0')}`.replace(/0+$/, '');
  return `${iso.slice(0, 19)}${fraction ? `.${fraction}` : ''}+00:00`;
}

// ---------------------------------------------------------------------------------------------------------
// JSONB: Postgres keeps object keys sorted by byte length, then bytewise (metadata-patch.json "GET conn-2 at
// end" puts "näme" between "name" and "nested"). A Map keeps that order even for keys like "10", which a
// plain object would hoist.
// ---------------------------------------------------------------------------------------------------------

type Jsonb = null | boolean | number | string | Jsonb[] | Map<string, Jsonb>;

function toJsonb(value: unknown): Jsonb {
  if (Array.isArray(value)) return value.map(toJsonb);
  if (isRecord(value)) {
    const keys = Object.keys(value).sort(compareJsonbKeys);
    return new Map(keys.map((key) => [key, toJsonb(value[key])]));
  }
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value;
  return null;
}

function compareJsonbKeys(left: string, right: string): number {
  const a = Buffer.from(left);
  const b = Buffer.from(right);
  return a.length - b.length || Buffer.compare(a, b);
}

function fromJsonb(value: Jsonb): unknown {
  if (Array.isArray(value)) return value.map(fromJsonb);
  if (value instanceof Map)
    return Object.fromEntries([...value].map(([key, item]) => [key, fromJsonb(item)]));
  return value;
}

/** Nango's updateMetadata is a JS spread, so an array body merges in as `{"0":…,"1":…}` (path-style.json). */
function mergeMetadata(existing: Jsonb, incoming: unknown): Jsonb {
  return toJsonb(Object.assign({}, fromJsonb(existing), incoming));
}

/** JSON.stringify that also writes Maps, in their order. */
function stringifyJson(value: unknown): string {
  if (value instanceof Map) {
    const members = [...value].map(([key, item]) => `${JSON.stringify(key)}:${stringifyJson(item)}`);
    return `{${members.join(',')}}`;
  }
  if (Array.isArray(value)) return `[${value.map(stringifyJson).join(',')}]`;
  if (isRecord(value)) {
    const members = Object.entries(value)
      .filter(([, item]) => item !== undefined)
      .map(([key, item]) => `${JSON.stringify(key)}:${stringifyJson(item)}`);
    return `{${members.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Map);
}

// ---------------------------------------------------------------------------------------------------------
// Public API shapes (field order from connection-get.json and setup.json)
// ---------------------------------------------------------------------------------------------------------

/** The fields every connection shape starts with, in Nango's order. */
function connectionSummary(connection: Connection) {
  return {
    id: connection.id,
    connection_id: connection.connectionId,
    provider_config_key: connection.providerConfigKey,
    provider: connection.provider,
    errors: [],
    end_user: null,
    tags: connection.tags,
    metadata: connection.metadata,
  };
}

function connectionBody(connection: Connection, timestamp: (t: Timestamp) => string) {
  return {
    ...connectionSummary(connection),
    connection_config: connection.connectionConfig,
    webhook_url_override: null,
    created_at: timestamp(connection.createdAt),
    updated_at: timestamp(connection.updatedAt),
    last_fetched_at: connection.lastFetchedAt && timestamp(connection.lastFetchedAt),
    credentials: {},
  };
}

function connectionListItem(connection: Connection) {
  return {
    ...connectionSummary(connection),
    created: microsTimestamp(connection.createdAt),
  };
}

function integrationBody(integration: Integration) {
  return {
    unique_key: integration.uniqueKey,
    provider: integration.provider,
    display_name: integration.displayName,
    logo: `${SERVER_URL}/images/template-logos/${integration.provider}.svg`,
    forward_webhooks: integration.forwardWebhooks,
    created_at: isoTimestamp(integration.createdAt),
    updated_at: isoTimestamp(integration.updatedAt),
  };
}

function sendJson(res: Response, status: number, body: unknown): void {
  res.status(status).type('application/json').send(stringifyJson(body));
}

// ---------------------------------------------------------------------------------------------------------
// Validation: Nango's own zod 4.0.5 schemas (packages/server/lib/helpers/validation.ts) and zodErrorToHTTP
// ---------------------------------------------------------------------------------------------------------

const connectionIdSchema = z
  .string()
  .regex(/^[a-zA-Z0-9,.;:=+~[\]|@${}"'\\/_ -]+$/)
  .max(255);
const providerConfigKeySchema = z
  .string()
  .regex(/^[a-zA-Z0-9~:.@ _-]+$/)
  .max(255);
const stringBoolSchema = z.enum(['true', 'false']);
const endUserIdSchema = z.string().min(1).max(255);

const emptyQuerySchema = z.object({}).strict();

const metadataBodySchema = z
  .object({
    connection_id: z.union([connectionIdSchema, z.array(connectionIdSchema)]),
    provider_config_key: providerConfigKeySchema,
    metadata: z.record(z.string(), z.unknown()),
  })
  .strict();

const connectionParamsSchema = z.object({ connectionId: connectionIdSchema }).strict();

const getConnectionQuerySchema = z
  .object({
    provider_config_key: providerConfigKeySchema,
    refresh_token: stringBoolSchema.optional(),
    force_refresh: stringBoolSchema.optional(),
  })
  .strict();

const deleteConnectionQuerySchema = z.object({ provider_config_key: providerConfigKeySchema }).strict();

const listConnectionsQuerySchema = z
  .object({
    connectionId: z.string().min(1).max(255).optional(),
    search: z.string().min(1).max(255).optional(),
    endUserId: endUserIdSchema.optional(),
    integrationId: z.string().min(1).optional(),
    endUserOrganizationId: endUserIdSchema.optional(),
  })
  .strict();

const CREDENTIAL_TYPES = [
  'OAUTH2',
  'OAUTH2_CC',
  'OAUTH1',
  'API_KEY',
  'BASIC',
  'NONE',
  'TBA',
  'APP',
  'CUSTOM',
] as const;

/** POST /connections (import), reduced to what an auth-mode-NONE provider needs. */
const postConnectionBodySchema = z
  .object({
    provider_config_key: z.string(),
    metadata: z.record(z.string(), z.unknown()).optional(),
    connection_config: z.looseObject({}).optional(),
    connection_id: z.string().optional(),
    credentials: z.looseObject({ type: z.enum(CREDENTIAL_TYPES) }),
    tags: z.record(z.string(), z.string()).optional(),
  })
  .strict();

const postIntegrationBodySchema = z
  .object({
    provider: z
      .string()
      .regex(/^[a-zA-Z0-9_-]+$/)
      .max(255),
    unique_key: providerConfigKeySchema,
    display_name: z.string().min(1).max(255).optional(),
    forward_webhooks: z.boolean().optional(),
  })
  .strict();

/** The `errors` Nango gives a body on `/connection(s)/metadata`, or null when its schema accepts it. */
export function metadataBodyErrors(body: unknown): ReturnType<typeof toValidationErrors> | null {
  const parsed = metadataBodySchema.safeParse(body);
  return parsed.success ? null : toValidationErrors(parsed.error);
}

function toValidationErrors(error: z.ZodError) {
  return error.issues.map(({ code, message, path }) => ({ code, message, path: path.map(String) }));
}

function sendValidationError(
  res: Response,
  code: 'invalid_body' | 'invalid_query_params' | 'invalid_uri_params',
  error: z.ZodError,
): void {
  res.status(400).send({ error: { code, errors: toValidationErrors(error) } });
}

/** Nango's requireEmptyQuery: answers 400 and returns true when the query string is not empty. */
function rejectQuery(req: Request, res: Response): boolean {
  const result = emptyQuerySchema.safeParse(req.query);
  if (result.success) return false;
  sendValidationError(res, 'invalid_query_params', result.error);
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Middleware, in Nango's order: security headers, JSON parser, cors, content type, auth, rate limit
// ---------------------------------------------------------------------------------------------------------

/** Nango's helmet output (every capture); the long Content-Security-Policy-Report-Only is left out. */
const SECURITY_HEADERS: ReadonlyArray<readonly [string, string]> = [
  ['X-XSS-Protection', '0'],
  ['X-Content-Type-Options', 'nosniff'],
  ['X-Download-Options', 'noopen'],
  ['X-Frame-Options', 'SAMEORIGIN'],
  ['X-DNS-Prefetch-Control', 'off'],
  ['Referrer-Policy', 'strict-origin'],
  ['Strict-Transport-Security', 'max-age=5184000; includeSubDomains'],
];

const CORS_EXPOSED_HEADERS =
  'Authorization, Etag, Content-Type, Content-Length, X-Nango-Signature, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset';
const CORS_ALLOWED_HEADERS =
  'Authorization,Content-Type,Accept,Origin,X-Requested-With,Nango-Activity-Log-Id,Nango-Is-Dry-Run,Nango-Is-Sync,Provider-Config-Key,Connection-Id,Sentry-Trace,Baggage';

/** NANGO_SERVER_PUBLIC_BODY_LIMIT default (nango-api.md §1). */
const BODY_LIMIT = '75mb';
const DEFAULT_RATE_LIMIT_PER_MIN = 200;
const RATE_LIMIT_WINDOW_MS = 60_000;

function recordRequests(
  requests: RecordedRequest[],
  pending: WeakMap<http.IncomingMessage, RecordedRequest>,
) {
  return function recordRequest(req: Request, _res: Response, next: NextFunction): void {
    const record: RecordedRequest = { method: req.method, url: req.url, headers: req.headers, body: '' };
    requests.push(record);
    pending.set(req, record);
    next();
  };
}

function keepJsonBody(pending: WeakMap<http.IncomingMessage, RecordedRequest>) {
  return function keepJsonBody(req: http.IncomingMessage, _res: http.ServerResponse, body: Buffer): void {
    const record = pending.get(req);
    if (record) record.body = body.toString('utf8');
  };
}

/** The JSON parser only reads JSON; read the rest too so every recorded request has its body. */
function readUnparsedBody(pending: WeakMap<http.IncomingMessage, RecordedRequest>) {
  return async function readUnparsedBody(req: Request, _res: Response, next: NextFunction): Promise<void> {
    const record = pending.get(req);
    if (record && !req.readableEnded) record.body = await readText(req);
    next();
  };
}

async function readText(stream: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function setSecurityHeaders(_req: Request, res: Response, next: NextFunction): void {
  for (const [name, value] of SECURITY_HEADERS) res.setHeader(name, value);
  next();
}

/** The cors package as Nango configures it: any origin, and every OPTIONS is a preflight. */
function cors(req: Request, res: Response, next: NextFunction): void {
  res.setHeader('Access-Control-Allow-Origin', '*');
  if (req.method !== 'OPTIONS') {
    res.setHeader('Access-Control-Expose-Headers', CORS_EXPOSED_HEADERS);
    next();
    return;
  }
  res.setHeader('Access-Control-Allow-Methods', 'GET,HEAD,PUT,PATCH,POST,DELETE');
  // Lower case on the wire, as captured (metadata-patch.json "CORS preflight OPTIONS").
  res.setHeader('access-control-allow-headers', CORS_ALLOWED_HEADERS);
  res.setHeader('Access-Control-Max-Age', '600');
  res.setHeader('Access-Control-Expose-Headers', CORS_EXPOSED_HEADERS);
  res.setHeader('Content-Length', '0');
  res.status(204).end();
}

function requireJsonContentType(req: Request, res: Response, next: NextFunction): void {
  const contentType = req.headers['content-type'];
  if (contentType && !contentType.startsWith('application/json')) {
    res.status(415).json({
      error: { code: 'invalid_content_type', message: 'Content-Type header must be application/json' },
    });
    return;
  }
  next();
}

const AUTH_ERROR_MESSAGES = {
  missing_auth_header: 'Authentication failed. The request is missing the Authorization header.',
  malformed_auth_header: 'Authentication failed. The Authorization header is malformed.',
  invalid_secret_key_format: 'Authentication failed. The provided secret key is not a UUID v4.',
  unknown_account: 'Authentication failed. The provided authorization header does not match any account.',
} as const;

const UUID_V4 = /^[0-9A-F]{8}-[0-9A-F]{4}-[4][0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/i;

function authenticate(req: Request, res: Response, next: NextFunction): void {
  const result = resolveSecretKey(req.get('authorization'));
  if (result.failure) {
    res
      .status(401)
      .send({ error: { message: AUTH_ERROR_MESSAGES[result.failure], code: result.failure, payload: {} } });
    return;
  }
  res.locals.environment = result.environment;
  next();
}

type AuthFailure = keyof typeof AUTH_ERROR_MESSAGES;

/** Nango's secretKeyAuth: `split('Bearer ').pop()`, so a bare key without a scheme is accepted too. */
function resolveSecretKey(
  authorization: string | undefined,
): { failure: AuthFailure; environment?: never } | { failure?: never; environment: EnvironmentName } {
  if (!authorization) return { failure: 'missing_auth_header' };
  const secret = authorization.split('Bearer ').pop();
  if (!secret) return { failure: 'malformed_auth_header' };
  if (!UUID_V4.test(secret)) return { failure: 'invalid_secret_key_format' };
  const environment = ENVIRONMENT_BY_KEY.get(secret);
  return environment ? { environment } : { failure: 'unknown_account' };
}

function environmentOf(res: Response): EnvironmentName {
  const environment: unknown = res.locals.environment;
  if (environment === 'dev' || environment === 'prod') return environment;
  throw new Error('request reached a handler without authentication');
}

interface RateWindow {
  startedAt: number;
  consumed: number;
}

/** rate-limiter-flexible's in-memory limiter keyed per account, as Nango's rateLimiterMiddleware uses it. */
function createRateLimiter(limit: number | undefined) {
  const windows = new Map<string, RateWindow>();
  const points = limit ?? DEFAULT_RATE_LIMIT_PER_MIN;
  return function rateLimit(req: Request, res: Response, next: NextFunction): void {
    const key = req.get('Nango-Is-Script') === 'true' ? 'account-secret-0-script' : 'account-secret-0';
    const window = consume(windows, key, Date.now());
    const msBeforeNext = window.startedAt + RATE_LIMIT_WINDOW_MS - Date.now();
    res.setHeader('X-RateLimit-Limit', points);
    res.setHeader('X-RateLimit-Remaining', Math.max(points - window.consumed, 0));
    res.setHeader('X-RateLimit-Reset', Math.floor((Date.now() + msBeforeNext) / 1000));
    if (limit === undefined || window.consumed <= limit) {
      next();
      return;
    }
    res.setHeader('Retry-After', Math.floor(msBeforeNext / 1000));
    res.status(429).send({ error: { code: 'too_many_request', method: req.method, path: req.path } });
  };
}

function consume(windows: Map<string, RateWindow>, key: string, at: number): RateWindow {
  const current = windows.get(key);
  const window =
    current && at < current.startedAt + RATE_LIMIT_WINDOW_MS ? current : { startedAt: at, consumed: 0 };
  window.consumed += 1;
  windows.set(key, window);
  return window;
}

/** routes.ts' final error handler: only body-parser's parse failure has its own answer. */
function handleError(error: unknown, _req: Request, res: Response, next: NextFunction): void {
  if (res.headersSent) {
    next(error);
    return;
  }
  if (isJsonParseFailure(error)) {
    // The captures' wording (Node 20's V8): V8 12 and later (Node 22, 24) append ` (line 1 column 2)`.
    const message = error.message.replace(/ \(line \d+ column \d+\)$/, '');
    res.status(400).send({ error: { code: 'invalid_json', message } });
    return;
  }
  const supportId = randomUUID();
  res.status(500).send({
    error: {
      message: `An error occurred. Please contact support with this unique id: "${supportId}"`,
      code: 'generic_error_support',
      payload: supportId,
    },
  });
}

function isJsonParseFailure(error: unknown): error is Error {
  return error instanceof Error && 'type' in error && error.type === 'entity.parse.failed';
}

// ---------------------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------------------

type MetadataWrite = 'merge' | 'replace';

/** PATCH merges (200), POST replaces (201); both echo the parsed request body. */
const WRITE_STATUS: Record<MetadataWrite, number> = { merge: 200, replace: 201 };

function unknownConnectionError(connectionId: string, providerConfigKey: string, manyIds: boolean) {
  const message = `Connection with connection id ${connectionId} and provider config key ${providerConfigKey} not found. Please make sure the connection exists in the Nango dashboard`;
  return {
    error: {
      code: 'unknown_connection',
      message: manyIds
        ? `${message}. No actions were taken on any of the connections as a result of this failure.`
        : message,
    },
  };
}

/** The NangoError shape of the path-style routes (path-style.json "PATCH path-style unknown connection"). */
function legacyUnknownConnectionError(connectionId: string, providerConfigKey: string) {
  const payload = { connectionId, providerConfigKey };
  return {
    error: {
      message: `No connection matching the provided params of 'connection_id' and 'provider_config_key'. Please make sure these values exist in the Nango dashboard ${JSON.stringify(payload, null, 2)}`,
      code: 'unknown_connection',
      payload,
    },
  };
}

function writeMetadata(database: Database, mode: MetadataWrite): RequestHandler {
  return function writeMetadata(req, res) {
    if (rejectQuery(req, res)) return;
    const parsed = metadataBodySchema.safeParse(req.body);
    if (!parsed.success) return sendValidationError(res, 'invalid_body', parsed.error);
    const { connection_id, provider_config_key: providerConfigKey, metadata } = parsed.data;
    const ids = typeof connection_id === 'string' ? [connection_id] : connection_id;
    const environment = environmentOf(res);
    const connections: Connection[] = [];
    // Every id is looked up before anything is written: one unknown id aborts the whole call.
    for (const id of ids) {
      const connection = findConnection(database, environment, id, providerConfigKey);
      if (!connection) {
        res.status(404).send(unknownConnectionError(id, providerConfigKey, ids.length > 1));
        return;
      }
      connections.push(connection);
    }
    for (const connection of connections) {
      connection.metadata =
        mode === 'merge' ? mergeMetadata(connection.metadata, metadata) : toJsonb(metadata);
    }
    res.status(WRITE_STATUS[mode]).send(req.body);
  };
}

/** `/connection/:connectionId/metadata`: no validation at all, the body itself is the metadata. */
function writeLegacyMetadata(database: Database, mode: MetadataWrite): RequestHandler {
  return function writeLegacyMetadata(req, res) {
    const connectionId = firstString(req.params.connectionId) || req.get('Connection-Id');
    const providerConfigKey = firstString(req.query.provider_config_key) || req.get('Provider-Config-Key');
    if (!connectionId || !providerConfigKey) {
      // Nango's getConnection throws here: a 500 with a fresh support id (path-style.json "missing provider_config_key").
      throw new Error('getConnection needs a connection id and a provider config key');
    }
    const connection = findConnection(database, environmentOf(res), connectionId, providerConfigKey);
    if (!connection) {
      res.status(404).send(legacyUnknownConnectionError(connectionId, providerConfigKey));
      return;
    }
    const body: unknown = req.body;
    if (body !== undefined) {
      connection.metadata = mode === 'merge' ? mergeMetadata(connection.metadata, body) : toJsonb(body);
    }
    res.status(WRITE_STATUS[mode]).send(body);
  };
}

function getConnection(database: Database): RequestHandler {
  return function getConnection(req, res) {
    const query = getConnectionQuerySchema.safeParse(req.query);
    if (!query.success) return sendValidationError(res, 'invalid_query_params', query.error);
    const params = connectionParamsSchema.safeParse(req.params);
    if (!params.success) return sendValidationError(res, 'invalid_uri_params', params.error);
    const environment = environmentOf(res);
    const providerConfigKey = query.data.provider_config_key;
    if (!findIntegration(database, environment, providerConfigKey)) {
      res
        .status(400)
        .send({ error: { code: 'unknown_provider_config', message: 'Provider does not exists' } });
      return;
    }
    const connection = findConnection(database, environment, params.data.connectionId, providerConfigKey);
    if (!connection) {
      res.status(404).send({ error: { code: 'not_found', message: 'Failed to find connection' } });
      return;
    }
    // Every read bumps last_fetched_at, so the ETag never repeats (connection-get.json "If-None-Match").
    connection.lastFetchedAt = now();
    sendJson(res, 200, connectionBody(connection, millisTimestamp));
  };
}

function listConnections(database: Database): RequestHandler {
  return function listConnections(req, res) {
    const query = listConnectionsQuerySchema.safeParse(req.query);
    if (!query.success) return sendValidationError(res, 'invalid_query_params', query.error);
    const environment = environmentOf(res);
    const { connectionId, search, integrationId, endUserId, endUserOrganizationId } = query.data;
    const integrationIds = integrationId?.split(',').map((id) => id.trim());
    const connections = database.connections
      .filter((c) => c.environment === environment)
      .filter((c) => connectionId === undefined || c.connectionId === connectionId)
      .filter((c) => search === undefined || c.connectionId.toLowerCase().includes(search.toLowerCase()))
      .filter((c) => integrationIds === undefined || integrationIds.includes(c.providerConfigKey))
      // No connection has an end user, so any end-user filter matches nothing.
      .filter(() => endUserId === undefined && endUserOrganizationId === undefined)
      .sort((a, b) => b.id - a.id);
    sendJson(res, 200, { connections: connections.map(connectionListItem) });
  };
}

function deleteConnection(database: Database): RequestHandler {
  return function deleteConnection(req, res) {
    const params = connectionParamsSchema.safeParse(req.params);
    if (!params.success) return sendValidationError(res, 'invalid_uri_params', params.error);
    const query = deleteConnectionQuerySchema.safeParse(req.query);
    if (!query.success) return sendValidationError(res, 'invalid_query_params', query.error);
    const connection = findConnection(
      database,
      environmentOf(res),
      params.data.connectionId,
      query.data.provider_config_key,
    );
    if (!connection) {
      res.status(400).send({ error: { code: 'unknown_connection' } });
      return;
    }
    database.connections = database.connections.filter((c) => c !== connection);
    res.status(200).send({ success: true });
  };
}

/** POST /connections (import): upserts, like connectionService.upsertUnauthConnection. */
function postConnection(database: Database): RequestHandler {
  return function postConnection(req, res) {
    if (rejectQuery(req, res)) return;
    const parsed = postConnectionBodySchema.safeParse(req.body);
    if (!parsed.success) return sendValidationError(res, 'invalid_body', parsed.error);
    const body = parsed.data;
    const environment = environmentOf(res);
    const integration = findIntegration(database, environment, body.provider_config_key);
    if (!integration) {
      res.status(404).send({ error: { code: 'not_found', message: 'Integration does not exist' } });
      return;
    }
    const authMode = PROVIDERS.get(integration.provider)?.authMode;
    if (authMode !== body.credentials.type) {
      res.status(400).send({
        error: {
          code: 'invalid_body',
          message: `Provider ${authMode} does not support ${body.credentials.type} auth`,
        },
      });
      return;
    }
    const connection = upsertConnection(database, integration, body.connection_id ?? randomUUID(), {
      metadata: toJsonb(body.metadata ?? {}),
      connectionConfig: toJsonb(body.connection_config ?? {}),
      tags: body.tags ?? {},
    });
    sendJson(res, 201, connectionBody(connection, isoTimestamp));
  };
}

function upsertConnection(
  database: Database,
  integration: Integration,
  connectionId: string,
  values: Pick<Connection, 'metadata' | 'connectionConfig' | 'tags'>,
): Connection {
  const existing = findConnection(database, integration.environment, connectionId, integration.uniqueKey);
  if (existing) {
    Object.assign(existing, values, { updatedAt: now() });
    return existing;
  }
  const createdAt = now();
  database.lastId += 1;
  const connection: Connection = {
    id: database.lastId,
    environment: integration.environment,
    connectionId,
    providerConfigKey: integration.uniqueKey,
    provider: integration.provider,
    ...values,
    createdAt,
    updatedAt: createdAt,
    lastFetchedAt: null,
  };
  database.connections.push(connection);
  return connection;
}

function postIntegration(database: Database): RequestHandler {
  return function postIntegration(req, res) {
    if (rejectQuery(req, res)) return;
    const parsed = postIntegrationBodySchema.safeParse(req.body);
    if (!parsed.success) return sendValidationError(res, 'invalid_body', parsed.error);
    const body = parsed.data;
    const provider = PROVIDERS.get(body.provider);
    if (!provider) return sendInvalidString(res, 'Invalid provider', 'provider');
    const environment = environmentOf(res);
    if (findIntegration(database, environment, body.unique_key)) {
      return sendInvalidString(res, 'Unique key already exists', 'uniqueKey');
    }
    const createdAt = now();
    const integration: Integration = {
      environment,
      uniqueKey: body.unique_key,
      provider: body.provider,
      displayName: body.display_name ?? provider.displayName,
      forwardWebhooks: body.forward_webhooks ?? true,
      createdAt,
      updatedAt: createdAt,
    };
    database.integrations.push(integration);
    res.status(200).send({ data: integrationBody(integration) });
  };
}

function sendInvalidString(res: Response, message: string, field: string): void {
  res
    .status(400)
    .send({ error: { code: 'invalid_body', errors: [{ code: 'invalid_string', message, path: [field] }] } });
}

function health(_req: Request, res: Response): void {
  res.status(200).send({ result: 'ok' });
}

function firstString(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Assembly
// ---------------------------------------------------------------------------------------------------------

function createFakeNangoApp(database: Database, options: FakeNangoOptions, requests: RecordedRequest[]) {
  const pending = new WeakMap<http.IncomingMessage, RecordedRequest>();
  const apiAuth = [authenticate, createRateLimiter(options.rateLimit)];
  const app = express();
  app.disable('x-powered-by');
  app.use(recordRequests(requests, pending));
  app.use(setSecurityHeaders);
  // Before cors: an invalid_json answer carries no CORS headers (metadata-patch.json "malformed JSON").
  app.use(express.json({ limit: BODY_LIMIT, verify: keepJsonBody(pending) }));
  app.use(readUnparsedBody(pending));
  app.get('/health', health);
  app.use(cors);
  app.use('/integrations', requireJsonContentType);
  app.post('/integrations', apiAuth, postIntegration(database));
  for (const base of options.legacyRoutes ? ['/connections', '/connection'] : ['/connections']) {
    app.use(base, requireJsonContentType);
    app.get(base, apiAuth, listConnections(database));
    app.patch(`${base}/metadata`, apiAuth, writeMetadata(database, 'merge'));
    app.post(`${base}/metadata`, apiAuth, writeMetadata(database, 'replace'));
    // Also catches GET/DELETE `…/metadata` as the id "metadata" (connection-get.json), as in Nango.
    app.get(`${base}/:connectionId`, apiAuth, getConnection(database));
    app.delete(`${base}/:connectionId`, apiAuth, deleteConnection(database));
  }
  app.post('/connections', apiAuth, postConnection(database));
  if (options.legacyRoutes) {
    app.post('/connection/:connectionId/metadata', apiAuth, writeLegacyMetadata(database, 'replace'));
    app.patch('/connection/:connectionId/metadata', apiAuth, writeLegacyMetadata(database, 'merge'));
  }
  app.use(handleError);
  return app;
}
