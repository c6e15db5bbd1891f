import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { carriesToken, createAdminApp, reachableFromOtherHosts } from '../src/admin.js';
import { loadConfig, parseConfig } from '../src/config.js';
import { summarizeLedger } from '../src/ledger.js';
import { createLogger } from '../src/logger.js';
import { createMetrics } from '../src/metrics.js';
import { createConfigReloader } from '../src/reload.js';
import { DEFAULTS } from './support/shim.js';

const TOKEN = 'an-admin-token-of-some-length';

function adminApp({
  token = null as string | null,
  draining = false,
  report = async () => summarizeLedger([], { now: 0, quietPeriodDays: 30, consumers: {}, since: {} }),
} = {}) {
  const configs = {
    current: parseConfig([DEFAULTS, { admin: { token }, redisUrl: 'redis://:hunter2@redis.internal:6379' }]),
  };
  return createAdminApp({
    configs,
    logger: createLogger('silent'),
    metrics: createMetrics({ configs }),
    ledger: { report },
    isDraining: () => draining,
  });
}

describe('reachableFromOtherHosts', () => {
  it('tells a loopback listener from one other hosts can reach', () => {
    for (const loopback of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) {
      expect(reachableFromOtherHosts(loopback), loopback).toBe(false);
    }
    for (const open of ['0.0.0.0', '::', '10.0.0.7', '192.168.1.2', '::ffff:10.0.0.7', 'fe80::1']) {
      expect(reachableFromOtherHosts(open), open).toBe(true);
    }
  });
});

describe('carriesToken', () => {
  it('accepts only the exact bearer token, whatever the scheme case', () => {
    expect(carriesToken(`Bearer ${TOKEN}`, TOKEN)).toBe(true);
    expect(carriesToken(`bearer ${TOKEN}`, TOKEN)).toBe(true);
    expect(carriesToken(`Bearer ${TOKEN}x`, TOKEN)).toBe(false);
    expect(carriesToken(`Bearer ${TOKEN.slice(1)}`, TOKEN)).toBe(false);
    expect(carriesToken(`Basic ${TOKEN}`, TOKEN)).toBe(false);
    expect(carriesToken(undefined, TOKEN)).toBe(false);
    expect(carriesToken('Bearer ', TOKEN)).toBe(false);
  });
});

