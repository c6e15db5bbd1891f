import { createHash } from 'node:crypto';
import { isRouteId, ROUTE_IDS } from './config.js';
import { type LedgerEntry, type LedgerStore, ledgerEntryProblem, type RecordingSince } from './ledger.js';
import type { RedisConnection } from './redis.js';

export const LEDGER_KEY_PREFIX = 'nango-shim:ledger:';
/** The set of every entry hash, so a reader never has to SCAN. */
const INDEX_KEY = `${LEDGER_KEY_PREFIX}index`;
const CALLS_FIELD = 'calls_';
/** One hash, route → epoch ms: since when the ledger has recorded each route. */
const SINCE_KEY = `${LEDGER_KEY_PREFIX}since`;

/**
 * Merges one delta into an entry hash in one step, whichever instance sends it: calls add up (HINCRBY), the
 * first sighting keeps the minimum and the last one the maximum, with the client and stage of the latest.
 * KEYS: entry hash, index set. ARGV: route, consumer, first, last, user agent, stage, fingerprint, name,
 * then class/count pairs. Empty strings stand for null.
 */
const MERGE_SCRIPT = `
local first = tonumber(redis.call('HGET', KEYS[1], 'first_seen'))
if first == nil or tonumber(ARGV[3]) < first then redis.call('HSET', KEYS[1], 'first_seen', ARGV[3]) end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seen'))
if last == nil or tonumber(ARGV[4]) >= last then
  redis.call('HSET', KEYS[1], 'last_seen', ARGV[4], 'last_user_agent', ARGV[5], 'stage', ARGV[6])
end
redis.call('HSET', KEYS[1], 'route', ARGV[1], 'consumer', ARGV[2])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'fingerprint', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'name', ARGV[8]) end
for i = 9, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], '${CALLS_FIELD}' .. ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[2], KEYS[1])
return 1
`.trim();

/** Keeps the earliest start of each route, whichever instance says it. KEYS: since hash. ARGV: route/ms pairs. */
const SINCE_SCRIPT = `
for i = 1, #ARGV, 2 do
  local at = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if at == nil or tonumber(ARGV[i + 1]) < at then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
`.trim();

interface Script {
  text: string;
  sha: string;
}

function script(text: string): Script {
  return { text, sha: createHash('sha1').update(text).digest('hex') };
}

const MERGE = script(MERGE_SCRIPT);
const SINCE = script(SINCE_SCRIPT);

function entryHashKey(route: string, consumer: string): string {
  return `${LEDGER_KEY_PREFIX}entry:${route}:${consumer}`;
}

function sinceArgs(since: RecordingSince): string[] {
  const args = ['1', SINCE_KEY];
  for (const [route, at] of Object.entries(since)) args.push(route, String(at));
  return args;
}

/** The since hash as the store's `since`: fields that are not a known route and a time are left out. */
function sinceOf(fields: Record<string, string>): RecordingSince {
  const since: RecordingSince = {};
  for (const route of ROUTE_IDS) {
    const text = fields[route];
    if (text !== undefined && /^\d{1,15}$/.test(text)) since[route] = Number(text);
  }
  return since;
}

function mergeArgs(delta: LedgerEntry): string[] {
  const args = [
    '2',
    entryHashKey(delta.route, delta.consumer),
    INDEX_KEY,
    delta.route,
    delta.consumer,
    String(delta.firstSeen),
    String(delta.lastSeen),
    delta.lastUserAgent ?? '',
    delta.stage,
    delta.fingerprint ?? '',
    delta.name ?? '',
  ];
  for (const [cls, count] of Object.entries(delta.calls)) args.push(cls, String(count));
  return args;
}

/** HGETALL answers a flat array in RESP2 and a map in RESP3. */
function fieldsOf(reply: unknown): Record<string, string> {
  if (Array.isArray(reply)) {
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < reply.length; i += 2) fields[String(reply[i])] = String(reply[i + 1]);
    return fields;
  }
  if (reply instanceof Map) return Object.fromEntries([...reply].map(([k, v]) => [String(k), String(v)]));
  return (reply ?? {}) as Record<string, string>;
}

/** A decimal field as a number; anything else as it is, for the check to name. */
function numberField(text: string | undefined): unknown {
  return text !== undefined && /^\d+$/.test(text) ? Number(text) : text;
}

/**
 * An entry hash as a ledger entry, or undefined for a route this version does not know (written by another
 * version sharing the Redis). Throws, naming the hash and its first problem, when it is damaged: shown, a
 * time that is not one breaks the report and a count that is not one adds up wrong; left out, its consumer
 * could let a route look safe to sunset.
 */
export function entryOfHash(key: string, fields: Record<string, string>): LedgerEntry | undefined {
  if (!isRouteId(fields.route)) return undefined;
  const calls: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(fields)) {
    if (field.startsWith(CALLS_FIELD)) calls[field.slice(CALLS_FIELD.length)] = numberField(value);
  }
  // Empty strings stand for null (MERGE_SCRIPT).
  const entry = {
    route: fields.route,
    consumer: fields.consumer,
    fingerprint: fields.fingerprint || null,
    name: fields.name || null,
    firstSeen: numberField(fields.first_seen),
    lastSeen: numberField(fields.last_seen),
    calls,
    lastUserAgent: fields.last_user_agent || null,
    stage: fields.stage,
  };
  const problem = ledgerEntryProblem(entry);
  if (problem !== undefined) throw new Error(`${key} is not a ledger entry: ${problem}`);
  return entry as LedgerEntry;
}

/**
 * The ledger shared by every instance on one Redis: one hash per route and consumer, merged atomically by
 * a Lua script, so two shims recording the same consumer give one answer. A delta whose write failed is
 * handed back to be buffered; one whose reply was lost with the connection may be counted twice (at least
 * once, never lost).
 */
export function createRedisLedgerStore(redis: RedisConnection): LedgerStore {
  async function run({ text, sha }: Script, args: string[]): Promise<void> {
    try {
      await redis.sendCommand(['EVALSHA', sha, ...args]);
    } catch (error) {
      // A restarted Redis has forgotten the script: send it whole once, which also caches it again.
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      await redis.sendCommand(['EVAL', text, ...args]);
    }
  }

  return {
    get available() {
      return redis.ready;
    },
    onAvailable(listener) {
      redis.onReady(listener);
    },
    async write(deltas, since) {
      // Before the deltas: a failure here hands them all back, to be written with it again.
      await run(SINCE, sinceArgs(since));
      const results = await Promise.allSettled(deltas.map((delta) => run(MERGE, mergeArgs(delta))));
      return deltas.filter((_, index) => results[index]?.status === 'rejected');
    },
    async read() {
      const [members, since] = await Promise.all([
        redis.sendCommand(['SMEMBERS', INDEX_KEY]) as Promise<string[]>,
        redis.sendCommand(['HGETALL', SINCE_KEY]),
      ]);
      const hashes = await Promise.all(members.map((key) => redis.sendCommand(['HGETALL', key])));
      const entries: LedgerEntry[] = [];
      for (const [index, reply] of hashes.entries()) {
        const entry = entryOfHash(members[index] ?? '', fieldsOf(reply));
        if (entry) entries.push(entry);
      }
      return { entries, since: sinceOf(fieldsOf(since)) };
    },
  };
}
