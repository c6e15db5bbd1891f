import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parseConfig, type RouteId } from '../src/config.js';
import {
  createLedger,
  entryOf,
  type LedgerEntry,
  type LedgerStore,
  mergeEntry,
  summarizeLedger,
} from '../src/ledger.js';
import { createFileLedgerStore, LEDGER_FILE, readLedgerFile } from '../src/ledger-file-store.js';
import { createLogger } from '../src/logger.js';
import type { UsageEvent } from '../src/usage.js';
import { DEFAULTS } from './support/shim.js';
import { usageEvent } from './support/usage-event.js';

const DAY = 86_400_000;
const NOW = Date.parse('2026-03-01T12:00:00Z');

function call(
  fingerprint: string | undefined,
  at: number,
  { status = 200, routeId = 'connection-metadata' as RouteId, userAgent = 'nango-node/0.66.2' } = {},
): UsageEvent {
  return usageEvent({ fingerprint, at, status, routeId, userAgent });
}

function configsWith(overrides: Record<string, unknown> = {}) {
  return { current: parseConfig([DEFAULTS, { ledger: { flushIntervalMs: 60_000 } }, overrides]) };
}

function capturedLogger() {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => {
    text += chunk.toString('utf8');
  });
  const lines = () =>
    text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { logger: createLogger('debug', stream), lines };
}

/** A store the test switches on and off, recording what reached it. */
function switchableStore() {
  const written: LedgerEntry[][] = [];
  const listeners: Array<() => void> = [];
  const store: LedgerStore & { up: boolean } = {
    up: true,
    get available() {
      return this.up;
    },
    onAvailable: (listener) => listeners.push(listener),
    async read() {
      return { entries: written.flat(), since: {} };
    },
    async write(deltas) {
      if (!this.up) return deltas;
      written.push(deltas);
      return [];
    },
  };
  return {
    store,
    written,
    bringBack() {
      store.up = true;
      for (const listener of listeners) listener();
    },
  };
}

describe('ledger entries', () => {
  it('folds calls into one entry per route and consumer', () => {
    const first = entryOf(call('0123456789abcdef', NOW - 1000, { userAgent: 'old' }), {});
    const merged = mergeEntry(
      mergeEntry(undefined, first),
      entryOf(call('0123456789abcdef', NOW, { status: 404, userAgent: 'new' }), {}),
    );
    expect(merged).toMatchObject({
      consumer: '0123456789abcdef',
      fingerprint: '0123456789abcdef',
      firstSeen: NOW - 1000,
      lastSeen: NOW,
      calls: { '2xx': 1, '4xx': 1 },
      lastUserAgent: 'new',
    });
    // An older delta arriving late (another instance) changes the counts, not the last client.
    const late = mergeEntry(merged, entryOf(call('0123456789abcdef', NOW - 5000, { userAgent: 'late' }), {}));
    expect(late).toMatchObject({
      firstSeen: NOW - 5000,
      lastSeen: NOW,
      lastUserAgent: 'new',
      calls: { '2xx': 2 },
    });
  });

  it('never records the fingerprint of a refused key', () => {
    expect(entryOf(call('0123456789abcdef', NOW, { status: 401 }), {})).toMatchObject({
      consumer: 'unauthenticated',
      fingerprint: null,
    });
    expect(entryOf(call(undefined, NOW), {})).toMatchObject({ consumer: 'anonymous', fingerprint: null });
    expect(entryOf(call('0123456789abcdef', NOW), { '0123456789abcdef': 'billing' }).name).toBe('billing');
  });
});

