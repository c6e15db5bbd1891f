import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROUTE_IDS } from '../src/config.js';
import type { LedgerEntry } from '../src/ledger.js';
import { LEDGER_FILE } from '../src/ledger-file-store.js';
import { createRedisLedgerStore } from '../src/ledger-redis-store.js';
import { createLogger } from '../src/logger.js';
import { createRedisConnection } from '../src/redis.js';
import { writeConfigFile } from './support/child-shim.js';
import { HAS_REDIS_SERVER, startTestRedis } from './support/redis-server.js';
import { runReport } from './support/report.js';

const RECENT = Date.now() - 3_600_000;

const ENTRIES: LedgerEntry[] = [
  {
    route: 'connection-metadata',
    consumer: '0123456789abcdef',
    fingerprint: '0123456789abcdef',
    name: null,
    firstSeen: RECENT - 86_400_000,
    lastSeen: RECENT,
    calls: { '2xx': 40, '4xx': 2 },
    lastUserAgent: 'crm-sync/4.2',
    stage: 'translate',
  },
  {
    route: 'connection-get',
    consumer: 'unauthenticated',
    fingerprint: null,
    name: null,
    firstSeen: RECENT,
    lastSeen: RECENT,
    calls: { '4xx': 1 },
    lastUserAgent: null,
    stage: 'gone',
  },
  {
    route: 'connection-list',
    consumer: 'anonymous',
    fingerprint: null,
    name: null,
    firstSeen: RECENT,
    lastSeen: RECENT,
    calls: { '4xx': 3 },
    lastUserAgent: 'curl/8.5.0',
    stage: 'translate',
  },
];

/** Every route recorded since long before the quiet period (30 days by default). */
const LONG_RECORDED = Object.fromEntries(ROUTE_IDS.map((route) => [route, RECENT - 60 * 86_400_000]));

/** A ledger file as the shim writes it. */
function ledgerFile(entries: unknown[] = ENTRIES, since: Record<string, number> = LONG_RECORDED): string {
  return JSON.stringify({
    format: 1,
    written_at: new Date(RECENT).toISOString(),
    recording_since: since,
    entries,
  });
}

function dataDirWith(content: string): string {
  const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-report-'));
  writeFileSync(join(dataDir, LEDGER_FILE), content);
  return dataDir;
}

