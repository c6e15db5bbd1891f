import { mkdirSync, readFileSync, renameSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ROUTE_IDS, STAGES } from './config.js';
import { entryKey, type LedgerEntry, type LedgerStore, mergeEntries, mergeEntry } from './ledger.js';

export const LEDGER_FILE = 'deprecation-ledger.json';
const FORMAT = 1;

interface LedgerFile {
  format: number;
  written_at: string;
  entries: LedgerEntry[];
}

function isLedgerEntry(value: unknown): value is LedgerEntry {
  if (typeof value !== 'object' || value === null) return false;
  const entry = value as Record<string, unknown>;
  return (
    (ROUTE_IDS as readonly unknown[]).includes(entry.route) &&
    typeof entry.consumer === 'string' &&
    typeof entry.firstSeen === 'number' &&
    typeof entry.lastSeen === 'number' &&
    typeof entry.calls === 'object' &&
    entry.calls !== null &&
    (STAGES as readonly unknown[]).includes(entry.stage)
  );
}

/** The entries of the ledger file in `dataDir`: none when there is no file yet; throws when it is not one. */
export function readLedgerFile(dataDir: string): LedgerEntry[] {
  let text: string;
  try {
    text = readFileSync(join(dataDir, LEDGER_FILE), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const parsed = JSON.parse(text) as Partial<LedgerFile>;
  if (parsed.format !== FORMAT || !Array.isArray(parsed.entries) || !parsed.entries.every(isLedgerEntry)) {
    throw new Error(`${LEDGER_FILE} is not a format ${FORMAT} ledger`);
  }
  return parsed.entries;
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
  try {
    entries = mergeEntries(readLedgerFile(dataDir));
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
      return [...entries.values()];
    },
    async write(deltas) {
      const next = new Map(entries);
      for (const delta of deltas) {
        const key = entryKey(delta.route, delta.consumer);
        next.set(key, mergeEntry(next.get(key), delta));
      }
      const body: LedgerFile = {
        format: FORMAT,
        written_at: new Date().toISOString(),
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
      return [];
    },
  };
}
