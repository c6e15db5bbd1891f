import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Ajv2020, type ErrorObject } from 'ajv/dist/2020.js';
import { isPlainObject } from './plain-object.js';

export const STAGES = ['passthrough', 'validate', 'canary', 'translate', 'gone'] as const;
export type Stage = (typeof STAGES)[number];

/** Every route the shim knows how to migrate; `routes.<id>` in the config file. */
export const ROUTE_IDS = [
  'connection-metadata',
  'connection-path-metadata',
  'connection-get',
  'connection-list',
  'connection-delete',
] as const;
export type RouteId = (typeof ROUTE_IDS)[number];

/** Whether a value read from a file or a store names a deprecated route this version knows. */
export function isRouteId(value: unknown): value is RouteId {
  return (ROUTE_IDS as readonly unknown[]).includes(value);
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface RateLimitRule {
  windowMs: number;
  limit: number;
}

export interface Brownout {
  start: string;
  durationMinutes: number;
}

export interface RouteConfig {
  stage: Stage;
  canaryPercent: number;
  alwaysTranslate: string[];
  alwaysPassthrough: string[];
  brownouts: Brownout[];
  deprecation: string;
  sunset: string;
  docsUrl: string;
  successorUrl: string;
  rateLimit: RateLimitRule | null;
}

export interface Config {
  upstream: {
    url: string;
    timeoutMs: number;
    caFile: string | null;
    maxSockets: number;
  };
  server: {
    host: string;
    port: number;
    bodyLimitBytes: number;
    shutdownGraceMs: number;
    headersTimeoutMs: number;
    requestTimeoutMs: number;
    keepAliveTimeoutMs: number;
  };
  admin: {
    host: string;
    port: number;
    token: string | null;
  };
  log: {
    level: LogLevel;
    passthrough: boolean;
  };
  dataDir: string;
  redisUrl: string | null;
  routes: Record<RouteId, RouteConfig>;
  consumers: Record<string, string>;
  metrics: { maxConsumers: number };
  ledger: { flushIntervalMs: number; quietPeriodDays: number; redisBufferMax: number };
  rateLimit: { failOpen: boolean; passthrough: RateLimitRule | null };
}

/** A resolved config plus what identifies it: the hash of its content. */
export interface ActiveConfig {
  config: Readonly<Config>;
  version: string;
  /**
   * Restart-only keys (RESTART_ONLY_KEYS) whose loaded value differs from the one in effect: `config` keeps
   * the value in effect, the loaded one applies after a restart. Empty for a config just parsed.
   */
  pendingRestart: readonly string[];
}

/**
 * Keys read once at start-up (listeners, the upstream's socket pools, stores, the ledger's timer): a reload
 * keeps the values in effect and lists a change to them as pending. Everything else, `server.bodyLimitBytes`
 * included (read per request), follows a reload.
 */
export const RESTART_ONLY_KEYS: readonly string[] = [
  'upstream',
  'server.host',
  'server.port',
  'server.shutdownGraceMs',
  'server.headersTimeoutMs',
  'server.requestTimeoutMs',
  'server.keepAliveTimeoutMs',
  'admin',
  'dataDir',
  'redisUrl',
  'ledger.flushIntervalMs',
];

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const DEFAULT_CONFIG_FILE = new URL('../config/default.json', import.meta.url);

/**
 * The longest delay a Node timer holds (2^31 - 1 ms, about 24.8 days). A longer one fires after 1 ms, with
 * only a warning: a larger `upstream.timeoutMs` would time every translated call out at once.
 */
const MAX_TIMER_MS = 2_147_483_647;
/** A duration in milliseconds, used as a timer's delay. */
const positiveMs = { type: 'integer', minimum: 1, maximum: MAX_TIMER_MS };

const rateLimitRuleSchema = {
  type: ['object', 'null'],
  additionalProperties: false,
  required: ['windowMs', 'limit'],
  properties: {
    windowMs: positiveMs,
    limit: { type: 'integer', minimum: 1 },
  },
};

const isoDate = { type: 'string', format: 'rfc3339-date-time' };
const linkTarget = { type: 'string', format: 'link-target' };

const routeSchema = {
  type: 'object',
  additionalProperties: false,
  required: [
    'stage',
    'canaryPercent',
    'alwaysTranslate',
    'alwaysPassthrough',
    'brownouts',
    'deprecation',
    'sunset',
    'docsUrl',
    'successorUrl',
    'rateLimit',
  ],
  properties: {
    stage: { enum: STAGES },
    canaryPercent: { type: 'number', minimum: 0, maximum: 100 },
    alwaysTranslate: { type: 'array', items: { $ref: '#/$defs/fingerprint' } },
    alwaysPassthrough: { type: 'array', items: { $ref: '#/$defs/fingerprint' } },
    brownouts: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['start', 'durationMinutes'],
        properties: { start: isoDate, durationMinutes: { type: 'number', exclusiveMinimum: 0 } },
      },
    },
    deprecation: isoDate,
    sunset: isoDate,
    docsUrl: linkTarget,
    successorUrl: linkTarget,
    rateLimit: rateLimitRuleSchema,
  },
};

