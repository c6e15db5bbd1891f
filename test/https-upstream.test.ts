import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { createShimServer } from '../src/server.js';
import { createTestCertificates, hasOpenssl, type TestCertificates } from './support/certificates.js';
import { type ChildShim, startChildShim } from './support/child-shim.js';
import { OPENAPI, type RunningShim, startShim } from './support/shim.js';
import {
  listen,
  type RecordingUpstream,
  readAll,
  request,
  startUpstream,
  within,
} from './support/upstream.js';

/**
 * An https:// upstream: its certificate is verified, against the CA named by `upstream.caFile`
 * (SHIM_UPSTREAM_CA_FILE) when set and the default trust store otherwise; a certificate that does not
 * verify is a 502, never an unverified success.
 */

const OPENSSL = hasOpenssl();
const TITLE = OPENSSL
  ? 'https upstream'
  : 'https upstream (SKIPPED: no `openssl` binary on PATH to make the test certificates)';

if (!OPENSSL) console.warn(`${TITLE}: install openssl to run them`);

let trusted: TestCertificates | undefined;
let wrongName: TestCertificates | undefined;
let upstream: RecordingUpstream | undefined;
let shim: RunningShim | undefined;
let child: ChildShim | undefined;

beforeAll(() => {
  if (!OPENSSL) return;
  // Read-only fixtures shared by the tests: a CA with a certificate for 127.0.0.1, and one for another name.
  trusted = createTestCertificates();
  wrongName = createTestCertificates('DNS:nango.example.invalid');
});

afterAll(() => {
  trusted?.remove();
  wrongName?.remove();
});

afterEach(async () => {
  await shim?.close();
  await child?.stop();
  await upstream?.close();
  shim = undefined;
  child = undefined;
  upstream = undefined;
});

async function httpsUpstream(certificates: TestCertificates) {
  upstream = await startUpstream(
    async (req, res) => {
      const body = await readAll(req);
      res.writeHead(200, { 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] });
      res.end(`secure ${req.method} ${req.url} ${body.toString()}`);
    },
    { tls: { key: certificates.key, cert: certificates.cert } },
  );
  return upstream;
}

const LEGACY_PATCH = {
  method: 'PATCH',
  path: '/connection/metadata',
  headers: {
    authorization: 'Bearer 3f8a2c1e-5b7d-4e9f-a0c2-6d1b8e4f7a93',
    'content-type': 'application/json',
  },
  body: JSON.stringify({ connection_id: 'conn-1', provider_config_key: 'unauth', metadata: { plan: 'pro' } }),
};

