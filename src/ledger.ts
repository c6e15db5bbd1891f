import type { Logger } from 'pino';
import type { ConfigHolder } from './app.js';
import { isRouteId, ROUTE_IDS, type RouteId, STAGES, type Stage } from './config.js';
import { isPlainObject } from './plain-object.js';
import {
  ANONYMOUS,
  consumerOf,
  OTHER_CONSUMERS,
  STATUS_CLASSES,
  type StatusClass,
  statusClass,
  UNAUTHENTICATED,
  type UsageEvent,
  type UsageSink,
} from './usage.js';

const DAY_MS = 86_400_000;

/** What the ledger knows about one consumer of one deprecated route. Times are epoch milliseconds. */
export interface LedgerEntry {
  route: RouteId;
  /** The key's fingerprint, or `anonymous` (no key) or `unauthenticated` (refused with 401/403). */
  consumer: string;
  fingerprint: string | null;
  /** The name `consumers` gave the fingerprint when the call was recorded. */
  name: string | null;
  firstSeen: number;
  lastSeen: number;
  calls: Partial<Record<StatusClass, number>>;
  lastUserAgent: string | null;
  /** The stage that served the last call. */
  stage: Stage;
}

/**
 * When the ledger began to record each route, in epoch milliseconds: the earliest any instance stored. A
 * route nobody called is only known to be quiet for as long as it has been recorded.
 */
export type RecordingSince = Partial<Record<RouteId, number>>;

/** What a store holds: the entries, and since when each route has been recorded. */
export interface LedgerSnapshot {
  entries: LedgerEntry[];
  since: RecordingSince;
}

/**
 * Where the ledger lives between restarts and across instances. `write` merges deltas into what is stored,
 * keeps the earlier of each route's `since`, and resolves with the deltas it could not store (all of them
 * when the store is unreachable).
 */
export interface LedgerStore {
  read(): Promise<LedgerSnapshot>;
  write(deltas: LedgerEntry[], since: RecordingSince): Promise<LedgerEntry[]>;
  /** Whether a write can succeed now; the ledger does not try while it is false. */
  readonly available: boolean;
  /** Called when the store becomes available again, to write what was buffered. */
  onAvailable?(listener: () => void): void;
}

const FINGERPRINT = /^[0-9a-f]{16}$/;
/** The consumers that are not a key's fingerprint, and so carry none. */
const SHARED_CONSUMERS: readonly string[] = [UNAUTHENTICATED, ANONYMOUS, OTHER_CONSUMERS];
/** The latest instant a Date holds (ECMA-262 §21.4.1.22): a later one makes `toISOString` throw. */
const MAX_TIME_MS = 8.64e15;

export const LEDGER_ENTRY_KEYS: ReadonlyArray<keyof LedgerEntry> = [
  'route',
  'consumer',
  'fingerprint',
  'name',
  'firstSeen',
  'lastSeen',
  'calls',
  'lastUserAgent',
  'stage',
];

/** Whole epoch milliseconds a Date can hold. */
export function isLedgerTime(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0 && (value as number) <= MAX_TIME_MS;
}

/**
 * What is wrong with the fields of one entry as this code writes it (`lastSeen is not …`), or undefined.
 * Every store checks what it reads back, since every count in it is added to and every time is shown: a
 * count stored as the string "5" once became "51" on the next call.
 */
export function ledgerEntryProblem(value: Record<string, unknown>): string | undefined {
  const { route, consumer, fingerprint, name, firstSeen, lastSeen, calls, lastUserAgent, stage } = value;
  if (!isRouteId(route)) return `route is not a route id`;
  if (typeof consumer !== 'string') return `consumer is not a string`;
  if (SHARED_CONSUMERS.includes(consumer)) {
    if (fingerprint !== null) return `fingerprint must be null for consumer ${consumer}`;
  } else if (!FINGERPRINT.test(consumer)) {
    return `consumer is neither a fingerprint (16 hex digits) nor ${SHARED_CONSUMERS.join(', ')}`;
  } else if (fingerprint !== consumer) {
    return `fingerprint must equal its consumer`;
  }
  if (name !== null && typeof name !== 'string') return `name is neither a string nor null`;
  if (!isLedgerTime(firstSeen)) return `firstSeen is not a time in epoch milliseconds`;
  if (!isLedgerTime(lastSeen)) return `lastSeen is not a time in epoch milliseconds`;
  if (firstSeen > lastSeen) return `firstSeen is later than its lastSeen`;
  if (!isPlainObject(calls)) return `calls is not an object`;
  for (const [cls, count] of Object.entries(calls)) {
    if (!(STATUS_CLASSES as readonly string[]).includes(cls)) return `calls.${cls} is not a status class`;
    if (!Number.isSafeInteger(count) || (count as number) < 0) {
      return `calls.${cls} is not a non-negative integer`;
    }
  }
  if (lastUserAgent !== null && typeof lastUserAgent !== 'string') {
    return `lastUserAgent is neither a string nor null`;
  }
  if (!(STAGES as readonly unknown[]).includes(stage)) return `stage is not a stage`;
  return undefined;
}

