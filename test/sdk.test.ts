import { Nango as LegacyNango } from '@nangohq/node';
import { Nango as CurrentNango } from 'nango-node-0.67.0';
import { describe, expect, it } from 'vitest';
import { type CaptureEntry, loadCaptures, stripVolatile } from './support/captures.js';
import { closedAfterEach } from './support/cleanup.js';
import { DEV_KEY, type FakeNango, startFakeNango } from './support/fake-nango.js';
import { replayQuietly } from './support/replay.js';
import { type RunningShim, startShim } from './support/shim.js';

/**
 * The real clients, unchanged: @nangohq/node 0.66.2 (the last legacy-path SDK) and 0.67.0 (the first on
 * /connections) call the shim, which fronts a Nango without the legacy routes. Every call must give what
 * the same call gave against the real Nango 0.71.4 (sdk-0.66.2.json, sdk-0.67.0.json).
 */

interface SdkRecord {
  call: string;
  args: unknown[];
  returned?: { kind: string; status?: number; data?: unknown; value?: unknown };
  threw?: { constructor: string; message: string; status?: number; responseData?: unknown };
}

type SdkClient = Record<string, (...args: unknown[]) => Promise<unknown>>;

let fake: FakeNango | undefined;
let shim: RunningShim | undefined;
const track = closedAfterEach();

const EARLIER = [
  'setup.json',
  'metadata-patch.json',
  'metadata-post.json',
  'path-style.json',
  'connection-get.json',
];

function keyOf(entry: CaptureEntry): string {
  const header = entry.request?.headers.Authorization;
  // "updateMetadata with unknown secret key" was made with a key no account has.
  return typeof header === 'string' && !header.includes('<SECRET_KEY>')
    ? header.replace('Bearer ', '')
    : DEV_KEY;
}

/** What a call gave, in the capture's own terms. */
async function outcomeOf(client: SdkClient, record: SdkRecord): Promise<unknown> {
  const method = /^[a-zA-Z]+/.exec(record.call)?.[0] ?? '';
  const fn = client[method];
  if (typeof fn !== 'function') throw new Error(`the SDK has no ${method}`);
  try {
    const result = (await fn.apply(client, record.args)) as {
      status?: number;
      data?: unknown;
      headers?: unknown;
    };
    if (record.returned?.kind === 'AxiosResponse') {
      return { status: result.status, data: stripVolatile(result.data) };
    }
    return { value: stripVolatile(result) };
  } catch (error) {
    const e = error as Error & { status?: number; response?: { data?: unknown } };
    return {
      constructor: e.constructor.name,
      message: e.message,
      status: e.status,
      responseData: stripVolatile(e.response?.data),
    };
  }
}

function expectedOf(record: SdkRecord): unknown {
  if (record.threw) {
    const { message, status, responseData } = record.threw;
    return {
      constructor: record.threw.constructor,
      message,
      status,
      responseData: stripVolatile(responseData),
    };
  }
  if (record.returned?.kind === 'AxiosResponse') {
    return { status: record.returned.status, data: stripVolatile(record.returned.data) };
  }
  return { value: stripVolatile(record.returned?.value) };
}

async function runRecordedCalls(
  file: 'sdk-0.66.2.json' | 'sdk-0.67.0.json',
  Client: new (options: { secretKey: string; host: string }) => unknown,
) {
  fake = track(await startFakeNango({ legacyRoutes: false, seed: false }));
  const earlier = file === 'sdk-0.67.0.json' ? [...EARLIER, 'sdk-0.66.2.json'] : EARLIER;
  shim = track(await startShim(fake.url));
  // The earlier files' legacy writes can only be applied through the shim: the fake has no legacy routes.
  for (const capture of earlier) await replayQuietly(shim.url, capture);
  const before = fake.requests.length;
  const mismatches: Array<{ call: string; expected: unknown; actual: unknown }> = [];
  for (const entry of loadCaptures(file)) {
    const record = entry.sdk as SdkRecord;
    const client = new Client({ secretKey: keyOf(entry), host: shim.url }) as SdkClient;
    const actual = await outcomeOf(client, record);
    const expected = expectedOf(record);
    if (JSON.stringify(actual) !== JSON.stringify(expected))
      mismatches.push({ call: entry.name, expected, actual });
  }
  return { mismatches, upstreamRequests: fake.requests.slice(before) };
}

describe('@nangohq/node through the shim', () => {
  it('0.66.2 (legacy paths) gets every recorded result: set, update, get, list, errors', async () => {
    const { mismatches, upstreamRequests } = await runRecordedCalls('sdk-0.66.2.json', LegacyNango);
    expect(mismatches).toEqual([]);
    // Every call was translated: the upstream, which has no legacy routes, only saw /connections paths.
    expect(upstreamRequests.length).toBeGreaterThanOrEqual(18);
    expect(upstreamRequests.filter((r) => !r.url.startsWith('/connections'))).toEqual([]);
  });

  it('0.67.0 (new paths) passes straight through with the recorded results', async () => {
    const { mismatches, upstreamRequests } = await runRecordedCalls('sdk-0.67.0.json', CurrentNango);
    expect(mismatches).toEqual([]);
    expect(upstreamRequests.length).toBeGreaterThanOrEqual(18);
  });

  it('0.66.2 lists by end user through the shim and gets what 0.67.0 gets from /connections', async () => {
    fake = track(await startFakeNango({ legacyRoutes: false }));
    shim = track(await startShim(fake.url));
    const legacy = new LegacyNango({ secretKey: DEV_KEY, host: shim.url });
    const current = new CurrentNango({ secretKey: DEV_KEY, host: fake.url });
    const filters = { endUserId: 'user-1', endUserOrganizationId: 'org-1' };
    const before = fake.requests.length;

    const listed = await legacy.listConnections(undefined, undefined, filters);
    const direct = await current.listConnections(undefined, undefined, filters);
    expect(listed.connections).toEqual(direct.connections);
    const [translated, sent] = fake.requests.slice(before);
    expect(translated?.url).toBe('/connections?endUserId=user-1&endUserOrganizationId=org-1');
    expect(translated?.url).toBe(sent?.url);
  });

  it('0.66.2 deletes through the shim, and the connection is gone for it and for 0.67.0 alike', async () => {
    fake = track(await startFakeNango({ legacyRoutes: false }));
    shim = track(await startShim(fake.url));
    const legacy = new LegacyNango({ secretKey: DEV_KEY, host: shim.url });
    const current = new CurrentNango({ secretKey: DEV_KEY, host: shim.url });
    const before = fake.requests.length;

    const deleted = await legacy.deleteConnection('unauth', 'conn-2');
    expect(deleted.status).toBe(200);
    expect(deleted.data).toEqual({ success: true });
    expect(fake.requests.slice(before).map((r) => `${r.method} ${r.url}`)).toEqual([
      'DELETE /connections/conn-2?provider_config_key=unauth',
    ]);
    for (const client of [legacy, current]) {
      const error = await client.getConnection('unauth', 'conn-2').catch((caught: unknown) => caught);
      expect((error as { status?: number }).status).toBe(404);
    }
  });
});
