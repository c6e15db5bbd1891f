import { mkdirSync, readFileSync, renameSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { isPlainObject, ROUTE_IDS, STAGES } from './config.js';
import {
  entryKey,
  type LedgerEntry,
  type LedgerSnapshot,
  type LedgerStore,
  mergeEntries,
  mergeEntry,
  mergeSince,
  type RecordingSince,
} from './ledger.js';
import { ANONYMOUS, OTHER_CONSUMERS, STATUS_CLASSES, UNAUTHENTICATED } from './usage.js';

export const LEDGER_FILE = 'deprecation-ledger.json';
const FORMAT = 1;

interface LedgerFile {
  format: number;
  written_at: string;
  /** Absent from the files of earlier versions: their routes count as recorded since their first call. */
  recording_since?: RecordingSince;
  entries: LedgerEntry[];
}

const FINGERPRINT = /^[0-9a-f]{16}$/;
/** The consumers that are not a key's fingerprint, and so carry none. */
const SHARED_CONSUMERS: readonly string[] = [UNAUTHENTICATED, ANONYMOUS, OTHER_CONSUMERS];
/** The latest instant a Date holds (ECMA-262 §21.4.1.22): a later one makes `toISOString` throw. */
const MAX_TIME_MS = 8.64e15;
/** `written_at`, as `Date.prototype.toISOString` writes it. */
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const ENTRY_KEYS: ReadonlyArray<keyof LedgerEntry> = [
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
const FILE_KEYS: ReadonlyArray<keyof LedgerFile> = ['format', 'written_at', 'recording_since', 'entries'];

function isTime(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0 && (value as number) <= MAX_TIME_MS;
}

function unknownKey(value: Record<string, unknown>, known: readonly string[]): string | undefined {
  return Object.keys(value).find((key) => !known.includes(key));
}

/** What is wrong with one entry as this code writes it, or undefined. `at` names it in the answer. */
function entryProblem(value: unknown, at: string): string | undefined {
  if (!isPlainObject(value)) return `${at} is not an object`;
  const extra = unknownKey(value, ENTRY_KEYS);
  if (extra !== undefined) return `${at}.${extra} is an unknown key`;
  const { route, consumer, fingerprint, name, firstSeen, lastSeen, calls, lastUserAgent, stage } = value;
  if (!(ROUTE_IDS as readonly unknown[]).includes(route)) return `${at}.route is not a route id`;
  if (typeof consumer !== 'string') return `${at}.consumer is not a string`;
  if (SHARED_CONSUMERS.includes(consumer)) {
    if (fingerprint !== null) return `${at}.fingerprint must be null for consumer ${consumer}`;
  } else if (!FINGERPRINT.test(consumer)) {
    return `${at}.consumer is neither a fingerprint (16 hex digits) nor ${SHARED_CONSUMERS.join(', ')}`;
  } else if (fingerprint !== consumer) {
    return `${at}.fingerprint must equal its consumer`;
  }
  if (name !== null && typeof name !== 'string') return `${at}.name is neither a string nor null`;
  if (!isTime(firstSeen)) return `${at}.firstSeen is not a time in epoch milliseconds`;
  if (!isTime(lastSeen)) return `${at}.lastSeen is not a time in epoch milliseconds`;
  if (firstSeen > lastSeen) return `${at}.firstSeen is later than its lastSeen`;
  if (!isPlainObject(calls)) return `${at}.calls is not an object`;
  for (const [cls, count] of Object.entries(calls)) {
    if (!(STATUS_CLASSES as readonly string[]).includes(cls))
      return `${at}.calls.${cls} is not a status class`;
    if (!Number.isSafeInteger(count) || (count as number) < 0) {
      return `${at}.calls.${cls} is not a non-negative integer`;
    }
  }
  if (lastUserAgent !== null && typeof lastUserAgent !== 'string') {
    return `${at}.lastUserAgent is neither a string nor null`;
  }
  if (!(STAGES as readonly unknown[]).includes(stage)) return `${at}.stage is not a stage`;
  return undefined;
}

/**
 * What is wrong with a parsed ledger file, or undefined. The whole file is checked, since every count in it
 * is added to: a count stored as the string "5" once became "51" on the next call.
 */
function ledgerFileProblem(parsed: unknown): string | undefined {
  if (!isPlainObject(parsed)) return 'it is not an object';
  const extra = unknownKey(parsed, FILE_KEYS);
  if (extra !== undefined) return `${extra} is an unknown key`;
  if (parsed.format !== FORMAT) return `format is not ${FORMAT}`;
  const writtenAt = parsed.written_at;
  if (typeof writtenAt !== 'string' || !ISO_INSTANT.test(writtenAt) || Number.isNaN(Date.parse(writtenAt))) {
    return 'written_at is not a UTC time as toISOString writes it';
  }
  const since = parsed.recording_since;
  if (since !== undefined) {
    if (!isPlainObject(since)) return 'recording_since is not an object';
    for (const [route, at] of Object.entries(since)) {
      if (!(ROUTE_IDS as readonly string[]).includes(route))
        return `recording_since.${route} is not a route id`;
      if (!isTime(at)) return `recording_since.${route} is not a time in epoch milliseconds`;
    }
  }
  if (!Array.isArray(parsed.entries)) return 'entries is not an array';
  const seen = new Set<string>();
  for (const [index, entry] of parsed.entries.entries()) {
    const problem = entryProblem(entry, `entries[${index}]`);
    if (problem !== undefined) return problem;
    const { route, consumer } = entry as LedgerEntry;
    const key = entryKey(route, consumer);
    // Written from a map keyed by route and consumer: a second entry for one is damage, not something to add.
    if (seen.has(key)) return `entries[${index}] repeats route ${route} and consumer ${consumer}`;
    seen.add(key);
  }
  return undefined;
}

/**
 * The ledger file in `dataDir`: empty when there is no file yet; throws, naming the first problem, when it
 * is not a ledger this code wrote.
 */
export function readLedgerFile(dataDir: string): LedgerSnapshot {
  let text: string;
  try {
    text = readFileSync(join(dataDir, LEDGER_FILE), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], since: {} };
    throw error;
  }
  const parsed: unknown = JSON.parse(text);
  const problem = ledgerFileProblem(parsed);
  if (problem !== undefined) throw new Error(`${LEDGER_FILE} is not a format ${FORMAT} ledger: ${problem}`);
  const { entries, recording_since: since = {} } = parsed as LedgerFile;
  return { entries, since };
}

export interface FileLedgerStoreOptions {
  dataDir: string;
  logger: Logger;
}

/**
 * The ledger of a single instance: a JSON file in `dataDir` (created if missing), replaced whole on every
 * write by writing a temporary file, syncing it and renaming it over the old one, so a crash leaves either
 * the old ledger or the new one, never half of one. An unreadable file is moved aside, not overwritten.
 */
export function createFileLedgerStore({ dataDir, logger }: FileLedgerStoreOptions): LedgerStore {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, LEDGER_FILE);
  let entries: Map<string, LedgerEntry>;
  let since: RecordingSince = {};
  try {
    const stored = readLedgerFile(dataDir);
    entries = mergeEntries(stored.entries);
    since = stored.since;
  } catch (error) {
    const aside = `${file}.unreadable-${Date.now()}`;
    renameSync(file, aside);
    logger.error({ file, movedTo: aside, reason: (error as Error).message }, 'ledger file unreadable');
    entries = new Map();
  }
  const temporary = `${file}.${process.pid}.tmp`;

  return {
    available: true,
    async read() {
      return { entries: [...entries.values()], since };
    },
    async write(deltas, writerSince) {
      const next = new Map(entries);
      for (const delta of deltas) {
        const key = entryKey(delta.route, delta.consumer);
        next.set(key, mergeEntry(next.get(key), delta));
      }
      const nextSince = mergeSince(since, writerSince);
      const body: LedgerFile = {
        format: FORMAT,
        written_at: new Date().toISOString(),
        recording_since: nextSince,
        entries: [...next.values()],
      };
      const handle = await open(temporary, 'w');
      try {
        await handle.writeFile(`${JSON.stringify(body, null, 2)}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, file);
      entries = next;
      since = nextSince;
      return [];
    },
  };
}