export function entryKey(route: string, consumer: string): string {
  return `${route}\n${consumer}`;
}

/** One call as a ledger delta. */
export function entryOf(event: UsageEvent, consumers: Readonly<Record<string, string>>): LedgerEntry {
  const consumer = consumerOf(event);
  const fingerprint = consumer === event.fingerprint ? consumer : null;
  return {
    route: event.routeId,
    consumer,
    fingerprint,
    name: fingerprint === null ? null : (consumers[fingerprint] ?? null),
    firstSeen: event.at,
    lastSeen: event.at,
    calls: { [statusClass(event.status)]: 1 },
    lastUserAgent: event.userAgent ?? null,
    stage: event.stage,
  };
}

/** `mergeEntry` into an entry the caller owns, without copying it. */
function addInPlace(into: LedgerEntry, delta: LedgerEntry): void {
  for (const cls in delta.calls) {
    const key = cls as StatusClass;
    into.calls[key] = (into.calls[key] ?? 0) + (delta.calls[key] ?? 0);
  }
  if (delta.fingerprint !== null) into.fingerprint = delta.fingerprint;
  if (delta.name !== null) into.name = delta.name;
  if (delta.firstSeen < into.firstSeen) into.firstSeen = delta.firstSeen;
  if (delta.lastSeen >= into.lastSeen) {
    into.lastSeen = delta.lastSeen;
    into.lastUserAgent = delta.lastUserAgent;
    into.stage = delta.stage;
  }
}

/** Two views of one route and consumer as one: calls add up, the later call tells the client and stage. */
export function mergeEntry(into: LedgerEntry | undefined, delta: LedgerEntry): LedgerEntry {
  if (!into) return { ...delta, calls: { ...delta.calls } };
  const merged = { ...into, calls: { ...into.calls } };
  addInPlace(merged, delta);
  return merged;
}

export function mergeEntries(...lists: LedgerEntry[][]): Map<string, LedgerEntry> {
  const merged = new Map<string, LedgerEntry>();
  for (const list of lists) {
    for (const entry of list) {
      const key = entryKey(entry.route, entry.consumer);
      merged.set(key, mergeEntry(merged.get(key), entry));
    }
  }
  return merged;
}

/** The earliest `since` of each route among several views of the ledger. */
export function mergeSince(...views: RecordingSince[]): RecordingSince {
  const merged: RecordingSince = {};
  for (const view of views) {
    for (const route of ROUTE_IDS) {
      const at = view[route];
      const known = merged[route];
      if (at !== undefined && (known === undefined || at < known)) merged[route] = at;
    }
  }
  return merged;
}

export interface ConsumerUsage {
  consumer: string;
  fingerprint: string | null;
  name: string | null;
  first_seen: string;
  last_seen: string;
  calls: Partial<Record<StatusClass, number>>;
  total_calls: number;
  last_user_agent: string | null;
  stage: Stage;
  /** Whether calls of this consumer within the quiet period keep the route from `safe_to_sunset`. */
  blocks_sunset: boolean;
}

export interface RouteUsage {
  route: RouteId;
  /**
   * Recorded for the whole quiet period at least, and no consumer that `blocksSunset` called within it: a
   * ledger that began yesterday cannot tell a route called monthly from one nobody calls.
   */
  safe_to_sunset: boolean;
  /** Since when the ledger has recorded the route: its stored start, or its first recorded call if earlier. */
  recording_since: string | null;
  /** The last call of any kind, refused and keyless ones included. */
  last_call: string | null;
  /** The most recent first. */
  consumers: ConsumerUsage[];
}

export interface DeprecationReport {
  generated_at: string;
  quiet_period_days: number;
  routes: RouteUsage[];
}

export interface SummaryOptions {
  now: number;
  quietPeriodDays: number;
  /** The names configured now; they win over the name recorded with the call. */
  consumers: Readonly<Record<string, string>>;
  /** Since when each route has been recorded, as the store has it. */
  since: RecordingSince;
}

