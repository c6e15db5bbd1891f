import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { parseConfig, type RouteId } from '../src/config.js';
import { createMetrics } from '../src/metrics.js';
import type { UsageEvent } from '../src/usage.js';
import { startEchoUpstream } from './support/echo-upstream.js';
import { DEFAULTS, startShim } from './support/shim.js';
import { usageEvent } from './support/usage-event.js';

const NAMED = 'aaaaaaaaaaaaaaaa';

function metricsWith(overrides: Record<string, unknown> = {}) {
  return createMetrics({ configs: { current: parseConfig([DEFAULTS, overrides]) } });
}

function call(
  fingerprint: string | undefined,
  status = 200,
  routeId: RouteId = 'connection-metadata',
): UsageEvent {
  return usageEvent({ fingerprint, status, routeId });
}

/** The value of one sample line, or undefined when the series does not exist. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function deprecatedSeries(consumer: string, status = '2xx', action = 'translated'): string {
  return `nango_shim_deprecated_requests_total{route="connection-metadata",consumer="${consumer}",action="${action}",status_class="${status}"}`;
}

describe('createMetrics', () => {
  it('counts deprecated calls by route, consumer, action and status class', async () => {
    const metrics = metricsWith();
    metrics.usage.record(call('0123456789abcdef'));
    metrics.usage.record(call('0123456789abcdef'));
    metrics.usage.record({ ...call('0123456789abcdef', 410), action: 'gone' });
    const text = await metrics.render();
    expect(sample(text, deprecatedSeries('0123456789abcdef'))).toBe(2);
    expect(sample(text, deprecatedSeries('0123456789abcdef', '4xx', 'gone'))).toBe(1);
    expect(text).toContain('# TYPE nango_shim_deprecated_requests_total counter');
  });

  it('labels a configured consumer by its name', async () => {
    const metrics = metricsWith({ consumers: { [NAMED]: 'billing-worker' } });
    metrics.usage.record(call(NAMED));
    expect(sample(await metrics.render(), deprecatedSeries('billing-worker'))).toBe(1);
  });

  it('counts refused calls as unauthenticated and keyless ones as anonymous', async () => {
    const metrics = metricsWith();
    metrics.usage.record(call('1111111111111111', 401));
    metrics.usage.record(call('2222222222222222', 403));
    metrics.usage.record(call(undefined, 200));
    metrics.usage.record(call(undefined, 401));
    const text = await metrics.render();
    expect(sample(text, deprecatedSeries('unauthenticated', '4xx'))).toBe(3);
    expect(sample(text, deprecatedSeries('anonymous'))).toBe(1);
    expect(text).not.toContain('1111111111111111');
    expect(text).not.toContain('2222222222222222');
  });

  it('counts consumers past metrics.maxConsumers as other, named ones always by name', async () => {
    const metrics = metricsWith({ metrics: { maxConsumers: 2 }, consumers: { [NAMED]: 'billing-worker' } });
    for (const fingerprint of [
      '000000000000000a',
      '000000000000000b',
      '000000000000000c',
      '000000000000000d',
    ]) {
      metrics.usage.record(call(fingerprint));
    }
    metrics.usage.record(call('000000000000000a'));
    metrics.usage.record(call(NAMED));
    const text = await metrics.render();
    expect(sample(text, deprecatedSeries('000000000000000a'))).toBe(2);
    expect(sample(text, deprecatedSeries('000000000000000b'))).toBe(1);
    expect(sample(text, deprecatedSeries('other'))).toBe(2);
    expect(sample(text, deprecatedSeries('billing-worker'))).toBe(1);
    expect(text).not.toContain('000000000000000c');
  });

  it('times upstream exchanges by route and target', async () => {
    const metrics = metricsWith();
    metrics.observer.upstream('connection-metadata', 'successor', 20);
    metrics.observer.upstream('connection-get', 'legacy', 2_000);
    const text = await metrics.render();
    expect(
      sample(
        text,
        'nango_shim_upstream_request_duration_seconds_count{route="connection-metadata",target="successor"}',
      ),
    ).toBe(1);
    expect(
      sample(
        text,
        'nango_shim_upstream_request_duration_seconds_bucket{le="2.5",route="connection-get",target="legacy"}',
      ),
    ).toBe(1);
    expect(
      sample(
        text,
        'nango_shim_upstream_request_duration_seconds_bucket{le="1",route="connection-get",target="legacy"}',
      ),
    ).toBe(0);
  });

  it('counts pass-through requests by method and status class, and times them', async () => {
    const metrics = metricsWith();
    const req = { method: 'GET' } as IncomingMessage;
    const answered = (statusCode: number) =>
      ({ statusCode, headersSent: true, writableFinished: true }) as ServerResponse;
    metrics.observer.passThrough(req, answered(200), 5);
    metrics.observer.passThrough(req, answered(204), 5);
    metrics.observer.passThrough({ method: 'POST' } as IncomingMessage, answered(502), 5);
    // The client went away before any answer.
    const unanswered = { statusCode: 200, headersSent: false, writableFinished: false };
    metrics.observer.passThrough(req, unanswered as ServerResponse, 5);
    // A 200 whose body was cut (the upstream died mid-answer, or the client left): never a 2xx.
    const cut = { statusCode: 200, headersSent: true, writableFinished: false };
    metrics.observer.passThrough(req, cut as ServerResponse, 5);
    const text = await metrics.render();
    expect(sample(text, 'nango_shim_passthrough_requests_total{method="GET",status_class="2xx"}')).toBe(2);
    expect(sample(text, 'nango_shim_passthrough_requests_total{method="POST",status_class="5xx"}')).toBe(1);
    expect(sample(text, 'nango_shim_passthrough_requests_total{method="GET",status_class="0xx"}')).toBe(2);
    expect(
      sample(
        text,
        'nango_shim_upstream_request_duration_seconds_count{route="passthrough",target="passthrough"}',
      ),
    ).toBe(5);
  });

  it('counts dropped ledger updates and exposes the process metrics', async () => {
    const metrics = metricsWith();
    metrics.countLedgerDropped(3);
    const text = await metrics.render();
    expect(sample(text, 'nango_shim_ledger_dropped_total')).toBe(3);
    expect(text).toContain('process_cpu_user_seconds_total');
    expect(metrics.contentType).toMatch(/^text\/plain/);
  });

  it('keeps two instances apart (a registry each, not the global one)', async () => {
    const one = metricsWith();
    const two = metricsWith();
    one.usage.record(call('0123456789abcdef'));
    expect(sample(await one.render(), deprecatedSeries('0123456789abcdef'))).toBe(1);
    expect(sample(await two.render(), deprecatedSeries('0123456789abcdef'))).toBeUndefined();
  });
});

describe('the shim, timing its upstream exchanges', () => {
  it('times a streamed translation as a successor exchange, as the README and its PromQL say', async () => {
    const upstream = await startEchoUpstream();
    const metrics = metricsWith();
    const shim = await startShim(upstream.url, {}, [], () => ({ observer: metrics.observer }));
    try {
      const key = 'c0ffee00-5ec2-4e7a-9bad-c2a5ec2e7c2a';
      const answer = await fetch(`${shim.url}/connection/conn-1?provider_config_key=github`, {
        headers: { authorization: `Bearer ${key}` },
      });
      expect(answer.status).toBe(200);
      await answer.text();
      // The upstream really got the successor's path.
      expect(upstream.requests.map((seen) => seen.url)).toEqual([
        '/connections/conn-1?provider_config_key=github',
      ]);
      const series =
        'nango_shim_upstream_request_duration_seconds_count{route="connection-get",target="successor"}';
      await expect.poll(async () => sample(await metrics.render(), series)).toBe(1);
    } finally {
      await shim.close();
      await upstream.close();
    }
  });
});