describe('summarizeLedger', () => {
  // Recorded since long before the quiet period, unless a test says otherwise.
  const since = { 'connection-metadata': 0, 'connection-get': 0, 'connection-delete': 0 } as const;
  const options = { now: NOW, quietPeriodDays: 30, consumers: {}, since };

  it('lists every route, and a route nobody called for the whole quiet period is safe to sunset', () => {
    const report = summarizeLedger([], options);
    expect(report.routes.map((route) => route.route)).toContain('connection-delete');
    const recorded = report.routes.filter((route) => route.route in since);
    expect(recorded.every((route) => route.safe_to_sunset && route.last_call === null)).toBe(true);
  });

  it('has no verdict on a route recorded for less than the quiet period, or never', () => {
    const young = { 'connection-metadata': NOW - 29 * DAY, 'connection-get': NOW - 30 * DAY };
    const report = summarizeLedger([], { ...options, since: young });
    expect(report.routes.map((route) => [route.route, route.safe_to_sunset, route.recording_since])).toEqual([
      ['connection-metadata', false, new Date(NOW - 29 * DAY).toISOString()],
      ['connection-path-metadata', false, null],
      ['connection-get', true, new Date(NOW - 30 * DAY).toISOString()],
      ['connection-list', false, null],
      ['connection-delete', false, null],
    ]);
  });

  it('counts a route as recorded from its first recorded call when that is earlier than its stored start', () => {
    // A ledger file of an earlier version has no start: its calls show how far back it goes.
    const old = entryOf(call('0123456789abcdef', NOW - 40 * DAY), {});
    const route = summarizeLedger([old], { ...options, since: { 'connection-metadata': NOW - DAY } })
      .routes[0];
    expect(route).toMatchObject({
      safe_to_sunset: true,
      recording_since: new Date(NOW - 40 * DAY).toISOString(),
    });
  });

  it('is not safe to sunset while a consumer called within the quiet period', () => {
    const recent = entryOf(call('0123456789abcdef', NOW - 29 * DAY), {});
    const old = entryOf(call('fedcba9876543210', NOW - 31 * DAY, { routeId: 'connection-get' }), {});
    const report = summarizeLedger([recent, old], options);
    const metadata = report.routes.find((route) => route.route === 'connection-metadata');
    const get = report.routes.find((route) => route.route === 'connection-get');
    expect(metadata).toMatchObject({
      safe_to_sunset: false,
      last_call: new Date(NOW - 29 * DAY).toISOString(),
    });
    expect(get).toMatchObject({ safe_to_sunset: true, last_call: new Date(NOW - 31 * DAY).toISOString() });
  });

  it('does not let refused calls hold a route back, though they show as its last call', () => {
    const refused = entryOf(call('0123456789abcdef', NOW - DAY, { status: 401 }), {});
    const route = summarizeLedger([refused], options).routes[0];
    expect(route).toMatchObject({ safe_to_sunset: true, last_call: new Date(NOW - DAY).toISOString() });
    expect(route?.consumers[0]).toMatchObject({ consumer: 'unauthenticated', total_calls: 1 });
  });

  it('does not let keyless calls hold a route back, and still shows and counts them', () => {
    // A call without any API key is answered here (410, 429, a local 400) or refused by Nango: never served.
    const keyless = entryOf(call(undefined, NOW - DAY, { status: 400 }), {});
    const route = summarizeLedger([mergeEntry(keyless, keyless)], options).routes[0];
    expect(route).toMatchObject({ safe_to_sunset: true, last_call: new Date(NOW - DAY).toISOString() });
    expect(route?.consumers).toEqual([
      expect.objectContaining({
        consumer: 'anonymous',
        fingerprint: null,
        total_calls: 2,
        blocks_sunset: false,
      }),
    ]);
  });

  it('still counts a key answered here without asking Nango: it cannot be told from a real one', () => {
    const gone = entryOf(call('0123456789abcdef', NOW - DAY, { status: 410 }), {});
    const route = summarizeLedger([gone], options).routes[0];
    expect(route?.safe_to_sunset).toBe(false);
    expect(route?.consumers[0]).toMatchObject({ consumer: '0123456789abcdef', blocks_sunset: true });
  });

  it('names consumers from the configuration of now', () => {
    const entry = entryOf(call('0123456789abcdef', NOW), {});
    const report = summarizeLedger([entry], { ...options, consumers: { '0123456789abcdef': 'billing' } });
    expect(report.routes[0]?.consumers[0]).toMatchObject({
      name: 'billing',
      fingerprint: '0123456789abcdef',
    });
  });
});

