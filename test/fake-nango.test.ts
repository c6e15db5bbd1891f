import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import {
  CAPTURE_FILES,
  type CaptureReply,
  loadCaptures,
  sendCapture,
  stripVolatile,
} from './support/captures.js';
import {
  DEV_KEY,
  type FakeNango,
  type FakeNangoOptions,
  PROD_KEY,
  startFakeNango,
} from './support/fake-nango.js';
import { replayAndCompare, replayQuietly } from './support/replay.js';

/** rate-limit.json needs 200 earlier requests in the same minute: it has its own test below. */
const REPLAYED_FILES = CAPTURE_FILES.filter((file) => file !== 'rate-limit.json');

let fake: FakeNango | undefined;

afterEach(async () => {
  await fake?.close();
  fake = undefined;
});

async function startFake(options: FakeNangoOptions): Promise<FakeNango> {
  fake = await startFakeNango(options);
  return fake;
}

function request(
  url: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<CaptureReply> {
  return sendCapture(url, {
    name: `${method} ${path}`,
    request: { method, path, headers, body: body ?? null },
  });
}

const DEV_AUTH = { Authorization: `Bearer ${DEV_KEY}` };
const JSON_DEV_AUTH = { ...DEV_AUTH, 'Content-Type': 'application/json' };

describe('fake Nango replays the real captures', () => {
  for (const [index, file] of REPLAYED_FILES.entries()) {
    it(`answers ${file} as Nango 0.71.4 did`, async () => {
      const { url } = await startFake({ legacyRoutes: true, seed: false });
      for (const earlier of REPLAYED_FILES.slice(0, index)) await replayQuietly(url, earlier);

      const { sent, mismatches } = await replayAndCompare(url, file);

      expect(sent).toBeGreaterThan(0);
      expect(mismatches).toEqual([]);
    });
  }

  it('answers rate-limit.json once the limit is used up', async () => {
    const { url } = await startFake({ legacyRoutes: true, rateLimit: 200 });
    for (let i = 0; i < 200; i += 1) await request(url, 'GET', '/connections', DEV_AUTH);

    const { sent, mismatches } = await replayAndCompare(url, 'rate-limit.json');

    expect(sent).toBe(3);
    expect(mismatches).toEqual([]);
  });
});

describe('fake Nango seed', () => {
  it('starts with the state setup.json built, with its ids and timestamps', async () => {
    const seeded = await startFakeNango({ legacyRoutes: true });
    try {
      const built = await startFake({ legacyRoutes: true, seed: false });
      await replayQuietly(built.url, 'setup.json');

      const seededList = await request(seeded.url, 'GET', '/connections', DEV_AUTH);
      const builtList = await request(built.url, 'GET', '/connections', DEV_AUTH);

      expect(seededList.status).toBe(200);
      expect(stripVolatile(JSON.parse(seededList.body))).toEqual(stripVolatile(JSON.parse(builtList.body)));
      const [capturedList] = loadCaptures('connection-get.json').filter(
        (e) => e.name === 'GET /connections (new list)',
      );
      expect(createdTimes(JSON.parse(seededList.body))).toEqual(
        createdTimes(JSON.parse(capturedList?.response?.body ?? 'null')),
      );
    } finally {
      await seeded.close();
    }
  });

  it('answers a single connection with the captured timestamps and field order', async () => {
    const { url } = await startFake({});

    const reply = await request(url, 'GET', '/connections/conn-1?provider_config_key=unauth', DEV_AUTH);

    expect(reply.status).toBe(200);
    expect(reply.body).toMatch(
      /^\{"id":1,"connection_id":"conn-1","provider_config_key":"unauth","provider":"unauthenticated","errors":\[\],"end_user":null,"tags":\{\},"metadata":\{"name":"conn-1","seeded":true\},"connection_config":\{\},"webhook_url_override":null,"created_at":"2026-11-25T23:47:41\.523\+00:00","updated_at":"2026-11-25T23:47:41\.523\+00:00","last_fetched_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00","credentials":\{\}\}$/,
    );
  });

  it('hides the dev connections from the prod key', async () => {
    const { url } = await startFake({});

    const list = await request(url, 'GET', '/connections', { Authorization: `Bearer ${PROD_KEY}` });

    expect(list.status).toBe(200);
    expect(JSON.parse(list.body)).toEqual({ connections: [] });
  });
});

function createdTimes(list: unknown): unknown[] {
  if (
    typeof list !== 'object' ||
    list === null ||
    !('connections' in list) ||
    !Array.isArray(list.connections)
  ) {
    throw new Error(`not a connection list: ${JSON.stringify(list)}`);
  }
  return list.connections.map((connection: unknown) =>
    typeof connection === 'object' && connection !== null && 'created' in connection
      ? connection.created
      : undefined,
  );
}

describe('fake Nango without legacy routes', () => {
  it("answers PATCH /connection/metadata with Express's HTML 404 and records the request", async () => {
    const nango = await startFake({});
    const body = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"a":1}}';

    const reply = await request(nango.url, 'PATCH', '/connection/metadata', JSON_DEV_AUTH, body);

    expect(reply.status).toBe(404);
    expect(reply.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(reply.body).toContain('<pre>Cannot PATCH /connection/metadata</pre>');
    expect(nango.requests).toHaveLength(1);
    expect(nango.requests[0]).toMatchObject({ method: 'PATCH', url: '/connection/metadata', body });
  });

  it.each([
    ['GET', '/connection'],
    ['GET', '/connection/conn-1?provider_config_key=unauth'],
    ['DELETE', '/connection/conn-1?provider_config_key=unauth'],
    ['POST', '/connection/metadata'],
    ['PATCH', '/connection/conn-1/metadata?provider_config_key=unauth'],
  ])('answers %s %s with 404', async (method, path) => {
    const { url } = await startFake({});

    const reply = await request(url, method, path, JSON_DEV_AUTH, method === 'GET' ? undefined : '{}');

    expect(reply.status).toBe(404);
    expect(reply.body).toContain(`<pre>Cannot ${method} ${path.split('?')[0]}</pre>`);
  });

  it('still serves the /connections routes', async () => {
    const { url } = await startFake({});
    const body = '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"a":1}}';

    const reply = await request(url, 'PATCH', '/connections/metadata', JSON_DEV_AUTH, body);

    expect(reply.status).toBe(200);
    expect(reply.body).toBe(body);
  });
});