/**
 * Whether a consumer's calls keep a route in use: every call that carried an API key Nango did not refuse.
 * A refused key (`unauthenticated`) and a call without any key (`anonymous`) were never served by Nango and
 * never will be, so they are shown but do not hold a route back. A key answered here without asking Nango
 * (410, 429, a local 400) cannot be told from a real one, so it counts.
 */
export function blocksSunset(consumer: string): boolean {
  return consumer !== UNAUTHENTICATED && consumer !== ANONYMOUS;
}

function totalOf(calls: LedgerEntry['calls']): number {
  let total = 0;
  for (const count of Object.values(calls)) total += count ?? 0;
  return total;
}

/** The start of the quiet period that ends at `now`. */
export function quietPeriodStart(now: number, quietPeriodDays: number): number {
  return now - quietPeriodDays * DAY_MS;
}

/** The ledger as people and scripts read it: every known route, who called it and whether it can go. */
export function summarizeLedger(
  entries: Iterable<LedgerEntry>,
  { now, quietPeriodDays, consumers, since }: SummaryOptions,
): DeprecationReport {
  const quietSince = quietPeriodStart(now, quietPeriodDays);
  const byRoute = new Map<RouteId, LedgerEntry[]>(ROUTE_IDS.map((id) => [id, []]));
  for (const entry of entries) byRoute.get(entry.route)?.push(entry);
  const routes: RouteUsage[] = [];
  for (const [route, list] of byRoute) {
    list.sort((a, b) => b.lastSeen - a.lastSeen);
    const lastCall = list[0]?.lastSeen;
    // Recording began no later than the first call it recorded, whatever the store says of its start.
    let recordingSince = since[route];
    for (const entry of list) {
      if (recordingSince === undefined || entry.firstSeen < recordingSince) recordingSince = entry.firstSeen;
    }
    const recordedLongEnough = recordingSince !== undefined && recordingSince <= quietSince;
    routes.push({
      route,
      safe_to_sunset:
        recordedLongEnough &&
        !list.some((entry) => blocksSunset(entry.consumer) && entry.lastSeen >= quietSince),
      recording_since: recordingSince === undefined ? null : new Date(recordingSince).toISOString(),
      last_call: lastCall === undefined ? null : new Date(lastCall).toISOString(),
      consumers: list.map((entry) => ({
        consumer: entry.consumer,
        fingerprint: entry.fingerprint,
        name: (entry.fingerprint !== null ? consumers[entry.fingerprint] : undefined) ?? entry.name,
        first_seen: new Date(entry.firstSeen).toISOString(),
        last_seen: new Date(entry.lastSeen).toISOString(),
        calls: entry.calls,
        total_calls: totalOf(entry.calls),
        last_user_agent: entry.lastUserAgent,
        stage: entry.stage,
        blocks_sunset: blocksSunset(entry.consumer),
      })),
    });
  }
  return { generated_at: new Date(now).toISOString(), quiet_period_days: quietPeriodDays, routes };
}

export interface Ledger extends UsageSink {
  /** The ledger as stored plus what this instance has not written yet. Rejects when the store cannot be read. */
  report(now?: number): Promise<DeprecationReport>;
  /** Writes the buffered updates now; what cannot be written stays buffered. */
  flush(): Promise<void>;
  /** Stops the timer and writes what is buffered: the last step of a clean shutdown. */
  close(): Promise<void>;
}

export interface LedgerOptions {
  store: LedgerStore;
  configs: ConfigHolder;
  logger: Logger;
  /** Told how many updates were dropped because the buffer was full (a metric). */
  onDropped?: (count: number) => void;
  /** When this instance began recording (epoch ms); now by default. */
  startedAt?: number;
}

/**
 * The usage ledger: a usage sink that folds calls into per-route, per-consumer deltas in memory and writes
 * them to its store every `ledger.flushIntervalMs`. While the store is unreachable the deltas stay buffered,
 * at most `ledger.redisBufferMax` of them (one per route and consumer, so repeat calls never overflow it).
 */