describe('createLedger', () => {
  it('buffers while the store is away, drops past the bound, and writes the rest when it returns', async () => {
    const { store, written, bringBack } = switchableStore();
    const { logger, lines } = capturedLogger();
    let dropped = 0;
    const ledger = createLedger({
      store,
      configs: configsWith({ ledger: { redisBufferMax: 2 } }),
      logger,
      onDropped: (count) => {
        dropped += count;
      },
    });
    store.up = false;
    ledger.record(call('000000000000000a', NOW));
    ledger.record(call('000000000000000a', NOW + 1));
    ledger.record(call('000000000000000b', NOW));
    ledger.record(call('000000000000000c', NOW));
    await ledger.flush();
    expect(written).toEqual([]);
    expect(dropped).toBe(1);
    expect(lines().find((line) => line.msg === 'ledger updates dropped')).toMatchObject({ dropped: 1 });

    bringBack();
    await ledger.flush();
    expect(written.flat().map((entry) => [entry.consumer, entry.calls['2xx']])).toEqual([
      ['000000000000000a', 2],
      ['000000000000000b', 1],
    ]);
    await ledger.close();
  });

  it('records unnamed fingerprints past metrics.maxConsumers as other, so random keys cannot grow it', async () => {
    const { store } = switchableStore();
    const named = 'ffffffffffffffff';
    const ledger = createLedger({
      store,
      configs: configsWith({ metrics: { maxConsumers: 2 }, consumers: { [named]: 'billing' } }),
      logger: createLogger('silent'),
    });
    for (const fp of [
      '000000000000000a',
      '000000000000000b',
      '000000000000000c',
      '000000000000000d',
      named,
    ]) {
      ledger.record(call(fp, NOW, { status: 410 }));
    }
    ledger.record(call('000000000000000a', NOW + 1));
    const consumers = (await ledger.report(NOW + 2)).routes[0]?.consumers.map((c) => [
      c.consumer,
      c.total_calls,
    ]);
    expect(consumers).toEqual(
      expect.arrayContaining([
        ['000000000000000a', 2],
        ['000000000000000b', 1],
        ['other', 2],
        ['ffffffffffffffff', 1],
      ]),
    );
    expect(consumers).toHaveLength(4);
    await ledger.close();
  });

  it('reports a call buffered while a timed write starts during the report', async () => {
    // A store whose writes take a while, as a file synced to disk or a Redis round trip do.
    const written: LedgerEntry[][] = [];
    const store: LedgerStore = {
      available: true,
      async read() {
        return { entries: written.flat(), since: {} };
      },
      async write(deltas) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        written.push(deltas);
        return [];
      },
    };
    const ledger = createLedger({ store, configs: configsWith(), logger: createLogger('silent') });
    ledger.record(call('000000000000000a', NOW));
    const report = ledger.report(NOW + 20);
    // While the report's own flush writes, another call comes and the timer's flush starts.
    await new Promise((resolve) => setTimeout(resolve, 5));
    ledger.record(call('000000000000000a', NOW + 10));
    void ledger.flush();
    expect((await report).routes[0]?.consumers[0]).toMatchObject({ total_calls: 2 });
    await ledger.close();
  });

  it('reports what is stored and what is not written yet', async () => {
    const { store } = switchableStore();
    const ledger = createLedger({ store, configs: configsWith(), logger: createLogger('silent') });
    ledger.record(call('000000000000000a', NOW));
    store.up = false;
    ledger.record(call('000000000000000a', NOW + 10));
    const report = await ledger.report(NOW + 20);
    expect(report.routes[0]?.consumers[0]).toMatchObject({ total_calls: 2 });
    await ledger.close();
  });
});

/** One entry as the file store writes it. */
function storedEntry(): LedgerEntry {
  return entryOf(call('0123456789abcdef', NOW), {});
}