const port = { type: 'integer', minimum: 0, maximum: 65535 };

const CONFIG_SCHEMA = {
  $defs: { fingerprint: { type: 'string', pattern: '^[0-9a-f]{16}$' } },
  type: 'object',
  additionalProperties: false,
  required: [
    'upstream',
    'server',
    'admin',
    'log',
    'dataDir',
    'redisUrl',
    'routes',
    'consumers',
    'metrics',
    'ledger',
    'rateLimit',
  ],
  properties: {
    upstream: {
      type: 'object',
      additionalProperties: false,
      required: ['url', 'timeoutMs', 'caFile', 'maxSockets'],
      properties: {
        url: { type: 'string', pattern: '^https?://' },
        timeoutMs: positiveMs,
        caFile: { type: ['string', 'null'] },
        maxSockets: { type: 'integer', minimum: 1 },
      },
    },
    server: {
      type: 'object',
      additionalProperties: false,
      required: [
        'host',
        'port',
        'bodyLimitBytes',
        'shutdownGraceMs',
        'headersTimeoutMs',
        'requestTimeoutMs',
        'keepAliveTimeoutMs',
      ],
      properties: {
        host: { type: 'string', minLength: 1 },
        port,
        bodyLimitBytes: { type: 'integer', minimum: 1 },
        shutdownGraceMs: { type: 'integer', minimum: 0, maximum: MAX_TIMER_MS },
        headersTimeoutMs: positiveMs,
        requestTimeoutMs: positiveMs,
        keepAliveTimeoutMs: positiveMs,
      },
    },
    admin: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'port', 'token'],
      properties: {
        host: { type: 'string', minLength: 1 },
        port,
        token: { type: ['string', 'null'], minLength: 16, format: 'bearer-token' },
      },
    },
    log: {
      type: 'object',
      additionalProperties: false,
      required: ['level', 'passthrough'],
      properties: { level: { enum: LOG_LEVELS }, passthrough: { type: 'boolean' } },
    },
    dataDir: { type: 'string', minLength: 1 },
    redisUrl: { type: ['string', 'null'], pattern: '^(rediss?|unix|redis\\+unix)://' },
    routes: {
      type: 'object',
      additionalProperties: false,
      required: [...ROUTE_IDS],
      properties: Object.fromEntries(ROUTE_IDS.map((id) => [id, routeSchema])),
    },
    consumers: {
      type: 'object',
      propertyNames: { $ref: '#/$defs/fingerprint' },
      additionalProperties: { type: 'string', minLength: 1, maxLength: 100 },
    },
    metrics: {
      type: 'object',
      additionalProperties: false,
      required: ['maxConsumers'],
      properties: { maxConsumers: { type: 'integer', minimum: 1 } },
    },
    ledger: {
      type: 'object',
      additionalProperties: false,
      required: ['flushIntervalMs', 'quietPeriodDays', 'redisBufferMax'],
      properties: {
        flushIntervalMs: positiveMs,
        quietPeriodDays: { type: 'number', minimum: 0 },
        redisBufferMax: { type: 'integer', minimum: 1 },
      },
    },
    rateLimit: {
      type: 'object',
      additionalProperties: false,
      required: ['failOpen', 'passthrough'],
      properties: { failOpen: { type: 'boolean' }, passthrough: rateLimitRuleSchema },
    },
  },
};

