import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { CellCounter, CellHistogram } from '../src/metric-cells.js';

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const LABELS = ['route', 'target'];
// Below, on and above bucket bounds, the +Inf bucket, zero.
const OBSERVATIONS: Array<[string, string, number]> = [
  ['connection-metadata', 'successor', 0.003],
  ['connection-metadata', 'successor', 0.005],
  ['connection-metadata', 'successor', 0.0051],
  ['connection-metadata', 'legacy', 42],
  ['passthrough', 'passthrough', 0],
  ['passthrough', 'passthrough', 0.3],
  ['connection-metadata', 'successor', 30],
];

describe('CellHistogram', () => {
  it('is exposed exactly as prom-client exposes its own Histogram of the same observations', async () => {
    const ours = new Registry();
    const cells = new CellHistogram({
      name: 'h',
      help: 'help',
      labelNames: LABELS,
      buckets: BUCKETS,
      registry: ours,
    });
    const theirs = new Registry();
    const histogram = new Histogram({
      name: 'h',
      help: 'help',
      labelNames: LABELS,
      buckets: BUCKETS,
      registers: [theirs],
    });
    for (const [route, target, value] of OBSERVATIONS) {
      cells.observe(cells.cell([route, target]), value);
      histogram.labels(route, target).observe(value);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    // The JSON form too, but for prom-client's exemplar slots (always empty: exemplars are not enabled).
    const withoutExemplars = (await theirs.getMetricsAsJSON()).map((metric) => ({
      ...metric,
      values: metric.values.map((value) => {
        const { exemplar: _exemplar, ...rest } = value as typeof value & { exemplar?: unknown };
        return rest;
      }),
    }));
    expect(await ours.getMetricsAsJSON()).toEqual(withoutExemplars);
  });

  it('hands out the same cell for the same labels, and a reset keeps it counting', async () => {
    const registry = new Registry();
    const cells = new CellHistogram({
      name: 'h',
      help: 'help',
      labelNames: LABELS,
      buckets: BUCKETS,
      registry,
    });
    const cell = cells.cell(['a', 'b']);
    expect(cells.cell(['a', 'b'])).toBe(cell);
    cells.observe(cell, 0.2);
    registry.resetMetrics();
    expect(await registry.metrics()).toContain('h_count{route="a",target="b"} 0');
    cells.observe(cell, 0.2);
    expect(await registry.metrics()).toContain('h_count{route="a",target="b"} 1');
  });
});

describe('CellCounter', () => {
  it('is exposed exactly as prom-client exposes its own Counter of the same increments', async () => {
    const ours = new Registry();
    const cells = new CellCounter({
      name: 'c_total',
      help: 'help',
      labelNames: ['method', 'status_class'],
      registry: ours,
    });
    const theirs = new Registry();
    const counter = new Counter({
      name: 'c_total',
      help: 'help',
      labelNames: ['method', 'status_class'],
      registers: [theirs],
    });
    for (const [method, cls] of [
      ['GET', '2xx'],
      ['GET', '2xx'],
      ['POST', '5xx'],
      ['GET', '0xx'],
    ] as const) {
      cells.cell([method, cls]).value += 1;
      counter.labels(method, cls).inc();
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    // A scrape does not consume the counts.
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });
});