describe('the ledger file', () => {
  it('survives a restart: a new ledger on the same folder adds to the old counts', async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), 'nango-shim-ledger-')), 'nested', 'data');
    const logger = createLogger('silent');
    const first = createLedger({
      store: createFileLedgerStore({ dataDir, logger }),
      configs: configsWith(),
      logger,
    });
    first.record(call('0123456789abcdef', NOW - 1000, { userAgent: 'nango-node/0.66.2' }));
    first.record(call(undefined, NOW - 500));
    await first.close();
    expect(existsSync(join(dataDir, LEDGER_FILE))).toBe(true);

    const second = createLedger({
      store: createFileLedgerStore({ dataDir, logger }),
      configs: configsWith(),
      logger,
    });
    second.record(call('0123456789abcdef', NOW, { userAgent: 'nango-node/0.67.0' }));
    await second.close();

    const { entries } = readLedgerFile(dataDir);
    expect(entries.find((entry) => entry.consumer === '0123456789abcdef')).toMatchObject({
      firstSeen: NOW - 1000,
      lastSeen: NOW,
      calls: { '2xx': 2 },
      lastUserAgent: 'nango-node/0.67.0',
    });
    expect(entries.find((entry) => entry.consumer === 'anonymous')).toBeDefined();
    // Written through a temporary file and a rename: nothing else is left in the folder.
    expect(readdirSync(dataDir)).toEqual([LEDGER_FILE]);
  });

  it('stores when it began recording before any call, and keeps the earliest across restarts', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-ledger-'));
    const logger = createLogger('silent');
    const open = (startedAt: number) =>
      createLedger({
        store: createFileLedgerStore({ dataDir, logger }),
        configs: configsWith(),
        logger,
        startedAt,
      });
    const first = open(NOW - 31 * DAY);
    await first.close();
    expect(readLedgerFile(dataDir).since['connection-delete']).toBe(NOW - 31 * DAY);

    const second = open(NOW);
    const report = await second.report(NOW);
    await second.close();
    expect(report.routes.every((route) => route.safe_to_sunset)).toBe(true);
    expect(readLedgerFile(dataDir).since['connection-delete']).toBe(NOW - 31 * DAY);

    // A new file (the old one lost, or moved aside as damaged): nothing is known of the last 30 days.
    const fresh = createLedger({
      store: createFileLedgerStore({ dataDir: mkdtempSync(join(tmpdir(), 'nango-shim-ledger-')), logger }),
      configs: configsWith(),
      logger,
      startedAt: NOW - DAY,
    });
    const young = await fresh.report(NOW);
    await fresh.close();
    expect(young.routes.map((route) => [route.safe_to_sunset, route.recording_since])).toEqual(
      young.routes.map(() => [false, new Date(NOW - DAY).toISOString()]),
    );
  });

  it('moves an unreadable file aside instead of overwriting it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-ledger-'));
    writeFileSync(join(dataDir, LEDGER_FILE), '{"not":"a ledger"');
    const { logger, lines } = capturedLogger();
    const store = createFileLedgerStore({ dataDir, logger });
    expect(await store.read()).toEqual({ entries: [], since: {} });
    const aside = readdirSync(dataDir).find((name) => name.startsWith(`${LEDGER_FILE}.unreadable-`));
    expect(aside).toBeDefined();
    expect(readFileSync(join(dataDir, aside as string), 'utf8')).toBe('{"not":"a ledger"');
    expect(lines().some((line) => line.msg === 'ledger file unreadable')).toBe(true);
  });

  it('removes the temporary files a crashed writer left, never those of a live writer nor any other file', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-ledger-'));
    // A process that has run and ended: its pid names no process now.
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid as number;
    const stale = [`${LEDGER_FILE}.${deadPid}.tmp`, `${LEDGER_FILE}.${process.pid}.tmp`];
    const kept = [
      `${LEDGER_FILE}.${process.ppid}.tmp`,
      `${LEDGER_FILE}.0${deadPid}.tmp`,
      `${LEDGER_FILE}.unreadable-1772366400000`,
      `other.json.${deadPid}.tmp`,
    ];
    for (const name of [...stale, ...kept]) writeFileSync(join(dataDir, name), '{"half":');
    const { logger, lines } = capturedLogger();
    createFileLedgerStore({ dataDir, logger });
    expect(readdirSync(dataDir).sort()).toEqual([...kept].sort());
    const removedLines = lines().filter((line) => line.msg === 'stale ledger temporary files removed');
    expect(removedLines).toEqual([
      expect.objectContaining({ level: 'info', dataDir, files: expect.arrayContaining(stale) }),
    ]);
    expect(removedLines[0]).toHaveProperty('files.length', stale.length);
    // Nothing left to remove: the next start says nothing.
    const next = capturedLogger();
    createFileLedgerStore({ dataDir, logger: next.logger });
    expect(next.lines().filter((line) => line.msg === 'stale ledger temporary files removed')).toEqual([]);
  });

  it('refuses to open a ledger it cannot read, instead of moving it aside and starting an empty one', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-ledger-'));
    // A folder where the file should be: read fails as it does for a file the process may not read.
    mkdirSync(join(dataDir, LEDGER_FILE));
    const { logger, lines } = capturedLogger();
    expect(() => createFileLedgerStore({ dataDir, logger })).toThrow(/EISDIR/);
    expect(readdirSync(dataDir)).toEqual([LEDGER_FILE]);
    expect(lines().some((line) => line.msg === 'ledger file unreadable')).toBe(false);
  });

  it('moves a damaged file aside, saying where, instead of adding to counts that are not numbers', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-ledger-'));
    const damaged = JSON.stringify({
      format: 1,
      written_at: new Date(NOW).toISOString(),
      entries: [{ ...storedEntry(), calls: { '2xx': '5', '4xx': null } }],
    });
    writeFileSync(join(dataDir, LEDGER_FILE), damaged);
    const { logger, lines } = capturedLogger();
    const store = createFileLedgerStore({ dataDir, logger });
    expect(await store.read()).toEqual({ entries: [], since: {} });
    const aside = readdirSync(dataDir).find((name) => name.startsWith(`${LEDGER_FILE}.unreadable-`));
    expect(readFileSync(join(dataDir, aside as string), 'utf8')).toBe(damaged);
    expect(lines().find((line) => line.msg === 'ledger file unreadable')).toMatchObject({
      level: 'error',
      file: join(dataDir, LEDGER_FILE),
      movedTo: join(dataDir, aside as string),
      reason: `${LEDGER_FILE} is not a format 1 ledger: entries[0].calls.2xx is not a non-negative integer`,
    });
    // The next call starts a new ledger: counted as a number, never appended to the damaged "5".
    await store.write([storedEntry()], { 'connection-metadata': NOW });
    expect(readLedgerFile(dataDir)).toEqual({
      entries: [storedEntry()],
      since: { 'connection-metadata': NOW },
    });
  });

  it('checks the whole file, not just its outline', () => {
    const problems: Array<[string, Record<string, unknown>]> = [
      ['entries[0].calls.2xx is not a non-negative integer', { entry: { calls: { '2xx': -1 } } }],
      ['entries[0].calls.2xx is not a non-negative integer', { entry: { calls: { '2xx': 1.5 } } }],
      ['entries[0].calls.2xx is not a non-negative integer', { entry: { calls: { '2xx': 2 ** 53 } } }],
      ['entries[0].calls.6xx is not a status class', { entry: { calls: { '6xx': 1 } } }],
      ['entries[0].calls is not an object', { entry: { calls: [1] } }],
      ['entries[0].firstSeen is not a time in epoch milliseconds', { entry: { firstSeen: '1' } }],
      ['entries[0].lastSeen is not a time in epoch milliseconds', { entry: { lastSeen: 8.64e15 + 1 } }],
      ['entries[0].firstSeen is later than its lastSeen', { entry: { firstSeen: NOW + 1 } }],
      ['entries[0].route is not a route id', { entry: { route: 'connection-put' } }],
      ['entries[0].stage is not a stage', { entry: { stage: 'retired' } }],
      [
        'entries[0].consumer is neither a fingerprint (16 hex digits) nor unauthenticated, anonymous, other',
        { entry: { consumer: 'ABCDEF0123456789', fingerprint: 'ABCDEF0123456789' } },
      ],
      ['entries[0].fingerprint must equal its consumer', { entry: { fingerprint: null } }],
      ['entries[0].fingerprint must be null for consumer anonymous', { entry: { consumer: 'anonymous' } }],
      ['entries[0].name is neither a string nor null', { entry: { name: 7 } }],
      ['entries[0].lastUserAgent is neither a string nor null', { entry: { lastUserAgent: {} } }],
      ['entries[0].extra is an unknown key', { entry: { extra: 1 } }],
      ['entries[1] repeats route connection-metadata and consumer 0123456789abcdef', { twice: true }],
      ['written_at is not a UTC time as toISOString writes it', { file: { written_at: '' } }],
      ['format is not 1', { file: { format: 2 } }],
      ['entries is not an array', { file: { entries: {} } }],
      ['recording_since is not an object', { file: { recording_since: [] } }],
      [
        'recording_since.connection-put is not a route id',
        { file: { recording_since: { 'connection-put': 1 } } },
      ],
      [
        'recording_since.connection-get is not a time in epoch milliseconds',
        { file: { recording_since: { 'connection-get': '1' } } },
      ],
    ];
    for (const [problem, { entry = {}, file = {}, twice = false }] of problems) {
      const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-ledger-'));
      const damaged = { ...storedEntry(), ...(entry as object) };
      const body = {
        format: 1,
        written_at: new Date(NOW).toISOString(),
        entries: twice ? [damaged, damaged] : [damaged],
        ...(file as object),
      };
      writeFileSync(join(dataDir, LEDGER_FILE), JSON.stringify(body));
      expect(() => readLedgerFile(dataDir), problem).toThrow(
        `${LEDGER_FILE} is not a format 1 ledger: ${problem}`,
      );
    }
  });
});