/**
 * RFC 3339 §5.6 `date-time`: a date, "T", a time and an offset ("Z" or ±hh:mm), case-insensitive (§5.6 NOTE).
 * The offset is required: Date.parse reads "2026-03-02T14:00:00" or "March 2, 2026 14:00" in the host's time
 * zone, so one brownout would start at different instants on instances in different zones. A leap second
 * (:60) is refused because Date.parse cannot read it, and so is a day the month does not have (Date.parse
 * reads 2026-02-30 as March 2).
 */
const RFC_3339_DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$/i;
const DATE_TIME_EXPECTED =
  'must be an RFC 3339 date-time with an offset, as in 2026-03-02T14:00:00Z or 2026-03-02T15:00:00+01:00';

/** RFC 3339 Appendix C. */
function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

function isRfc3339DateTime(value: string): boolean {
  const match = RFC_3339_DATE_TIME.exec(value);
  if (match === null) return false;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return false;
  return !Number.isNaN(Date.parse(value));
}

/**
 * RFC 8288 §3: a Link target is a URI (RFC 3986), which is ASCII; anything else is percent-encoded. The
 * value goes into the `Link` header of every deprecated answer, where node:http throws on a character past
 * U+00FF or a control character: unchecked, such a URL passed start-up (or a reload) and the first call
 * to the route brought the whole process down.
 */
const ABSOLUTE_URI = /^[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+$/;
const LINK_TARGET_EXPECTED =
  'must be an absolute URI in ASCII, as in https://example.com/docs/d%C3%A9pr%C3%A9ciation (percent-encode any other character)';

/**
 * The admin token as a client can send it: `Authorization: Bearer <token>` (RFC 6750 §2.1) carries visible
 * ASCII without spaces, and node:http reads header bytes as Latin-1. A token with a space, a non-ASCII
 * letter or the last line break of a Secret created from a file passed start-up and then matched
 * no request ever: every admin path but the health checks answered 401, Prometheus included.
 */
const BEARER_TOKEN = /^[!-~]+$/;
const BEARER_TOKEN_EXPECTED =
  'must be printable ASCII without spaces or line breaks (it is sent as "Authorization: Bearer <token>")';

/** What a value refused by a format must look like, by format. */
const FORMAT_EXPECTED: Record<string, string> = {
  'rfc3339-date-time': DATE_TIME_EXPECTED,
  'link-target': LINK_TARGET_EXPECTED,
  'bearer-token': BEARER_TOKEN_EXPECTED,
};

const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
ajv.addFormat('rfc3339-date-time', { type: 'string', validate: isRfc3339DateTime });
ajv.addFormat('link-target', { type: 'string', validate: ABSOLUTE_URI });
ajv.addFormat('bearer-token', { type: 'string', validate: BEARER_TOKEN });
const validateConfigShape = ajv.compile<Config>(CONFIG_SCHEMA);

/** Environment variables that override the file, and where each one lands. */
const ENV_OVERRIDES: Array<{ name: string; path: string[]; kind: 'string' | 'integer' }> = [
  { name: 'SHIM_UPSTREAM_URL', path: ['upstream', 'url'], kind: 'string' },
  { name: 'SHIM_UPSTREAM_TIMEOUT_MS', path: ['upstream', 'timeoutMs'], kind: 'integer' },
  { name: 'SHIM_UPSTREAM_CA_FILE', path: ['upstream', 'caFile'], kind: 'string' },
  { name: 'SHIM_HOST', path: ['server', 'host'], kind: 'string' },
  { name: 'SHIM_PORT', path: ['server', 'port'], kind: 'integer' },
  { name: 'SHIM_LOG_LEVEL', path: ['log', 'level'], kind: 'string' },
  { name: 'SHIM_ADMIN_HOST', path: ['admin', 'host'], kind: 'string' },
  { name: 'SHIM_ADMIN_PORT', path: ['admin', 'port'], kind: 'integer' },
  { name: 'SHIM_ADMIN_TOKEN', path: ['admin', 'token'], kind: 'string' },
  { name: 'SHIM_DATA_DIR', path: ['dataDir'], kind: 'string' },
  { name: 'SHIM_REDIS_URL', path: ['redisUrl'], kind: 'string' },
];

export function listEnvOverrides(): Array<{ name: string; key: string }> {
  return ENV_OVERRIDES.map(({ name, path }) => ({ name, key: path.join('.') }));
}

/** Objects merge key by key; anything else (arrays included) is replaced whole, as operators expect. */
function mergeLayer(base: unknown, layer: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(layer)) return structuredClone(layer);
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(layer)) {
    merged[key] = key in base ? mergeLayer(base[key], value) : structuredClone(value);
  }
  return merged;
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (!isPlainObject(node[key])) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}