export function createLedger({
  store,
  configs,
  logger,
  onDropped = () => {},
  startedAt = Date.now(),
}: LedgerOptions): Ledger {
  let pending = new Map<string, LedgerEntry>();
  // Every route is recorded from the start, called or not. Stored with the first write even without calls,
  // and again after each reconnect of the store; the store keeps the earliest.
  const since: RecordingSince = Object.fromEntries(ROUTE_IDS.map((route) => [route, startedAt]));
  let sinceStored = false;
  let droppedSinceLog = 0;
  let failing = false;
  let chain: Promise<void> = Promise.resolve();

  // The same bound as the metrics' label set: past `metrics.maxConsumers` distinct unnamed fingerprints
  // since start, new ones are recorded as `other`. Calls the upstream never judged (410, 429, local 400s)
  // carry whatever key the client sent, and random keys must not grow the ledger without end.
  const seenFingerprints = new Set<string>();
  function bounded(delta: LedgerEntry): LedgerEntry {
    if (delta.fingerprint === null || delta.name !== null || seenFingerprints.has(delta.fingerprint))
      return delta;
    if (seenFingerprints.size < configs.current.config.metrics.maxConsumers) {
      seenFingerprints.add(delta.fingerprint);
      return delta;
    }
    return { ...delta, consumer: OTHER_CONSUMERS, fingerprint: null };
  }

  function buffer(entry: LedgerEntry): void {
    const delta = bounded(entry);
    const key = entryKey(delta.route, delta.consumer);
    const current = pending.get(key);
    if (current === undefined && pending.size >= configs.current.config.ledger.redisBufferMax) {
      droppedSinceLog += 1;
      onDropped(1);
      return;
    }
    // Buffered entries belong to the ledger alone: a repeat call adds to its entry in place instead of
    // copying it, since this runs for every deprecated call.
    if (current === undefined) pending.set(key, mergeEntry(undefined, delta));
    else addInPlace(current, delta);
  }

  async function writePending(): Promise<void> {
    if (droppedSinceLog > 0) {
      logger.warn({ dropped: droppedSinceLog }, 'ledger updates dropped');
      droppedSinceLog = 0;
    }
    if ((pending.size === 0 && sinceStored) || !store.available) return;
    const batch = [...pending.values()];
    pending = new Map();
    let unwritten: LedgerEntry[];
    let reason = 'store unavailable';
    try {
      unwritten = await store.write(batch, since);
      sinceStored = true;
    } catch (error) {
      unwritten = batch;
      reason = (error as Error).message;
    }
    // Merged with what arrived meanwhile; the bound still holds.
    for (const delta of unwritten) buffer(delta);
    if (unwritten.length > 0 && !failing) {
      logger.warn({ reason, buffered: pending.size }, 'ledger write failed');
    }
    failing = unwritten.length > 0;
    if (!failing) logger.debug({ entries: batch.length }, 'ledger written');
  }

  /** Runs `step` after every write and read already asked for, and before any asked for later. */
  function inTurn<T>(step: () => Promise<T>): Promise<T> {
    const result = chain.then(step);
    // A failure is the caller's to handle and never breaks the chain.
    chain = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  function flush(): Promise<void> {
    return inTurn(writePending).catch((error: unknown) => {
      logger.error({ err: error }, 'ledger flush failed');
    });
  }

  /**
   * What is stored and what is buffered, read in turn with the writes: during a write its batch is in
   * neither, and a report read then (a timed flush starting meanwhile) left those calls out.
   */
  function readAll(): Promise<{ stored: LedgerSnapshot; buffered: LedgerEntry[] }> {
    return inTurn(async () => {
      const stored = await store.read();
      return { stored, buffered: [...pending.values()] };
    });
  }

  const timer = setInterval(() => void flush(), configs.current.config.ledger.flushIntervalMs);
  timer.unref();
  store.onAvailable?.(() => {
    // Back after an outage, the store may have lost all it held (a Redis restarted without persistence):
    // this instance vouches for its record only from now. A store that kept its data keeps its earlier start.
    const now = Date.now();
    for (const route of ROUTE_IDS) since[route] = now;
    sinceStored = false;
    void flush();
  });

  return {
    record(event) {
      buffer(entryOf(event, configs.current.config.consumers));
    },
    flush,
    async report(now = Date.now()) {
      await flush();
      const { stored, buffered } = await readAll();
      const { config } = configs.current;
      return summarizeLedger(mergeEntries(stored.entries, buffered).values(), {
        now,
        quietPeriodDays: config.ledger.quietPeriodDays,
        consumers: config.consumers,
        since: mergeSince(stored.since, since),
      });
    },
    async close() {
      clearInterval(timer);
      await flush();
      if (pending.size > 0) logger.error({ entries: pending.size }, 'ledger updates lost at shutdown');
    },
  };
}