describe.skipIf(!OPENSSL)(TITLE, () => {
  it('passes through to an upstream whose certificate the CA in upstream.caFile issued', async () => {
    const certificates = trusted as TestCertificates;
    const secure = await httpsUpstream(certificates);
    shim = await startShim(secure.url, { upstream: { caFile: certificates.caFile } });

    const res = await request(shim.url, {
      method: 'PUT',
      path: '/connection/metadata?x=%20',
      body: 'payload',
    });

    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('secure PUT /connection/metadata?x=%20 payload');
    expect(res.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(secure.requests).toHaveLength(1);
    expect(secure.requests[0]?.headers['x-forwarded-proto']).toBe('http');
  });

  it('keeps pooled TLS connections to the upstream', async () => {
    const certificates = trusted as TestCertificates;
    const secure = await httpsUpstream(certificates);
    shim = await startShim(secure.url, { upstream: { caFile: certificates.caFile } });

    for (let i = 0; i < 10; i++)
      expect((await request(shim.url, { path: `/providers?n=${i}` })).status).toBe(200);

    expect(secure.requests).toHaveLength(10);
    expect(new Set(secure.requests.map((seen) => seen.remotePort)).size).toBeLessThanOrEqual(2);
  });

  it('sends a GET that lost its pooled TLS connection again on a new, verified one', async () => {
    const certificates = trusted as TestCertificates;
    const served = new WeakSet<object>();
    // The second request of a connection finds it closed (the keep-alive race, test/keep-alive-race.test.ts).
    upstream = await startUpstream(
      (req, res) => {
        if (served.has(req.socket)) return void req.socket.destroy();
        served.add(req.socket);
        res.end(`secure ${req.method} ${req.url}`);
      },
      { tls: { key: certificates.key, cert: certificates.cert } },
    );
    shim = await startShim(upstream.url, { upstream: { caFile: certificates.caFile } });
    expect((await request(shim.url, { path: '/providers' })).status).toBe(200);

    const res = await within(5_000, 'retried request', request(shim.url, { path: '/providers' }));

    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('secure GET /providers');
    expect(upstream.requests).toHaveLength(3);
    expect(new Set(upstream.requests.map((seen) => seen.remotePort)).size).toBe(2);
  });

  it('answers 502 and never reaches the upstream when the certificate is not trusted by default', async () => {
    const secure = await httpsUpstream(trusted as TestCertificates);
    shim = await startShim(secure.url, { upstream: { caFile: null } });

    const res = await request(shim.url, { path: '/providers', headers: { authorization: 'Bearer k' } });

    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toEqual({
      // The handshake failed before any byte of the request left: unreachable, not "may have been applied".
      error: { code: 'upstream_unreachable', message: expect.any(String) },
    });
    expect(secure.requests).toHaveLength(0);
    expect(shim.logs()).toContainEqual(
      expect.objectContaining({
        msg: 'upstream request failed',
        reason: expect.stringMatching(/certificate/i),
      }),
    );
  });

  it('answers 502 when a trusted CA issued the certificate for another name', async () => {
    const certificates = wrongName as TestCertificates;
    const secure = await httpsUpstream(certificates);
    shim = await startShim(secure.url, { upstream: { caFile: certificates.caFile } });

    const res = await request(shim.url, { path: '/providers' });

    expect(res.status).toBe(502);
    expect(secure.requests).toHaveLength(0);
    expect(shim.logs()).toContainEqual(
      expect.objectContaining({ msg: 'upstream request failed', reason: expect.stringMatching(/altnames/i) }),
    );
  });

  it('translates legacy calls over verified, pooled TLS connections of their own', async () => {
    const certificates = trusted as TestCertificates;
    const secure = await httpsUpstream(certificates);
    shim = await startShim(secure.url, { upstream: { caFile: certificates.caFile } });

    for (let i = 0; i < 3; i++) {
      const res = await request(shim.url, LEGACY_PATCH);
      expect(res.status).toBe(200);
      // The upstream answered something else than the echo: the legacy answer is rebuilt from the request.
      expect(res.body.toString()).toBe(LEGACY_PATCH.body);
    }
    expect(secure.requests.map((seen) => `${seen.method} ${seen.url}`)).toEqual(
      Array(3).fill('PATCH /connections/metadata'),
    );
    expect(new Set(secure.requests.map((seen) => seen.remotePort)).size).toBe(1);
  });

  it('answers a translated call 502 upstream_unreachable, and sends nothing, when the certificate is not trusted', async () => {
    const secure = await httpsUpstream(trusted as TestCertificates);
    shim = await startShim(secure.url, { upstream: { caFile: null } });

    const res = await request(shim.url, LEGACY_PATCH);

    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_unreachable', message: expect.any(String) },
    });
    expect(secure.requests).toHaveLength(0);
  });

  it('trusts the certificates loadConfig checked, read once: a file gone before the pools are built changes nothing', async () => {
    const certificates = trusted as TestCertificates;
    const secure = await httpsUpstream(certificates);
    const dir = mkdtempSync(join(tmpdir(), 'nango-shim-ca-'));
    const caFile = join(dir, 'ca.crt');
    copyFileSync(certificates.caFile, caFile);
    const active = loadConfig({ SHIM_UPSTREAM_URL: secure.url, SHIM_UPSTREAM_CA_FILE: caFile });
    // A ConfigMap swap or a certificate rotation between the check and the start of the upstream's pools: read
    // a second time there, the file's absence stopped start-up with a bare ENOENT after the check had passed.
    rmSync(dir, { recursive: true });
    const logger = createLogger('silent');
    const app = createApp({
      configs: { current: active },
      logger,
      openapi: OPENAPI,
      usage: [],
      upstreamCa: active.upstreamCa,
    });
    const server = createShimServer(app, active.config, logger).server;
    const port = await listen(server);
    try {
      const res = await request(`http://127.0.0.1:${port}`, { path: '/providers' });

      expect(res.status).toBe(200);
      expect(secure.requests).toHaveLength(1);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      app.close();
    }
  });

  it('takes the CA from SHIM_UPSTREAM_CA_FILE in the real entry point', async () => {
    const certificates = trusted as TestCertificates;
    const secure = await httpsUpstream(certificates);
    child = await startChildShim({
      SHIM_UPSTREAM_URL: secure.url,
      SHIM_UPSTREAM_CA_FILE: certificates.caFile,
    });

    const res = await within(5_000, 'answer', request(child.url, { path: '/providers' }));

    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('secure GET /providers ');
    expect(secure.requests).toHaveLength(1);
  });
});

describe('a TLS handshake that fails before any byte of a request left', () => {
  const LEGACY_GET = {
    path: '/connection/conn-1?provider_config_key=unauth',
    headers: { authorization: 'Bearer 3f8a2c1e-5b7d-4e9f-a0c2-6d1b8e4f7a93' },
  };
  let dropper: net.Server | undefined;

  afterEach(async () => {
    await new Promise<void>((resolve) => (dropper ? dropper.close(() => resolve()) : resolve()));
    dropper = undefined;
  });

  /** An https URL on a port that accepts TCP and then drops the connection during the handshake. */
  async function droppingHandshakes(): Promise<string> {
    dropper = net.createServer((socket) => socket.destroy());
    return `https://127.0.0.1:${await listen(dropper)}`;
  }

  /** An https URL on a plain-HTTP port: the handshake fails on the answer that is not TLS. */
  async function plainHttpPort(): Promise<string> {
    upstream = await startUpstream((_req, res) => res.end('plain'));
    return upstream.url.replace('http:', 'https:');
  }

  it.each([
    ['a pass-through call', 'a plain-HTTP port behind an https URL', plainHttpPort, { path: '/providers' }],
    ['a streamed translation', 'a plain-HTTP port behind an https URL', plainHttpPort, LEGACY_GET],
    ['a pass-through call', 'a dropped handshake', droppingHandshakes, { path: '/providers' }],
    ['a streamed translation', 'a dropped handshake', droppingHandshakes, LEGACY_GET],
  ])('answers %s 502 upstream_unreachable on %s', async (_call, _fault, upstreamUrl, call) => {
    shim = await startShim(await upstreamUrl());

    const res = await within(5_000, 'answer', request(shim.url, call));

    // Not upstream_response_lost ("may have been applied"): the request was never sent.
    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toEqual({
      error: { code: 'upstream_unreachable', message: expect.any(String) },
    });
    expect(upstream?.requests ?? []).toHaveLength(0);
    expect(shim.logs()).toContainEqual(
      expect.objectContaining({ msg: 'upstream request failed', failure: 'unreachable' }),
    );
  });
});