/** RFC 3986 §3.1: a URI scheme, case-insensitive; its canonical form is lower case. */
const URI_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;

/** The config keys that hold a URL, as paths, routes' Link targets included. */
const URL_KEYS: readonly string[][] = [
  ['upstream', 'url'],
  ['redisUrl'],
  ...ROUTE_IDS.flatMap((id) => [
    ['routes', id, 'docsUrl'],
    ['routes', id, 'successorUrl'],
  ]),
];

/**
 * Writes every URL's scheme in lower case, in place: `HTTP://nango.internal` is `http://nango.internal`
 * (RFC 3986 §3.1), and was refused as not http(s). The rest of the URL keeps its case: a path is
 * case-sensitive. Only a string at a key the schema knows is touched; anything else is left for it to name.
 */
function lowerCaseSchemes(merged: Record<string, unknown>): void {
  for (const path of URL_KEYS) {
    let node: unknown = merged;
    for (const key of path.slice(0, -1)) node = isPlainObject(node) ? node[key] : undefined;
    const last = path[path.length - 1] as string;
    if (!isPlainObject(node) || typeof node[last] !== 'string') continue;
    node[last] = node[last].replace(URI_SCHEME, (scheme) => scheme.toLowerCase());
  }
}

/**
 * Writes `log.level` in lower case, in place: operators write `INFO` or `Info`, and pino knows only `info`.
 * A level that is no level in any case is left for the schema to refuse.
 */
function lowerCaseLogLevel(merged: Record<string, unknown>): void {
  const { log } = merged;
  if (isPlainObject(log) && typeof log.level === 'string') log.level = log.level.toLowerCase();
}

function envValue(raw: string, kind: 'string' | 'integer'): unknown {
  if (kind === 'integer' && /^\d+$/.test(raw)) return Number(raw);
  return raw;
}

function describeAjvError(error: ErrorObject, envNames: Map<string, string>): string {
  let path = error.instancePath.slice(1).replaceAll('/', '.');
  if (error.keyword === 'required') path = [path, error.params.missingProperty].filter(Boolean).join('.');
  if (error.keyword === 'additionalProperties') {
    path = [path, error.params.additionalProperty].filter(Boolean).join('.');
    return `${path}: unknown key`;
  }
  const expected = error.keyword === 'format' ? FORMAT_EXPECTED[error.params.format] : undefined;
  if (expected !== undefined) return `${fieldName(path, envNames)}: ${expected}`;
  return `${fieldName(path, envNames)}: ${error.message ?? 'is invalid'}`;
}

/** The config keys the environment sets, by the variable that sets each: an empty one sets nothing. */
function envNamesOf(env: Record<string, string | undefined>): Map<string, string> {
  const names = new Map<string, string>();
  for (const { name, path } of ENV_OVERRIDES) {
    const raw = env[name];
    if (raw !== undefined && raw !== '') names.set(path.join('.'), name);
  }
  return names;
}

