import { mkdirSync, readdirSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { isRouteId } from './config.js';
import {
  entryKey,
  isLedgerTime,
  LEDGER_ENTRY_KEYS,
  type LedgerEntry,
  type LedgerSnapshot,
  type LedgerStore,
  ledgerEntryProblem,
  mergeEntries,
  mergeEntry,
  mergeSince,
  type RecordingSince,
} from './ledger.js';
import { isPlainObject } from './plain-object.js';

export const LEDGER_FILE = 'deprecation-ledger.json';
const FORMAT = 1;

interface LedgerFile {
  format: number;
  written_at: string;
  /** Absent from the files of earlier versions: their routes count as recorded since their first call. */
  recording_since?: RecordingSince;
  entries: LedgerEntry[];
}

/** `written_at`, as `Date.prototype.toISOString` writes it. */
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const FILE_KEYS: ReadonlyArray<keyof LedgerFile> = ['format', 'written_at', 'recording_since', 'entries'];

function unknownKey(value: Record<string, unknown>, known: readonly string[]): string | undefined {
  return Object.keys(value).find((key) => !known.includes(key));
}

/** What is wrong with one entry of the file, or undefined. `at` names it in the answer. */
function entryProblem(value: unknown, at: string): string | undefined {
  if (!isPlainObject(value)) return `${at} is not an object`;
  const extra = unknownKey(value, LEDGER_ENTRY_KEYS);
  if (extra !== undefined) return `${at}.${extra} is an unknown key`;
  const problem = ledgerEntryProblem(value);
  return problem === undefined ? undefined : `${at}.${problem}`;
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
      if (!isRouteId(route)) return `recording_since.${route} is not a route id`;
      if (!isLedgerTime(at)) return `recording_since.${route} is not a time in epoch milliseconds`;
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

/** The temporary file a write of process `<pid>` renames over the ledger: `deprecation-ledger.json.<pid>.tmp`. */
function temporaryFileOf(file: string, pid: number): string {
  return `${file}.${pid}.tmp`;
}

/** The pid a temporary file's name may end with; temporaryFileOf then says whether it is one. */
const TEMPORARY_PID = /\.([1-9]\d*)\.tmp$/;

/**
 * Whether the process may still be writing. Only ESRCH says it is not running: EPERM is a live process of
 * another user, and any other error leaves the file alone.
 */
function mayBeRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Removes the temporary files of this ledger left by a process that died between writing one and renaming
 * it (a crash, SIGKILL, the OOM killer): nothing else would, and each restart could leave one more. One of
 * this process's own pid (a container whose entry point always gets the same pid) is from an earlier run,
 * since this one has not written yet. Best effort: a folder that cannot be listed, or a file that cannot
 * be removed, is left as it is and the ledger opens anyway.
 */
function removeStaleTemporaryFiles(dataDir: string, file: string, logger: Logger): void {
  let names: string[];
  try {
    names = readdirSync(dataDir);
  } catch {
    return;
  }
  const removed: string[] = [];
  for (const name of names) {
    const pid = Number(TEMPORARY_PID.exec(name)?.[1] ?? Number.NaN);
    if (!Number.isSafeInteger(pid) || join(dataDir, name) !== temporaryFileOf(file, pid)) continue;
    if (pid !== process.pid && mayBeRunning(pid)) continue;
    try {
      unlinkSync(join(dataDir, name));
      removed.push(name);
    } catch {
      // Gone already, or not ours to remove: either way it is not read.
    }
  }
  if (removed.length > 0) logger.info({ dataDir, files: removed }, 'stale ledger temporary files removed');
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
  removeStaleTemporaryFiles(dataDir, file, logger);
  let entries: Map<string, LedgerEntry>;
  let since: RecordingSince = {};
  try {
    const stored = readLedgerFile(dataDir);
    entries = mergeEntries(stored.entries);
    since = stored.since;
  } catch (error) {
    // A file the process cannot read (permissions, a folder in its place, a disk error) is not a damaged
    // ledger: moving it aside would start an empty one and hide every consumer it holds until someone
    // noticed. Start-up stops instead, naming the error ('ledger cannot be opened').
    if ((error as NodeJS.ErrnoException).code !== undefined) throw error;
    const aside = `${file}.unreadable-${Date.now()}`;
    renameSync(file, aside);
    logger.error({ file, movedTo: aside, reason: (error as Error).message }, 'ledger file unreadable');
    entries = new Map();
  }
  const temporary = temporaryFileOf(file, process.pid);

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