describe('fake Nango behaviour beyond the captures', () => {
  it('records every request in order with its raw body, even when it is not JSON', async () => {
    const nango = await startFake({ legacyRoutes: true });
    const spaced = '{ "connection_id" : "conn-1",\n "provider_config_key":"unauth", "metadata":{} }';

    await request(nango.url, 'PATCH', '/connections/metadata?', JSON_DEV_AUTH, spaced);
    await request(
      nango.url,
      'POST',
      '/connections/metadata',
      { ...DEV_AUTH, 'Content-Type': 'text/plain' },
      'hi',
    );
    await request(nango.url, 'PATCH', '/connections/metadata', JSON_DEV_AUTH, '{"broken":');
    await request(nango.url, 'GET', '/health');

    expect(nango.requests.map(({ method, url, body }) => ({ method, url, body }))).toEqual([
      { method: 'PATCH', url: '/connections/metadata?', body: spaced },
      { method: 'POST', url: '/connections/metadata', body: 'hi' },
      { method: 'PATCH', url: '/connections/metadata', body: '{"broken":' },
      { method: 'GET', url: '/health', body: '' },
    ]);
    expect(nango.requests[1]?.headers['content-type']).toBe('text/plain');
  });

  it('reads metadata back in JSONB key order, even for integer-like keys', async () => {
    const { url } = await startFake({});
    const body =
      '{"connection_id":"conn-1","provider_config_key":"unauth","metadata":{"b":1,"10":{"zz":1,"y":2},"a":3}}';

    await request(url, 'PATCH', '/connections/metadata', JSON_DEV_AUTH, body);
    const reply = await request(url, 'GET', '/connections/conn-1?provider_config_key=unauth', DEV_AUTH);

    expect(reply.body).toContain(
      '"metadata":{"a":3,"b":1,"10":{"y":2,"zz":1},"name":"conn-1","seeded":true}',
    );
  });

  it('deletes a connection once, like Nango', async () => {
    const { url } = await startFake({});
    const path = '/connections/conn-2?provider_config_key=unauth';

    const deleted = await request(url, 'DELETE', path, DEV_AUTH);
    const lookedUp = await request(url, 'GET', path, DEV_AUTH);
    const deletedAgain = await request(url, 'DELETE', path, DEV_AUTH);

    expect([deleted.status, JSON.parse(deleted.body)]).toEqual([200, { success: true }]);
    expect(lookedUp.status).toBe(404);
    expect([deletedAgain.status, JSON.parse(deletedAgain.body)]).toEqual([
      400,
      { error: { code: 'unknown_connection' } },
    ]);
  });

  it('counts the rate limit down without enforcing it by default', async () => {
    const { url } = await startFake({});

    const first = await request(url, 'GET', '/connections', DEV_AUTH);
    const second = await request(url, 'GET', '/connections', DEV_AUTH);

    expect([first.headers['x-ratelimit-limit'], first.headers['x-ratelimit-remaining']]).toEqual([
      '200',
      '199',
    ]);
    expect(second.headers['x-ratelimit-remaining']).toBe('198');
  });

  it('closes while a client keeps its connection alive', async () => {
    const nango = await startFakeNango({});
    const agent = new http.Agent({ keepAlive: true });
    try {
      await new Promise<void>((resolve, reject) => {
        http
          .get(`${nango.url}/health`, { agent }, (response) => response.resume().on('end', resolve))
          .on('error', reject);
      });

      await expect(nango.close()).resolves.toBeUndefined();
      await expect(nango.close()).resolves.toBeUndefined();
    } finally {
      agent.destroy();
    }
  });
});