/** A config key as a problem names it, with the variable it came from: `redisUrl (from SHIM_REDIS_URL)`. */
function fieldName(path: string, envNames: Map<string, string>): string {
  const env = envNames.get(path);
  return `${path || '(root)'}${env ? ` (from ${env})` : ''}`;
}

/** What a "/", "#", "?" or "@" in a URL's password must be written as. */
const PASSWORD_ESCAPES = 'a "/", "#", "?" or "@" in a password is written %2F, %23, %3F, %40';

/**
 * Why the Redis client could not use this URL, described without quoting it: it usually holds the password.
 * Unchecked, `new URL()` in redis.ts threw at start-up with the URL attached, and Node printed it on stderr.
 * The database is the path, as node-redis reads it (`/2`); a unix socket URL is read as redisClientOptions
 * reads it (`?db=2`).
 */
function redisUrlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `is not a valid URL (${PASSWORD_ESCAPES}; the port is a number)`;
  }
  if (url.hash !== '') return `is not a valid URL: it has a "#" (${PASSWORD_ESCAPES})`;
  try {
    decodeURIComponent(url.username);
    decodeURIComponent(url.password);
    decodeURIComponent(url.pathname);
  } catch {
    return 'is not a valid URL: a "%" starts no valid percent-escape';
  }
  if (url.protocol === 'redis:' || url.protocol === 'rediss:') {
    if (!/^(\/\d*)?$/.test(url.pathname))
      return 'the path must be a database number, as in redis://host:6379/0';
    return undefined;
  }
  const database = url.searchParams.get('db');
  if (database !== null && !/^\d+$/.test(database)) return '?db= must be a database number';
  return undefined;
}

/** The JSON pointer a schema error is about: a missing or unknown key is its own place, not its parent. */
function errorPointer(error: ErrorObject): string {
  if (error.keyword === 'required') return `${error.instancePath}/${error.params.missingProperty}`;
  if (error.keyword === 'additionalProperties') {
    return `${error.instancePath}/${error.params.additionalProperty}`;
  }
  return error.instancePath;
}

/**
 * Whether the schema found nothing wrong at this JSON pointer, above it or under it: only such a part has
 * the shape a cross-field rule reads.
 */
function soundAt(shapeErrors: readonly ErrorObject[], pointer: string): boolean {
  return !shapeErrors.some((error) => {
    const at = errorPointer(error);
    return at === pointer || pointer.startsWith(`${at}/`) || at.startsWith(`${pointer}/`);
  });
}

/**
 * What JSON schema cannot say: cross-field rules. Each reads only parts the schema found sound, so that
 * one refusal names the problems of both kinds.
 */