describe('npm run report', () => {
  it('prints the ledger file as a table, with configured names', async () => {
    const dataDir = dataDirWith(ledgerFile());
    const config = writeConfigFile({ consumers: { '0123456789abcdef': 'crm' } });
    const { code, stdout, stderr } = await runReport({ SHIM_DATA_DIR: dataDir, SHIM_CONFIG: config });
    expect(code).toBe(0);
    expect(stderr).toBe('');
    const lines = stdout.split('\n');
    expect(lines[0]).toMatch(/^ROUTE\s+CONSUMER\s+CALLS\s+LAST SEEN\s+CLIENT$/);
    expect(stdout).toMatch(/connection-metadata\s+crm \(0123456789abcdef\)\s+42\s+\S+Z\s+crm-sync\/4\.2/);
    expect(stdout).toMatch(/connection-get\s+unauthenticated \(refused with 401\/403\)\s+1\s+\S+Z\s+-/);
    expect(stdout).toMatch(/still called: connection-metadata\n/);
  });

  it('shows keyless calls, counted and labelled, without holding their route back', async () => {
    const dataDir = dataDirWith(ledgerFile());
    const { code, stdout } = await runReport({ SHIM_DATA_DIR: dataDir });
    expect(code).toBe(0);
    expect(stdout).toMatch(/connection-list\s+anonymous \(no API key\)\s+3\s+\S+Z\s+curl\/8\.5\.0/);
    expect(stdout).toMatch(
      /^safe to sunset \(no call with an API key in 30 days, refused keys aside\): .*connection-list/m,
    );
    expect(stdout).toMatch(/^still called: connection-metadata$/m);
    const json = await runReport({ SHIM_DATA_DIR: dataDir }, ['--json']);
    const list = JSON.parse(json.stdout).routes.find(
      (route: { route: string }) => route.route === 'connection-list',
    );
    expect(list).toMatchObject({
      safe_to_sunset: true,
      consumers: [{ consumer: 'anonymous', total_calls: 3, blocks_sunset: false }],
    });
  });

  it("shows a client's control characters as escapes instead of sending them to the terminal", async () => {
    // Any caller, even without a key, picks its User-Agent, and node:http passes bytes 0x80-0xff through
    // as U+0080-U+00FF: CSI (U+009B) and NEL (U+0085) are terminal controls that could rewrite the table.
    const hostile = { ...ENTRIES[2], lastUserAgent: 'curl/8.5.0\u009b2A\u009b2K\u0085\tx' };
    const { code, stdout } = await runReport({ SHIM_DATA_DIR: dataDirWith(ledgerFile([hostile])) });
    expect(code).toBe(0);
    expect(stdout.replaceAll('\n', '')).not.toMatch(/\p{Cc}/u);
    expect(stdout).toContain('curl/8.5.0\\u009b2A\\u009b2K\\u0085\\u0009x');
  });

  it('prints JSON for scripts with --json', async () => {
    const dataDir = dataDirWith(ledgerFile());
    const { code, stdout } = await runReport({ SHIM_DATA_DIR: dataDir }, ['--json']);
    expect(code).toBe(0);
    const report = JSON.parse(stdout);
    expect(report.routes.find((route: { route: string }) => route.route === 'connection-get')).toMatchObject({
      safe_to_sunset: true,
      consumers: [{ consumer: 'unauthenticated', total_calls: 1 }],
    });
  });

  it('calls no route safe to sunset before it has been recorded for the quiet period', async () => {
    // A shim started an hour ago has seen no call to most routes: that says nothing of a monthly job.
    const young = Object.fromEntries(ROUTE_IDS.map((route) => [route, RECENT]));
    const { code, stdout } = await runReport({ SHIM_DATA_DIR: dataDirWith(ledgerFile(ENTRIES, young)) });
    expect(code).toBe(0);
    expect(stdout).toMatch(/^safe to sunset \(.*\): -$/m);
    expect(stdout).toMatch(/^still called: connection-metadata$/m);
    const since = new Date(RECENT).toISOString();
    expect(stdout).toContain(
      `recorded for less than 30 days, no verdict yet: connection-path-metadata (since ${since}), connection-get (since ${since}), connection-list (since ${since}), connection-delete (since ${since})\n`,
    );
    const json = JSON.parse(
      (await runReport({ SHIM_DATA_DIR: dataDirWith(ledgerFile([], young)) }, ['--json'])).stdout,
    );
    expect(json.routes.map((route: { safe_to_sunset: boolean }) => route.safe_to_sunset)).toEqual(
      ROUTE_IDS.map(() => false),
    );
    expect(json.routes[0].recording_since).toBe(since);
  });

  it('says so when nothing was recorded, and fails on a file that is not a ledger', async () => {
    const emptyDir = mkdtempSync(join(tmpdir(), 'nango-shim-report-'));
    const empty = await runReport({ SHIM_DATA_DIR: emptyDir });
    expect(empty.code).toBe(0);
    expect(empty.stdout).toContain('(no deprecated calls recorded)');
    // A folder without a ledger is named, in case it is not the shim's: a relative dataDir, another SHIM_CONFIG,
    // or a shim whose ledger is in Redis (SHIM_REDIS_URL left out of the report's environment).
    expect(empty.stderr).toBe(
      `no ledger file at ${join(emptyDir, LEDGER_FILE)}: nothing recorded there yet. Run the report with the ` +
        "shim's SHIM_CONFIG, SHIM_DATA_DIR and SHIM_REDIS_URL, from the folder the shim was started in if its " +
        'dataDir is relative.\n',
    );
    const broken = await runReport({ SHIM_DATA_DIR: dataDirWith('{"format":1') });
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/^cannot read the ledger file in /);
  });

  it('refuses a damaged ledger file instead of adding up strings, naming what is wrong', async () => {
    const damaged = { ...ENTRIES[0], calls: { '2xx': '5', '4xx': null } };
    const { code, stdout, stderr } = await runReport({ SHIM_DATA_DIR: dataDirWith(ledgerFile([damaged])) });
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(
      /^cannot read the ledger file in .*: deprecation-ledger\.json is not a format 1 ledger: entries\[0\]\.calls\.2xx is not a non-negative integer\n$/,
    );
  });

  it.skipIf(!HAS_REDIS_SERVER)('reads the ledger from Redis with SHIM_REDIS_URL', async () => {
    const redis = await startTestRedis();
    try {
      const connection = createRedisConnection({ url: redis.url, logger: createLogger('silent') });
      await connection.whenReady(5_000);
      expect(await createRedisLedgerStore(connection).write(ENTRIES, LONG_RECORDED)).toEqual([]);
      await connection.close();
      const { code, stdout } = await runReport({ SHIM_REDIS_URL: redis.url }, ['--json']);
      expect(code).toBe(0);
      const metadata = JSON.parse(stdout).routes[0];
      expect(metadata).toMatchObject({ route: 'connection-metadata', safe_to_sunset: false });
      expect(metadata.consumers[0]).toMatchObject({ consumer: '0123456789abcdef', total_calls: 42 });
      expect(JSON.parse(stdout).routes[2]).toMatchObject({
        route: 'connection-get',
        safe_to_sunset: true,
        recording_since: new Date(LONG_RECORDED['connection-get'] as number).toISOString(),
      });

      await redis.stop();
      const down = await runReport({ SHIM_REDIS_URL: redis.url });
      expect(down.code).toBe(1);
      expect(down.stderr).toContain('cannot read the ledger in Redis');
    } finally {
      await redis.close();
    }
  });
});
