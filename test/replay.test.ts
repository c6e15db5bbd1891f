import { describe, expect, it } from 'vitest';
import {
  CAPTURE_FILES,
  type CaptureEntry,
  type CaptureFile,
  type CaptureReply,
  sendCapture,
} from './support/captures.js';
import { closedAfterEach } from './support/cleanup.js';
import { DEV_KEY, type FakeNango, metadataBodyErrors, startFakeNango } from './support/fake-nango.js';
import { exchanges, replayAndCompare, replayQuietly } from './support/replay.js';
import { type RunningShim, startShim } from './support/shim.js';

/**
 * The oracle test: the real Nango 0.71.4 exchanges, replayed in capture order through the shim against a
 * Nango that no longer has the /connection routes, give the captured status and body (volatile fields
 * aside). Legacy calls are translated; /connections calls pass straight through.
 */

/** Every capture file in capture order; rate-limit.json needs 200 earlier calls in one minute. */
const ORDER: readonly CaptureFile[] = CAPTURE_FILES.filter((file) => file !== 'rate-limit.json');

let fake: FakeNango | undefined;
let shim: RunningShim | undefined;
const track = closedAfterEach();

/** Through the shim, the status, the body and its media type are the contract; helmet headers are Nango's. */
const SHIM_HEADERS = { exactHeaders: ['content-type'], presentHeaders: [] };

async function replayThroughShim(file: CaptureFile, skip?: (entry: CaptureEntry) => boolean) {
  fake = track(await startFakeNango({ legacyRoutes: false, seed: false }));
  shim = track(await startShim(fake.url));
  // The database state each file was captured on: every earlier file, through the shim as well (the fake
  // has no legacy routes, so only the shim can apply their legacy writes).
  for (const earlier of ORDER.slice(0, ORDER.indexOf(file))) await replayQuietly(shim.url, earlier);
  return replayAndCompare(shim.url, file, { ...SHIM_HEADERS, ...(skip ? { skip } : {}) });
}