function checkSemantics(
  config: Config,
  envNames: Map<string, string>,
  shapeErrors: readonly ErrorObject[],
): string[] {
  const problems: string[] = [];
  if (soundAt(shapeErrors, '/upstream/url')) {
    try {
      new URL(config.upstream.url);
    } catch {
      problems.push(
        `${fieldName('upstream.url', envNames)}: must be an absolute http(s) URL (${PASSWORD_ESCAPES})`,
      );
    }
  }
  if (soundAt(shapeErrors, '/redisUrl') && config.redisUrl !== null) {
    const redisProblem = redisUrlProblem(config.redisUrl);
    if (redisProblem !== undefined) problems.push(`${fieldName('redisUrl', envNames)}: ${redisProblem}`);
  }
  // node:http refuses a headers timeout longer than the request timeout when the listener is created: unchecked,
  // the start failed with Node's option names, and a reload that set it passed as pending until a restart.
  if (soundAt(shapeErrors, '/server/headersTimeoutMs') && soundAt(shapeErrors, '/server/requestTimeoutMs')) {
    const { headersTimeoutMs, requestTimeoutMs } = config.server;
    if (headersTimeoutMs > requestTimeoutMs) {
      problems.push(
        `${fieldName('server.headersTimeoutMs', envNames)}: must not be more than server.requestTimeoutMs (${requestTimeoutMs})`,
      );
    }
  }
  for (const id of ROUTE_IDS) {
    const sound = (...keys: string[]) => keys.every((key) => soundAt(shapeErrors, `/routes/${id}/${key}`));
    // RFC 8594 §3: a resource is deprecated before it sunsets; the reverse is a configuration mistake.
    if (sound('sunset', 'deprecation')) {
      const { sunset, deprecation } = config.routes[id];
      if (Date.parse(sunset) < Date.parse(deprecation)) {
        problems.push(`routes.${id}.sunset: must not be earlier than routes.${id}.deprecation`);
      }
    }
    if (sound('alwaysTranslate', 'alwaysPassthrough')) {
      const { alwaysTranslate, alwaysPassthrough } = config.routes[id];
      const both = alwaysTranslate.filter((fp) => alwaysPassthrough.includes(fp));
      if (both.length > 0) {
        problems.push(
          `routes.${id}: fingerprints in both alwaysTranslate and alwaysPassthrough: ${both.join(', ')}`,
        );
      }
    }
  }
  return problems;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/**
 * A hash of the configuration as /admin/config shows it: secrets count by whether they are set, never by
 * value. The version is in every `config active` line: hashed with the admin token, the Redis password or
 * the upstream's credentials in it, it let whoever reads the logs and knows the rest of the file (the
 * defaults, a ConfigMap kept in git) test guesses of a password offline, one SHA-256 each.
 */
export function configVersion(config: Config): string {
  return createHash('sha256')
    .update(JSON.stringify(redactConfig(config)))
    .digest('hex')
    .slice(0, 12);
}

/**
 * Pure: merges the layers (defaults first), applies the environment, validates the whole and returns it
 * frozen, or throws a ConfigError naming every bad field.
 */
export function parseConfig(layers: unknown[], env: Record<string, string | undefined> = {}): ActiveConfig {
  let merged: unknown = {};
  for (const layer of layers) merged = mergeLayer(merged, layer);
  if (!isPlainObject(merged)) throw new ConfigError(['(root): must be an object']);
  const envNames = envNamesOf(env);
  for (const { name, path, kind } of ENV_OVERRIDES) {
    const raw = env[name];
    if (raw !== undefined && envNames.has(path.join('.'))) setPath(merged, path, envValue(raw, kind));
  }
  lowerCaseSchemes(merged);
  lowerCaseLogLevel(merged);
  if (!validateConfigShape(merged)) {
    const shapeErrors = validateConfigShape.errors ?? [];
    const problems = shapeErrors.map((error) => describeAjvError(error, envNames));
    // The parts the schema found sound are checked too (checkSemantics reads no other), so that one
    // refusal names every problem: an operator fixing a reload does not meet a second one behind it.
    const semantic = checkSemantics(merged as unknown as Config, envNames, shapeErrors);
    throw new ConfigError([...new Set(problems), ...semantic]);
  }
  const problems = checkSemantics(merged, envNames, []);
  if (problems.length > 0) throw new ConfigError(problems);
  const config = deepFreeze(merged);
  return { config, version: configVersion(config), pendingRestart: [] };
}

function valueAt(config: Config, key: string): unknown {
  let node: unknown = config;
  for (const part of key.split('.')) node = isPlainObject(node) ? node[part] : undefined;
  return node;
}

/** The leaf keys under `key` whose values differ between `a` and `b`. */
function changedKeys(key: string, a: unknown, b: unknown): string[] {
  if (isPlainObject(a) && isPlainObject(b)) {
    const names = [...new Set([...Object.keys(a), ...Object.keys(b)])];
    return names.flatMap((name) => changedKeys(`${key}.${name}`, a[name], b[name]));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [key];
}

/**
 * Pure: what a reload puts in effect. The loaded config, except that every restart-only key keeps its value
 * in `running`; the keys that differ are listed in `pendingRestart` (names only, never values: one may be
 * the admin token).
 */
export function keepRestartOnly(loaded: ActiveConfig, running: Config): ActiveConfig {
  const pendingRestart = RESTART_ONLY_KEYS.flatMap((key) =>
    changedKeys(key, valueAt(running, key), valueAt(loaded.config, key)),
  );
  if (pendingRestart.length === 0) return loaded;
  const merged = structuredClone(loaded.config) as Config & Record<string, unknown>;
  for (const key of RESTART_ONLY_KEYS)
    setPath(merged, key.split('.'), structuredClone(valueAt(running, key)));
  const config = deepFreeze(merged as Config);
  return { config, version: configVersion(config), pendingRestart };
}

function readJsonFile(file: string | URL, label: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([`${label}: cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  // RFC 8259 §8.1: a parser may ignore a byte order mark, which some editors (Windows Notepad, PowerShell's
  // Out-File) write first. JSON.parse does not: such a file was refused at line 1, column 1, at a character
  // the operator cannot see.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    return JSON.parse(text);
  } catch {
    throw new ConfigError([`${label}: is not valid JSON${whereJsonStops(text)}`]);
  }
}

/** Thrown by jsonErrorOffset's walk where the text stops being JSON. */
class JsonStop {
  constructor(readonly offset: number) {}
}

/**
 * The offset where a text JSON.parse refused stops being JSON (RFC 8259), or undefined if it cannot tell.
 * JSON.parse's own message is never shown: V8 quotes the text around an unexpected token and names no
 * position for it (`Unexpected token 'Z', ..."{"token": Zq8xV3pLm2"... is not valid JSON`, Node 20 to 24),
 * so an admin token whose quotes were forgotten reached the log. The text is walked again instead, only
 * after JSON.parse has refused it.
 */
export function jsonErrorOffset(text: string): number | undefined {
  let at = 0;
  const stop = (): never => {
    throw new JsonStop(at);
  };
  const space = () => {
    while (at < text.length && ' \t\n\r'.includes(text.charAt(at))) at++;
  };
  const expect = (char: string) => {
    if (text.charAt(at) !== char) stop();
    at++;
  };
  const isDigit = (char: string) => char >= '0' && char <= '9';
  const digits = () => {
    if (!isDigit(text.charAt(at))) stop();
    while (isDigit(text.charAt(at))) at++;
  };
  const string = () => {
    expect('"');
    for (;;) {
      const code = text.charCodeAt(at);
      if (Number.isNaN(code) || code < 0x20) stop();
      at++;
      if (code === 0x22) return;
      if (code !== 0x5c) continue;
      const escaped = text.charAt(at);
      if (escaped === 'u') {
        at++;
        for (let n = 0; n < 4; n++) {
          if (!/^[0-9a-fA-F]$/.test(text.charAt(at))) stop();
          at++;
        }
      } else if (escaped !== '' && '"\\/bfnrt'.includes(escaped)) at++;
      else stop();
    }
  };
  const value = (): void => {
    space();
    const char = text.charAt(at);
    if (char === '{' || char === '[') {
      const close = char === '{' ? '}' : ']';
      at++;
      space();
      if (text.charAt(at) === close) {
        at++;
        return;
      }
      for (;;) {
        if (close === '}') {
          space();
          string();
          space();
          expect(':');
        }
        value();
        space();
        if (text.charAt(at) !== ',') break;
        at++;
      }
      expect(close);
    } else if (char === '"') string();
    else if (char === 't') for (const letter of 'true') expect(letter);
    else if (char === 'f') for (const letter of 'false') expect(letter);
    else if (char === 'n') for (const letter of 'null') expect(letter);
    else if (char === '-' || isDigit(char)) {
      if (char === '-') at++;
      if (text.charAt(at) === '0') at++;
      else digits();
      if (text.charAt(at) === '.') {
        at++;
        digits();
      }
      if (text.charAt(at) === 'e' || text.charAt(at) === 'E') {
        at++;
        if (text.charAt(at) === '+' || text.charAt(at) === '-') at++;
        digits();
      }
    } else stop();
  };
  try {
    value();
    space();
    if (at < text.length) stop();
    return undefined;
  } catch (error) {
    // Anything but a JsonStop (a stack overflow on very deep nesting) leaves the position unknown.
    return error instanceof JsonStop ? error.offset : undefined;
  }
}

/** ` (unexpected character at line 3, column 19)`: the position only, never the text around it. */
function whereJsonStops(text: string): string {
  const offset = jsonErrorOffset(text);
  if (offset === undefined) return '';
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  const what = offset >= text.length ? 'unexpected end' : 'unexpected character';
  return ` (${what} at line ${line}, column ${column})`;
}

/** A configuration as loadConfig read it: with the certificates of `upstream.caFile`, read where checked. */
export interface LoadedConfig extends ActiveConfig {
  /** The PEM text of `upstream.caFile` (readUpstreamCa); undefined for the default trust store. */
  upstreamCa: string | undefined;
}

/** The I/O half: reads config/default.json and the file named by SHIM_CONFIG, then parses. */
export function loadConfig(env: Record<string, string | undefined> = process.env): LoadedConfig {
  const layers = [readJsonFile(DEFAULT_CONFIG_FILE, 'config/default.json')];
  const file = env.SHIM_CONFIG;
  if (file) layers.push(readJsonFile(file, `SHIM_CONFIG (${file})`));
  const active = parseConfig(layers, env);
  return { ...active, upstreamCa: readUpstreamCa(active.config, env) };
}

// OpenSSL's `TRUSTED CERTIFICATE` blocks too, which Node's TLS reads as CA certificates.
const PEM_CERTIFICATE =
  /-----BEGIN (?:TRUSTED )?CERTIFICATE-----[^-]+-----END (?:TRUSTED )?CERTIFICATE-----/g;

/**
 * The certificates `upstream.caFile` names, once checked: the file must be readable and hold at least one PEM
 * certificate, every one of which parses. Node's TLS takes a file of anything else without a word, and every
 * call to the upstream then failed its handshake as `upstream_unreachable`; a missing file stopped start-up as
 * a bare ENOENT that named no key. Checked where the configuration is read, so start-up and a reload (which
 * would otherwise leave a restart to find it) both refuse it by name (ConfigError). The text checked is the
 * text the upstream's pools trust: read once, it cannot change or vanish in between. Undefined for the
 * default trust store.
 */
export function readUpstreamCa(
  config: Readonly<Config>,
  env: Record<string, string | undefined> = {},
): string | undefined {
  const caFile = config.upstream.caFile;
  // An empty path names no file: the default trust store (as an empty variable does).
  if (caFile === null || caFile === '') return undefined;
  const key = fieldName('upstream.caFile', envNamesOf(env));
  let text: string;
  try {
    text = readFileSync(caFile, 'utf8');
  } catch (error) {
    throw new ConfigError([
      `${key}: ${caFile} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    ]);
  }
  const certificates = text.match(PEM_CERTIFICATE) ?? [];
  if (certificates.length === 0) throw new ConfigError([`${key}: ${caFile} holds no PEM certificate`]);
  for (const [index, certificate] of certificates.entries()) {
    try {
      new X509Certificate(certificate);
    } catch {
      throw new ConfigError([
        `${key}: ${caFile}: certificate ${index + 1} of ${certificates.length} cannot be read`,
      ]);
    }
  }
  return text;
}

/**
 * An upstream URL with its user and password (`https://user:pass@host`) and its query (a gateway's
 * `?token=`) shown as `[set]`.
 */
function withoutCredentials(value: string): string {
  const url = new URL(value);
  if (url.username === '' && url.password === '' && url.search === '') return value;
  const credentials = url.username === '' && url.password === '' ? '' : '[set]@';
  const query = url.search === '' ? '' : '?[set]';
  return `${url.protocol}//${credentials}${url.host}${url.pathname}${query}${url.hash}`;
}

/** The configuration as /admin/config shows it: secrets replaced by whether they are set. */
export function redactConfig(config: Config): unknown {
  const copy = structuredClone(config) as Config & Record<string, unknown>;
  copy.admin = { ...copy.admin, token: copy.admin.token === null ? null : '[set]' };
  copy.upstream = { ...copy.upstream, url: withoutCredentials(copy.upstream.url) };
  if (copy.redisUrl !== null) copy.redisUrl = '[set]';
  return copy;
}
