import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdminApp } from '../src/admin.js';
import { fingerprintKey } from '../src/api-key.js';
import { createLedger, type Ledger } from '../src/ledger.js';
import { createFileLedgerStore, LEDGER_FILE } from '../src/ledger-file-store.js';
import { createMetrics, type Metrics } from '../src/metrics.js';
import {
  type EchoUpstream,
  patchLegacyMetadata,
  REFUSED_KEY,
  startEchoUpstream,
} from './support/echo-upstream.js';
import { runReport } from './support/report.js';
import { type RunningShim, startShim } from './support/shim.js';

// Distinctive keys, so any place that stored or printed one is found by a plain substring search.
const CRM_KEY = 'c0ffee00-5ec2-4e7a-9bad-c2a5ec2e7c2a';
const BILLING_KEY = 'b111111a-5ec2-4e7a-8bad-b111111ab111';

let upstream: EchoUpstream | undefined;
let shim: RunningShim | undefined;
let ledger: Ledger | undefined;

afterEach(async () => {
  await shim?.close();
  await ledger?.close();
  await upstream?.close();
  shim = undefined;
  ledger = undefined;
  upstream = undefined;
});

describe('who still calls the deprecated route', () => {
  it('counts each key by fingerprint in the metrics and the ledger, and never shows a raw key', async () => {
    const running = await startEchoUpstream();
    upstream = running;
    const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-e2e-'));
    let metrics: Metrics | undefined;
    shim = await startShim(running.url, { dataDir }, [], ({ configs, logger }) => {
      metrics = createMetrics({ configs });
      ledger = createLedger({ store: createFileLedgerStore({ dataDir, logger }), configs, logger });
      return { usage: [metrics.usage, ledger], observer: metrics.observer };
    });
    const admin = createAdminApp({
      configs: shim.configs,
      logger: shim.logger,
      metrics: metrics as Metrics,
      ledger: ledger as Ledger,
      isDraining: () => false,
    });

    expect((await patchLegacyMetadata(shim.url, CRM_KEY, 'crm-sync/4.2 nango-node/0.66.2')).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, CRM_KEY, 'crm-sync/4.2 nango-node/0.66.2')).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, BILLING_KEY, 'billing-cron/1.0')).status).toBe(200);
    expect((await patchLegacyMetadata(shim.url, REFUSED_KEY, 'scanner/0.1')).status).toBe(401);
    expect(
      (await fetch(`${shim.url}/providers`, { headers: { authorization: `Bearer ${CRM_KEY}` } })).status,
    ).toBe(200);
    // The upstream really got the translated calls, with the keys untouched.
    expect(running.requests.filter((seen) => seen.url === '/connections/metadata')).toHaveLength(4);
    expect(running.requests[0]?.authorization).toBe(`Bearer ${CRM_KEY}`);

    const crm = fingerprintKey(CRM_KEY);
    const billing = fingerprintKey(BILLING_KEY);
    // Usage is recorded when the answer is finished; the admin endpoints see it on the next turn.
    const metricsText = async () => (await request(admin).get('/metrics').expect(200)).text;
    await expect.poll(metricsText).toContain('status_class="4xx"');
    const text = await metricsText();
    expect(text).toContain(
      `nango_shim_deprecated_requests_total{route="connection-metadata",consumer="${crm}",action="translated",status_class="2xx"} 2`,
    );
    expect(text).toContain(
      `nango_shim_deprecated_requests_total{route="connection-metadata",consumer="${billing}",action="translated",status_class="2xx"} 1`,
    );
    expect(text).toContain(
      'nango_shim_deprecated_requests_total{route="connection-metadata",consumer="unauthenticated",action="translated",status_class="4xx"} 1',
    );
    expect(text).toContain('nango_shim_passthrough_requests_total{method="GET",status_class="2xx"} 1');
    expect(text).toMatch(
      /nango_shim_upstream_request_duration_seconds_count\{route="connection-metadata",target="successor"\} 4/,
    );

    const deprecations = await request(admin).get('/admin/deprecations').expect(200);
    const metadata = deprecations.body.routes.find(
      (route: { route: string }) => route.route === 'connection-metadata',
    );
    expect(metadata.safe_to_sunset).toBe(false);
    expect(metadata.consumers).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          consumer: crm,
          total_calls: 2,
          last_user_agent: 'crm-sync/4.2 nango-node/0.66.2',
        }),
        expect.objectContaining({ consumer: billing, total_calls: 1, last_user_agent: 'billing-cron/1.0' }),
        expect.objectContaining({ consumer: 'unauthenticated', fingerprint: null, total_calls: 1 }),
      ]),
    );

    await ledger?.close();
    const file = readFileSync(join(dataDir, LEDGER_FILE), 'utf8');
    const table = await runReport({ SHIM_DATA_DIR: dataDir });
    const json = await runReport({ SHIM_DATA_DIR: dataDir }, ['--json']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`connection-metadata\\s+${crm}\\s+2\\s+\\S+\\s+crm-sync/4.2`));
    expect(JSON.parse(json.stdout).routes[0].consumers).toHaveLength(3);

    for (const output of [text, deprecations.text, shim.logText(), file, table.stdout, json.stdout]) {
      expect(output).toContain(crm);
      for (const key of [CRM_KEY, BILLING_KEY, REFUSED_KEY]) expect(output).not.toContain(key);
    }
  });

  it('shows a keyless call answered here but does not let it keep the route "still called"', async () => {
    const running = await startEchoUpstream();
    upstream = running;
    const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-e2e-'));
    shim = await startShim(running.url, { dataDir }, [], ({ configs, logger }) => {
      // Recording for longer than the quiet period: only the calls decide.
      const startedAt = Date.now() - 31 * 86_400_000;
      ledger = createLedger({
        store: createFileLedgerStore({ dataDir, logger }),
        configs,
        logger,
        startedAt,
      });
      return { usage: [ledger] };
    });
    // No API key and a body that is not JSON: answered 400 here, without asking Nango.
    const probe = await fetch(`${shim.url}/connection/metadata`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json' },
      body: '{x',
    });
    expect(probe.status).toBe(400);
    expect(running.requests).toEqual([]);

    const metadataOf = async () =>
      (await (ledger as Ledger).report()).routes.find((route) => route.route === 'connection-metadata');
    await expect.poll(async () => (await metadataOf())?.consumers.length).toBe(1);
    expect(await metadataOf()).toMatchObject({
      safe_to_sunset: true,
      consumers: [
        {
          consumer: 'anonymous',
          fingerprint: null,
          total_calls: 1,
          calls: { '4xx': 1 },
          blocks_sunset: false,
        },
      ],
    });
  });
});
