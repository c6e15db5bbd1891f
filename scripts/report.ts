/**
 * Who still calls the deprecated routes: `npm run report` prints the usage ledger as a table, `-- --json`
 * as JSON for scripts. It reads the ledger where the shim keeps it under the same configuration (SHIM_CONFIG,
 * SHIM_DATA_DIR, SHIM_REDIS_URL): the file in the data folder, or Redis.
 */

import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Config, ConfigError, loadConfig } from '../src/config.js';
import {
  type ConsumerUsage,
  type DeprecationReport,
  type LedgerSnapshot,
  quietPeriodStart,
  type RouteUsage,
  summarizeLedger,
} from '../src/ledger.js';
import { LEDGER_FILE, readLedgerFile } from '../src/ledger-file-store.js';
import { createRedisLedgerStore } from '../src/ledger-redis-store.js';
import { createLogger } from '../src/logger.js';
import { createRedisConnection } from '../src/redis.js';
import { ANONYMOUS, UNAUTHENTICATED } from '../src/usage.js';

const REDIS_CONNECT_TIMEOUT_MS = 5_000;
const CLIENT_WIDTH = 48;

/**
 * A data folder with no ledger file reads as nothing recorded, which is also what a report run from the wrong
 * folder or without the shim's SHIM_CONFIG/SHIM_DATA_DIR sees (a relative `dataDir` is resolved from the
 * folder each process starts in), and one run without SHIM_REDIS_URL when the shim keeps its ledger in Redis:
 * said on stderr, with the path looked at, so the table is not taken for the shim's. Never a verdict of its
 * own: no route is safe to sunset before it has been recorded.
 */
function noteMissingLedgerFile(dataDir: string): void {
  const file = resolve(dataDir, LEDGER_FILE);
  if (existsSync(file)) return;
  process.stderr.write(
    `no ledger file at ${file}: nothing recorded there yet. Run the report with the shim's SHIM_CONFIG, ` +
      `SHIM_DATA_DIR and SHIM_REDIS_URL, from the folder the shim was started in if its dataDir is relative.\n`,
  );
}

async function readLedger(config: Config): Promise<LedgerSnapshot> {
  if (config.redisUrl === null) {
    noteMissingLedgerFile(config.dataDir);
    return readLedgerFile(config.dataDir);
  }
  const logger = createLogger('error', process.stderr);
  const redis = createRedisConnection({ url: config.redisUrl, logger, reconnect: false });
  try {
    await redis.whenReady(REDIS_CONNECT_TIMEOUT_MS);
    return await createRedisLedgerStore(redis).read();
  } finally {
    await redis.close();
  }
}

/** Why a shared consumer does not hold a route back, shown beside it: it was never served by Nango. */
const NOT_BLOCKING: Readonly<Record<string, string>> = {
  [ANONYMOUS]: 'no API key',
  [UNAUTHENTICATED]: 'refused with 401/403',
};

function consumerCell(usage: ConsumerUsage): string {
  if (usage.name !== null) return `${usage.name} (${usage.consumer})`;
  const why = usage.blocks_sunset ? undefined : NOT_BLOCKING[usage.consumer];
  return why === undefined ? usage.consumer : `${usage.consumer} (${why})`;
}

/** Called within the quiet period by a consumer that holds it back; not merely recorded too briefly. */
function isStillCalled(route: RouteUsage, report: DeprecationReport): boolean {
  const quietSince = quietPeriodStart(Date.parse(report.generated_at), report.quiet_period_days);
  return route.consumers.some((usage) => usage.blocks_sunset && Date.parse(usage.last_seen) >= quietSince);
}

/** Control characters (C0, DEL, C1): what a terminal may act on instead of showing. */
const CONTROL = /\p{Cc}/gu;

/**
 * A cell as the terminal will show it: a client chooses its User-Agent, and node:http reads bytes 0x80-0xff
 * as U+0080-U+00FF, so CSI (U+009B) or NEL (U+0085) could move the cursor over the table. Shown as escapes.
 */
function printable(text: string): string {
  return text.replace(CONTROL, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function formatTable(report: DeprecationReport): string {
  const rows = [['ROUTE', 'CONSUMER', 'CALLS', 'LAST SEEN', 'CLIENT']];
  for (const route of report.routes) {
    for (const usage of route.consumers) {
      const client = printable(usage.last_user_agent ?? '-');
      rows.push([
        route.route,
        printable(consumerCell(usage)),
        String(usage.total_calls),
        usage.last_seen,
        client.length > CLIENT_WIDTH ? `${client.slice(0, CLIENT_WIDTH - 1)}…` : client,
      ]);
    }
  }
  const widths = (rows[0] ?? []).map((_, column) =>
    Math.max(...rows.map((row) => (row[column] ?? '').length)),
  );
  const lines = rows.map((row) =>
    row
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd(),
  );
  if (rows.length === 1) lines.push('(no deprecated calls recorded)');
  const quiet = report.routes.filter((route) => route.safe_to_sunset).map((route) => route.route);
  const busy = report.routes.filter((route) => isStillCalled(route, report)).map((route) => route.route);
  const young = report.routes
    .filter((route) => !route.safe_to_sunset && !isStillCalled(route, report))
    .map((route) =>
      route.recording_since === null
        ? `${route.route} (not recorded yet)`
        : `${route.route} (since ${route.recording_since})`,
    );
  lines.push('');
  lines.push(
    `safe to sunset (no call with an API key in ${report.quiet_period_days} days, refused keys aside): ${quiet.join(', ') || '-'}`,
  );
  lines.push(`still called: ${busy.join(', ') || '-'}`);
  if (young.length > 0) {
    lines.push(
      `recorded for less than ${report.quiet_period_days} days, no verdict yet: ${young.join(', ')}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

async function main(argv: string[]): Promise<number> {
  let config: Config;
  try {
    config = loadConfig(process.env).config;
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`invalid configuration: ${error.problems.join('; ')}\n`);
    return 1;
  }
  let ledger: LedgerSnapshot;
  try {
    ledger = await readLedger(config);
  } catch (error) {
    const where = config.redisUrl === null ? `the ledger file in ${config.dataDir}` : 'the ledger in Redis';
    process.stderr.write(`cannot read ${where}: ${(error as Error).message}\n`);
    return 1;
  }
  const report = summarizeLedger(ledger.entries, {
    now: Date.now(),
    quietPeriodDays: config.ledger.quietPeriodDays,
    consumers: config.consumers,
    since: ledger.since,
  });
  process.stdout.write(
    argv.includes('--json') ? `${JSON.stringify(report, null, 2)}\n` : formatTable(report),
  );
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
