import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { fingerprintKey } from '../src/api-key.js';
import { type ChildShim, startChildShim, writeConfigFile } from './support/child-shim.js';
import { type RecordingUpstream, readAll, request, startUpstream } from './support/upstream.js';

const TIMEOUT_MS = 300;

/** Every file under `dir`, with its content. */
function filesUnder(dir: string): Array<{ path: string; text: string }> {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((name) => join(dir, name))
    .filter((path) => statSync(path).isFile())
    .map((path) => ({ path, text: readFileSync(path, 'latin1') }));
}

/**
 * An upstream that accepts every key, so each distinctive key can reach every outcome: the successor's
 * echo, a reset (502), silence (504), or 200 for anything else.
 */
function startKeyBlindUpstream(): Promise<RecordingUpstream> {
  return startUpstream(async (req, res) => {
    const body = await readAll(req);
    const fault = req.url?.includes('reset') || body.includes('"reset"') ? 'reset' : undefined;
    const silent = req.url?.includes('slow') || body.includes('"slow"');
    if (fault) return void req.socket.destroy();
    if (silent) return;
    const status = req.method === 'POST' ? 201 : 200;
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(req.url === '/connections/metadata' ? body : '{"ok":true}');
  });
}

interface Scenario {
  name: string;
  key: string;
  method: string;
  path: string;
  headers?: OutgoingHttpHeaders;
  body?: string;
  /** How the key is sent: `Bearer <key>` (default) or bare, which Nango accepts too. */
  bare?: boolean;
  expected: number;
}

const metadata = (connectionId: string) =>
  JSON.stringify({ connection_id: connectionId, provider_config_key: 'unauth', metadata: { a: 1 } });

/** One distinctive key per path a request can take through the shim. */
function scenarios(): Scenario[] {
  const uuid = () => randomUUID();
  const token = () => `nango_sk_${randomBytes(20).toString('hex')}`;
  const json = { 'content-type': 'application/json' };
  return [
    { name: 'pass-through success', key: uuid(), method: 'GET', path: '/connections', expected: 200 },
    { name: 'pass-through, not a UUID', key: token(), method: 'GET', path: '/connections', expected: 200 },
    {
      name: 'translated success',
      key: uuid(),
      method: 'PATCH',
      path: '/connection/metadata',
      headers: json,
      body: metadata('conn-1'),
      expected: 200,
    },
    {
      name: 'translated success, bare key',
      key: uuid(),
      bare: true,
      method: 'POST',
      path: '/connection/metadata',
      headers: json,
      body: metadata('conn-1'),
      expected: 201,
    },
    {
      name: 'path-style translated success',
      key: uuid(),
      method: 'PATCH',
      path: '/connection/conn-1/metadata?provider_config_key=unauth',
      headers: json,
      body: '{"a":1}',
      expected: 200,
    },
    {
      name: 'translated get',
      key: uuid(),
      method: 'GET',
      path: '/connection/conn-1?provider_config_key=unauth',
      expected: 200,
    },
    {
      name: 'validate stage',
      key: uuid(),
      method: 'GET',
      path: '/connection?connectionId=conn-1',
      expected: 200,
    },
    {
      name: 'local 400',
      key: uuid(),
      method: 'PATCH',
      path: '/connection/metadata',
      headers: json,
      body: '{"connection_id":"conn-1"}',
      expected: 400,
    },
    {
      name: 'local 400 invalid_json',
      key: uuid(),
      method: 'PATCH',
      path: '/connection/metadata',
      headers: json,
      body: '{"connection_id":',
      expected: 400,
    },
    {
      name: 'local 401',
      key: token(),
      method: 'PATCH',
      path: '/connection/metadata',
      headers: json,
      body: '{}',
      expected: 401,
    },
    {
      name: 'local 415',
      key: uuid(),
      method: 'PATCH',
      path: '/connection/metadata',
      headers: { 'content-type': 'text/plain' },
      body: metadata('conn-1'),
      expected: 415,
    },
    {
      name: 'local 413',
      key: uuid(),
      method: 'PATCH',
      path: '/connection/metadata',
      headers: json,
      body: metadata('x'.repeat(2048)),
      expected: 413,
    },
    {
      name: '410 stage gone',
      key: uuid(),
      method: 'DELETE',
      path: '/connection/conn-1?provider_config_key=unauth',
      expected: 410,
    },
    {
      name: 'translated 502',
      key: uuid(),
      method: 'PATCH',
      path: '/connection/metadata',
      headers: json,
      body: metadata('reset'),
      expected: 502,
    },
    {
      name: 'translated 504',
      key: uuid(),
      method: 'PATCH',
      path: '/connection/metadata',
      headers: json,
      body: metadata('slow'),
      expected: 504,
    },
    { name: 'pass-through 502', key: uuid(), method: 'GET', path: '/reset', expected: 502 },
    { name: 'pass-through 504', key: token(), method: 'GET', path: '/slow', expected: 504 },
  ];
}

