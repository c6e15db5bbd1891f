import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fingerprintKey } from '../src/api-key.js';
import { readLedgerFile } from '../src/ledger-file-store.js';
import { startChildShim } from './support/child-shim.js';
import { closedAfterEach } from './support/cleanup.js';
import { patchLegacyMetadata, startEchoUpstream } from './support/echo-upstream.js';

const KEY = 'feedface-0000-4000-8000-5ec2e7feed00';
const TOKEN = 'admin-token-for-the-entry-point-test';

const track = closedAfterEach();

describe('the entry point', () => {
  it('serves the admin side on its own port and writes the ledger on SIGTERM', async () => {
    const upstream = track(await startEchoUpstream());
    const dataDir = join(mkdtempSync(join(tmpdir(), 'nango-shim-main-')), 'data');
    // The default flush interval (5 s) is longer than this test: only the shutdown can write the file.
    const running = track(
      await startChildShim({
        SHIM_UPSTREAM_URL: upstream.url,
        SHIM_DATA_DIR: dataDir,
        SHIM_ADMIN_TOKEN: TOKEN,
      }),
    );
    await expect.poll(() => running.lines.find((line) => line.msg === 'admin listening')).toBeDefined();
    const adminLine = running.lines.find((line) => line.msg === 'admin listening') as Record<string, unknown>;
    expect(adminLine).toMatchObject({ host: '127.0.0.1', tokenRequired: true });
    const admin = `http://127.0.0.1:${adminLine.port as number}`;

    expect((await fetch(`${admin}/healthz`)).status).toBe(200);
    expect((await fetch(`${admin}/readyz`)).status).toBe(200);
    expect((await fetch(`${admin}/metrics`)).status).toBe(401);
    // The public port proxies admin paths like any other path.
    await fetch(`${running.url}/metrics`);
    expect(upstream.requests.map((seen) => seen.url)).toEqual(['/metrics']);

    expect((await patchLegacyMetadata(running.url, KEY, 'shutdown-test/1')).status).toBe(200);
    const metrics = async () =>
      (await fetch(`${admin}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    await expect.poll(metrics).toContain(`consumer="${fingerprintKey(KEY)}"`);
    expect(readLedgerFile(dataDir).entries).toEqual([]);

    expect(await running.stop()).toBe(0);
    expect(readLedgerFile(dataDir).entries).toEqual([
      expect.objectContaining({
        route: 'connection-metadata',
        consumer: fingerprintKey(KEY),
        calls: { '2xx': 1 },
        lastUserAgent: 'shutdown-test/1',
      }),
    ]);
    expect(JSON.stringify(running.lines)).not.toContain(KEY);
  });

  it('never shows the user and password of the upstream URL, in its logs or on /admin/config', async () => {
    const upstream = track(await startEchoUpstream());
    const running = track(
      await startChildShim({
        SHIM_UPSTREAM_URL: upstream.url.replace('http://', 'http://shim-user:upstream-hunter2@'),
        SHIM_ADMIN_TOKEN: TOKEN,
        SHIM_LOG_LEVEL: 'debug',
      }),
    );
    await expect.poll(() => running.lines.find((line) => line.msg === 'admin listening')).toBeDefined();
    const adminLine = running.lines.find((line) => line.msg === 'admin listening') as Record<string, unknown>;
    const shown = (await (
      await fetch(`http://127.0.0.1:${adminLine.port as number}/admin/config`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      })
    ).json()) as { config: { upstream: { url: string } } };
    expect(shown.config.upstream.url).toBe(`${upstream.url.replace('http://', 'http://[set]@')}/`);
    expect((await fetch(`${running.url}/providers`)).status).toBe(200);
    expect(await running.stop()).toBe(0);
    const written = JSON.stringify([running.lines, shown]);
    expect(written).not.toContain('upstream-hunter2');
    expect(written).not.toContain('shim-user');
    expect(running.lines.find((line) => line.msg === 'shim listening')?.upstream).toBe(upstream.url);
  });

  it('warns of an admin port without a token only when other hosts can reach it', async () => {
    const upstream = track(await startEchoUpstream());
    // An empty variable (a secret that did not mount) counts as no token. The default host is loopback.
    const running = track(await startChildShim({ SHIM_UPSTREAM_URL: upstream.url, SHIM_ADMIN_TOKEN: '' }));
    await expect.poll(() => running.lines.find((line) => line.msg === 'admin listening')).toBeDefined();
    expect(running.lines.find((line) => line.msg === 'admin listening')).toMatchObject({
      tokenRequired: false,
    });
    expect(running.lines.filter((line) => line.level === 'warn')).toEqual([]);
    // Bound to every address (the test still talks to it on 127.0.0.1 only).
    const open = track(
      await startChildShim({
        SHIM_UPSTREAM_URL: upstream.url,
        SHIM_ADMIN_TOKEN: '',
        SHIM_ADMIN_HOST: '0.0.0.0',
      }),
    );
    await expect
      .poll(() => open.lines.find((line) => line.msg === 'admin port open to other hosts without a token'))
      .toMatchObject({ level: 'warn', host: '0.0.0.0' });
  });
});