describe('the admin app', () => {
  it('answers the health checks, and readiness fails while draining', async () => {
    await request(adminApp()).get('/healthz').expect(200, { status: 'ok' });
    await request(adminApp()).get('/readyz').expect(200, { status: 'ready' });
    await request(adminApp({ draining: true }))
      .get('/readyz')
      .expect(503, { status: 'draining' });
  });

  it('serves Prometheus text', async () => {
    const response = await request(adminApp()).get('/metrics').expect(200);
    expect(response.headers['content-type']).toMatch(/^text\/plain/);
    expect(response.text).toContain('# TYPE nango_shim_deprecated_requests_total counter');
    expect(response.text).toContain('nango_shim_ledger_dropped_total 0');
  });

  it('shows the active configuration and its version without secrets', async () => {
    const app = adminApp({ token: TOKEN });
    const response = await request(app)
      .get('/admin/config')
      .set('authorization', `Bearer ${TOKEN}`)
      .expect(200);
    expect(response.body.version).toMatch(/^[0-9a-f]{12}$/);
    expect(response.body.pendingRestart).toEqual([]);
    expect(response.body.config.admin.token).toBe('[set]');
    expect(response.body.config.redisUrl).toBe('[set]');
    expect(response.text).not.toContain(TOKEN);
    expect(response.text).not.toContain('hunter2');
  });

  it('shows what is in effect after a reload, and names the restart-only changes still pending', async () => {
    const configs = { current: parseConfig([DEFAULTS, { admin: { token: TOKEN } }]) };
    const logger = createLogger('silent');
    const app = createAdminApp({
      configs,
      logger,
      metrics: createMetrics({ configs }),
      ledger: {
        report: async () => summarizeLedger([], { now: 0, quietPeriodDays: 30, consumers: {}, since: {} }),
      },
      isDraining: () => false,
    });
    const newToken = 'a-new-admin-token-not-yet-in-effect';
    const reloader = createConfigReloader({
      configs,
      logger,
      load: () =>
        parseConfig([
          DEFAULTS,
          {
            admin: { token: newToken },
            upstream: { timeoutMs: 1234 },
            server: { port: 9999, bodyLimitBytes: 10 },
            routes: { 'connection-metadata': { stage: 'gone' } },
          },
        ]),
    });
    expect(reloader.reload('test')).toBe(true);

    // The admin listener still wants the token it started with: the new one applies after a restart.
    await request(app).get('/admin/config').set('authorization', `Bearer ${newToken}`).expect(401);
    const response = await request(app)
      .get('/admin/config')
      .set('authorization', `Bearer ${TOKEN}`)
      .expect(200);
    expect(response.body.config.upstream.timeoutMs).toBe(DEFAULTS.upstream.timeoutMs);
    expect(response.body.config.server.port).toBe(DEFAULTS.server.port);
    expect(response.body.config.server.bodyLimitBytes).toBe(10);
    expect(response.body.config.routes['connection-metadata'].stage).toBe('gone');
    expect(response.body.pendingRestart).toEqual(['upstream.timeoutMs', 'server.port', 'admin.token']);
    expect(response.body.version).toBe(configs.current.version);
    expect(response.text).not.toContain(newToken);
  });

  it('names a new admin token alone as pending after a reload, though the version leaves it out', async () => {
    const configs = { current: parseConfig([DEFAULTS, { admin: { token: TOKEN } }]) };
    const lines: Array<Record<string, unknown>> = [];
    const newToken = 'a-new-admin-token-not-yet-in-effect';
    const reloader = createConfigReloader({
      configs,
      logger: createLogger('debug', { write: (line: string) => lines.push(JSON.parse(line)) } as never),
      load: () => parseConfig([DEFAULTS, { admin: { token: newToken } }]),
    });
    const before = configs.current.version;
    expect(reloader.reload('test')).toBe(true);
    expect(configs.current.pendingRestart).toEqual(['admin.token']);
    expect(configs.current.version).toBe(before);
    expect(
      lines.find((line) => line.msg === 'config sections changed that apply only after a restart'),
    ).toMatchObject({ keys: ['admin.token'] });
    expect(JSON.stringify(lines)).not.toContain(newToken);
  });

  it('names upstream.caFile as pending when a reload finds other certificates at the same path', () => {
    const caFile = join(mkdtempSync(join(tmpdir(), 'nango-shim-ca-')), 'ca.pem');
    const [first, second] = rootCertificates as [string, string];
    writeFileSync(caFile, first);
    const load = () => loadConfig({ SHIM_UPSTREAM_CA_FILE: caFile });
    const started = load();
    const configs = { current: started };
    const lines: Array<Record<string, unknown>> = [];
    const reloader = createConfigReloader({
      configs,
      load,
      logger: createLogger('debug', { write: (line: string) => lines.push(JSON.parse(line)) } as never),
      upstreamCa: started.upstreamCa,
    });

    // A rotated bundle written over the same path: no key of the configuration changed.
    writeFileSync(caFile, second);
    expect(reloader.reload('SIGHUP')).toBe(true);
    expect(configs.current.pendingRestart).toEqual(['upstream.caFile']);
    expect(configs.current.version).toBe(started.version);
    expect(
      lines.find((line) => line.msg === 'config sections changed that apply only after a restart'),
    ).toMatchObject({ keys: ['upstream.caFile'] });

    // The certificates the pools trust, back again: nothing is pending.
    writeFileSync(caFile, first);
    expect(reloader.reload('SIGHUP')).toBe(true);
    expect(configs.current.pendingRestart).toEqual([]);
  });

  it('requires the token on every path but the health checks when one is set', async () => {
    const app = adminApp({ token: TOKEN });
    for (const path of ['/metrics', '/admin/deprecations', '/admin/config', '/nothing-here']) {
      const refused = await request(app).get(path).set('authorization', 'Bearer wrong-token').expect(401);
      expect(refused.body).toEqual({
        error: { code: 'unauthorized', message: 'A valid admin token is required.' },
      });
      expect(refused.headers['www-authenticate']).toBe('Bearer realm="nango-shim-admin"');
      await request(app).get(path).expect(401);
    }
    await request(app).get('/healthz').expect(200);
    await request(app).get('/readyz').expect(200);
    await request(app).get('/metrics').set('authorization', `Bearer ${TOKEN}`).expect(200);
  });

  it('serves the ledger, and 503 when it cannot be read', async () => {
    const response = await request(adminApp()).get('/admin/deprecations').expect(200);
    expect(response.body.routes).toHaveLength(5);
    const broken = adminApp({
      report: async () => {
        throw new Error('The client is offline');
      },
    });
    const refused = await request(broken).get('/admin/deprecations').expect(503);
    expect(refused.body.error.code).toBe('ledger_unavailable');
  });

  it('answers another method on an admin path with 405 naming GET and HEAD, in Nango shape', async () => {
    const app = adminApp({ token: TOKEN });
    const auth = `Bearer ${TOKEN}`;
    for (const [method, path] of [
      ['post', '/admin/config'],
      ['put', '/admin/deprecations'],
      ['delete', '/metrics'],
      ['options', '/admin/config'],
      ['post', '/healthz'],
    ] as const) {
      const refused = await request(app)[method](path).set('authorization', auth).expect(405);
      expect(refused.headers.allow, `${method} ${path}`).toBe('GET, HEAD');
      expect(refused.body).toEqual({
        error: {
          code: 'method_not_allowed',
          message: `${path} answers GET and HEAD only, not ${method.toUpperCase()}.`,
        },
      });
    }
    // The health checks need no token whatever the method; the other paths still ask for it first.
    await request(app).post('/readyz').expect(405);
    await request(app).post('/admin/config').expect(401);
    await request(app).head('/admin/config').set('authorization', auth).expect(200);
    await request(app).post('/admin/reload').set('authorization', auth).expect(404);
  });

  it('forbids caching any admin answer, refusals included', async () => {
    const open = adminApp();
    const guarded = adminApp({ token: TOKEN });
    const answers = [
      await request(open).get('/healthz'),
      await request(adminApp({ draining: true })).get('/readyz'),
      await request(open).get('/metrics'),
      await request(open).get('/admin/deprecations'),
      await request(open).get('/admin/config'),
      await request(open).post('/admin/config'),
      await request(open).get('/admin/nothing-here'),
      await request(guarded).get('/admin/config'),
      await request(guarded).get('/admin/config').set('authorization', `Bearer ${TOKEN}`),
    ];
    expect(answers.map((answer) => [answer.status, answer.headers['cache-control']])).toEqual([
      [200, 'no-store'],
      [503, 'no-store'],
      [200, 'no-store'],
      [200, 'no-store'],
      [200, 'no-store'],
      [405, 'no-store'],
      [404, 'no-store'],
      [401, 'no-store'],
      [200, 'no-store'],
    ]);
  });

  it('answers an unknown path with a 404 in Nango shape', async () => {
    const response = await request(adminApp()).get('/admin/nothing').expect(404);
    expect(response.body.error.code).toBe('not_found');
  });
});