describe('legacy captures replayed through the shim against a Nango without the legacy routes', () => {
  for (const file of ORDER.filter((name) => name !== 'setup.json')) {
    it(`answers ${file} as Nango 0.71.4 did`, async () => {
      const { sent, mismatches } = await replayThroughShim(file);
      expect(sent).toBeGreaterThanOrEqual(10);
      expect(mismatches).toEqual([]);
    });
  }

  it('really sends the legacy calls to the new endpoint, never to the removed one', async () => {
    await replayThroughShim('metadata-patch.json');
    const legacyAtUpstream = (fake as FakeNango).requests.filter((r) =>
      /^\/connection\/metadata/i.test(r.url),
    );
    const writes = (fake as FakeNango).requests.filter(
      (r) => r.url === '/connections/metadata' && (r.method === 'PATCH' || r.method === 'POST'),
    );
    // Only methods the shim does not own (PUT, OPTIONS, DELETE) may reach the legacy path.
    expect(legacyAtUpstream.every((r) => !['PATCH', 'POST'].includes(r.method))).toBe(true);
    expect(writes.length).toBeGreaterThan(20);
  });

  it('sends the ETag Nango sent with every path-style answer it rebuilds (path-style.json)', async () => {
    fake = track(await startFakeNango({ legacyRoutes: false, seed: false }));
    shim = track(await startShim(fake.url));
    for (const earlier of ORDER.slice(0, ORDER.indexOf('path-style.json')))
      await replayQuietly(shim.url, earlier);
    const compared: Array<{ entry: string; etag: unknown }> = [];
    const expected: Array<{ entry: string; etag: unknown }> = [];
    for (const entry of exchanges('path-style.json')) {
      const reply = await sendCapture(shim.url, entry);
      const rebuilt =
        /^\/connection\/[^/]+\/metadata/i.test(entry.request?.path ?? '') &&
        [200, 201, 404].includes(entry.response?.status ?? 0);
      if (!rebuilt) continue;
      compared.push({ entry: entry.name, etag: reply.headers.etag });
      expected.push({ entry: entry.name, etag: entry.response?.headers.ETag });
    }
    // The echoes (200/201) and the legacy 404s: every one the shim writes itself instead of the successor.
    expect(compared.length).toBe(13);
    expect(compared).toEqual(expected);
  });

  it('answers a path-style PATCH whose body Nango leaves unparsed with an empty 200 and no Content-Type', async () => {
    // Without a JSON Content-Type the legacy handler merges nothing and answers res.send(undefined): Express
    // then sets no Content-Type and no ETag. A Nango that still has the route (Express 5) is the oracle.
    const legacy = track(await startFakeNango({ legacyRoutes: true }));
    fake = track(await startFakeNango({ legacyRoutes: false }));
    shim = track(await startShim(fake.url));
    const entry: CaptureEntry = {
      name: 'PATCH path-style without Content-Type',
      request: {
        method: 'PATCH',
        path: '/connection/conn-5/metadata?provider_config_key=unauth',
        headers: { Authorization: `Bearer ${DEV_KEY}` },
        body: '{"a":1}',
      },
    };
    const expected = await sendCapture(legacy.url, entry);
    const reply = await sendCapture(shim.url, entry);
    const framing = (answer: CaptureReply) => ({
      status: answer.status,
      body: answer.body,
      'content-type': answer.headers['content-type'],
      'content-length': answer.headers['content-length'],
      etag: answer.headers.etag,
    });
    expect(framing(expected)).toEqual({
      status: 200,
      body: '',
      'content-type': undefined,
      'content-length': '0',
      etag: undefined,
    });
    expect(framing(reply)).toEqual(framing(expected));
  });

  it('never answers success for a path-style metadata key the successor cannot store, and writes nothing', async () => {
    // The path-style handler stored any JSON object as it came. The successor's zod 4.0.5 record (the fake
    // runs Nango's own version) skips a `__proto__` key and still answers 200, and refuses an object whose
    // `constructor` key is not a class's: a 200 would claim a write that never happened.
    const legacy = track(await startFakeNango({ legacyRoutes: true }));
    fake = track(await startFakeNango({ legacyRoutes: false }));
    shim = track(await startShim(fake.url));
    const patch = (body: string): CaptureEntry => ({
      name: 'PATCH path-style with a key the successor cannot store',
      request: {
        method: 'PATCH',
        path: '/connection/conn-5/metadata?provider_config_key=unauth',
        headers: { Authorization: `Bearer ${DEV_KEY}`, 'Content-Type': 'application/json' },
        body,
      },
    });
    const proto = '{"__proto__":{"polluted":true},"kept":1}';
    expect((await sendCapture(legacy.url, patch(proto))).status).toBe(200);
    const protoReply = await sendCapture(shim.url, patch(proto));
    expect(protoReply.status).toBe(400);
    expect(JSON.parse(protoReply.body)).toEqual({
      error: {
        code: 'invalid_body',
        errors: [{ code: 'invalid_key', message: 'Invalid key in record', path: ['metadata', '__proto__'] }],
      },
    });
    const constructorReply = await sendCapture(shim.url, patch('{"constructor":"x","kept":1}'));
    expect(constructorReply.status).toBe(400);
    expect(JSON.parse(constructorReply.body)).toEqual({
      error: {
        code: 'invalid_body',
        errors: [
          {
            code: 'invalid_type',
            message: 'Invalid input: expected record, received object',
            path: ['metadata'],
          },
        ],
      },
    });
    // The very issue the successor's schema gives that body.
    expect(
      metadataBodyErrors({
        connection_id: 'conn-5',
        provider_config_key: 'unauth',
        metadata: { constructor: 'x' },
      }),
    ).toEqual(JSON.parse(constructorReply.body).error.errors);
    expect(fake.requests.filter((request) => request.method === 'PATCH')).toEqual([]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