let child: ChildShim | undefined;
let upstream: RecordingUpstream | undefined;
let dataDir: string | undefined;

afterEach(async () => {
  await child?.stop();
  await upstream?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  child = undefined;
  upstream = undefined;
  dataDir = undefined;
});

it('never writes a key anywhere, on any path: only its fingerprint', async () => {
  upstream = await startKeyBlindUpstream();
  dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-secrets-'));
  const adminToken = randomBytes(24).toString('hex');
  const configFile = writeConfigFile({
    upstream: { timeoutMs: TIMEOUT_MS },
    server: { bodyLimitBytes: 1024 },
    log: { level: 'debug' },
    routes: { 'connection-delete': { stage: 'gone' }, 'connection-list': { stage: 'validate' } },
  });
  child = await startChildShim({
    SHIM_CONFIG: configFile,
    SHIM_UPSTREAM_URL: upstream.url,
    SHIM_DATA_DIR: dataDir,
    SHIM_LOG_LEVEL: 'debug',
    SHIM_ADMIN_TOKEN: adminToken,
  });
  let stderr = '';
  child.child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });

  const cases = scenarios();
  for (const scenario of cases) {
    const authorization = scenario.bare ? scenario.key : `Bearer ${scenario.key}`;
    const response = await request(child.url, {
      method: scenario.method,
      path: scenario.path,
      headers: { ...scenario.headers, authorization },
      ...(scenario.body === undefined ? {} : { body: scenario.body }),
    });
    expect({ name: scenario.name, status: response.status }).toEqual({
      name: scenario.name,
      status: scenario.expected,
    });
  }

  // What the admin listener shows is written by the shim too.
  const adminPort = child.lines.find((line) => line.msg === 'admin listening')?.port;
  const admin = await Promise.all(
    ['/metrics', '/admin/deprecations', '/admin/config'].map(async (path) => {
      const response = await request(`http://127.0.0.1:${adminPort}`, {
        path,
        headers: { authorization: `Bearer ${adminToken}` },
      });
      expect(response.status).toBe(200);
      return response.body.toString('utf8');
    }),
  );
  // SIGTERM flushes the ledger to the data directory.
  expect(await child.stop()).toBe(0);

  const written = [
    { path: 'stdout', text: child.lines.map((line) => JSON.stringify(line)).join('\n') },
    { path: 'stderr', text: stderr },
    ...admin.map((text, index) => ({ path: `admin ${index}`, text })),
    ...filesUnder(dataDir),
  ];
  expect(filesUnder(dataDir).length).toBeGreaterThan(0);
  const leaks = [];
  for (const secret of [...cases.map((scenario) => scenario.key), adminToken]) {
    for (const { path, text } of written) {
      if (text.includes(secret)) leaks.push({ secret, path });
    }
  }
  expect(leaks).toEqual([]);

  // The scan looked where keys would be: every deprecated call is recorded under its key's fingerprint.
  const logged = written[0]?.text ?? '';
  for (const scenario of cases.filter(
    (each) => each.path.startsWith('/connection/') || each.path.startsWith('/connection?'),
  )) {
    expect(logged, scenario.name).toContain(fingerprintKey(scenario.key));
  }
}, 30_000);
