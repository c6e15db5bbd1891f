import http from 'node:http';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DEV_KEY, type FakeNango, startFakeNango } from './support/fake-nango.js';
import { type RunningShim, startShim } from './support/shim.js';

const DURATION_MS = 5_000;
const WORKERS = 8;
/** A bound on the count as well as the time, whatever the machine's speed. */
const MAX_REQUESTS = 40_000;
const BODY_LIMIT = 64 * 1024;
/**
 * Growth of the heap and of Buffer memory allowed between the first and the last second, after a full GC
 * each time: a request's worth of retained objects (a few KiB) leaked per call shows well above it.
 */
const HEAP_MARGIN_MIB = 4;

/** A full GC on demand, without asking vitest to start the worker with --expose-gc. */
function collectGarbage(): void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) {
    exposed();
    return;
  }
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

interface Kind {
  name: string;
  method: string;
  path: string;
  key?: string | undefined;
  body?: string;
  expected: number[];
}

const json = (value: unknown) => JSON.stringify(value);

/** The traffic mix, each with the statuses it may get; anything else is a failure of the shim. */
const KINDS: Kind[] = [
  { name: 'pass-through list', method: 'GET', path: '/connections', expected: [200] },
  {
    name: 'pass-through get',
    method: 'GET',
    path: '/connections/conn-1?provider_config_key=unauth',
    expected: [200],
  },
  {
    name: 'translated get',
    method: 'GET',
    path: '/connection/conn-2?provider_config_key=unauth',
    expected: [200],
  },
  { name: 'translated list', method: 'GET', path: '/connection?connectionId=conn-1', expected: [200] },
  {
    name: 'translated patch',
    method: 'PATCH',
    path: '/connection/metadata',
    body: json({ connection_id: 'conn-3', provider_config_key: 'unauth', metadata: { soak: 1 } }),
    expected: [200],
  },
  {
    name: 'translated post',
    method: 'POST',
    path: '/connection/metadata',
    body: json({ connection_id: ['conn-4', 'conn-5'], provider_config_key: 'unauth', metadata: { soak: 2 } }),
    expected: [201],
  },
  {
    name: 'path-style patch',
    method: 'PATCH',
    path: '/connection/conn-6/metadata?provider_config_key=unauth',
    body: json({ soak: 3 }),
    expected: [200],
  },
  {
    name: 'invalid json',
    method: 'PATCH',
    path: '/connection/metadata',
    body: '{"connection_id":',
    expected: [400],
  },
  {
    name: 'invalid body',
    method: 'POST',
    path: '/connection/metadata',
    body: json({ connection_id: 'conn-1', metadata: [] }),
    expected: [400],
  },
  {
    name: 'over the body limit',
    method: 'PATCH',
    path: '/connection/metadata',
    body: json({
      connection_id: 'conn-1',
      provider_config_key: 'unauth',
      metadata: { pad: 'x'.repeat(BODY_LIMIT) },
    }),
    expected: [413],
  },
  {
    name: 'unknown id, body-style',
    method: 'PATCH',
    path: '/connection/metadata',
    body: json({ connection_id: 'nobody', provider_config_key: 'unauth', metadata: {} }),
    expected: [404],
  },
  {
    name: 'unknown id, path-style',
    method: 'POST',
    path: '/connection/nobody/metadata?provider_config_key=unauth',
    body: json({ a: 1 }),
    expected: [404],
  },
  {
    name: 'unknown id, get',
    method: 'GET',
    path: '/connection/nobody?provider_config_key=unauth',
    expected: [404],
  },
  {
    name: 'no key',
    method: 'PATCH',
    path: '/connection/metadata',
    key: undefined,
    body: json({ connection_id: 'conn-1' }),
    expected: [401],
  },
];

let fake: FakeNango;
let shim: RunningShim;

beforeAll(async () => {
  fake = await startFakeNango({ legacyRoutes: false });
  // Warnings and errors only: the test keeps every log line in memory, which would read as a leak.
  shim = await startShim(fake.url, { server: { bodyLimitBytes: BODY_LIMIT }, log: { level: 'warn' } });
});

afterAll(async () => {
  await shim.close();
  await fake.close();
});

function send(agent: http.Agent, kind: Kind): Promise<number> {
  const url = new URL(shim.url);
  const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json' };
  const key = 'key' in kind ? kind.key : DEV_KEY;
  if (key !== undefined) headers.authorization = `Bearer ${key}`;
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method: kind.method, path: kind.path, headers, agent },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(kind.body);
  });
}

it('serves mixed traffic from 8 workers for 5 s with only expected statuses and a flat heap', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: WORKERS });
  const counts = new Map<string, Map<number | string, number>>();
  const unexpected: string[] = [];
  let sent = 0;
  const started = performance.now();
  const elapsed = () => performance.now() - started;

  const worker = async (offset: number) => {
    for (let i = offset; elapsed() < DURATION_MS && sent < MAX_REQUESTS; i += 1) {
      const kind = KINDS[i % KINDS.length] as Kind;
      sent += 1;
      let outcome: number | string;
      try {
        outcome = await send(agent, kind);
      } catch (error) {
        outcome = (error as NodeJS.ErrnoException).code ?? 'error';
      }
      const byOutcome = counts.get(kind.name) ?? new Map<number | string, number>();
      byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
      counts.set(kind.name, byOutcome);
      if (typeof outcome !== 'number' || !kind.expected.includes(outcome)) {
        unexpected.push(`${kind.name}: ${outcome}`);
      }
    }
  };

  const heap: number[] = [];
  const sampleHeap = async (at: number) => {
    await new Promise((resolve) => setTimeout(resolve, at - elapsed()));
    // The fake keeps every request it saw: forget them, they are the test's memory, not the shim's.
    fake.requests.length = 0;
    collectGarbage();
    // Buffers live outside the V8 heap: a leaked body would not show in heapUsed alone.
    const { heapUsed, external } = process.memoryUsage();
    heap.push(heapUsed + external);
  };

  await Promise.all([
    ...Array.from({ length: WORKERS }, (_, n) => worker(n * 3)),
    sampleHeap(1_000),
    sampleHeap(DURATION_MS - 100),
  ]);
  agent.destroy();

  const summary = Object.fromEntries(
    [...counts].map(([name, byOutcome]) => [name, Object.fromEntries(byOutcome)]),
  );
  expect(unexpected.slice(0, 20), JSON.stringify(summary)).toEqual([]);
  // Every kind many times over, even on a loaded machine.
  expect(sent).toBeGreaterThan(KINDS.length * 20);
  expect(counts.size).toBe(KINDS.length);
  expect(shim.logs().filter((line) => line.level === 'error' || line.msg === 'migration failed')).toEqual([]);
  const [first = 0, last = 0] = heap;
  expect((last - first) / 1024 / 1024).toBeLessThan(HEAP_MARGIN_MIB);
  expect(elapsed()).toBeLessThan(DURATION_MS + 3_000);
}, 30_000);
