import { METHODS } from 'node:http';
import { Counter, collectDefaultMetrics, Registry } from 'prom-client';
import type { ConfigHolder, TrafficObserver } from './app.js';
import { CellCounter, CellHistogram, type CounterCell } from './metric-cells.js';
import { consumerOf, OTHER_CONSUMERS, statusClass, type UsageEvent, type UsageSink } from './usage.js';

/** Upstream exchanges last from a few ms to the upstream timeout (30 s by default). */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** The route label of pass-through traffic in the duration histogram. */
const PASSTHROUGH = 'passthrough';

export interface Metrics {
  /** Counts every deprecated call by route, consumer, action and status class. */
  readonly usage: UsageSink;
  /** Times upstream exchanges and counts pass-through traffic. */
  readonly observer: Required<TrafficObserver>;
  /** Ledger updates thrown away because the buffer was full while the store was unreachable. */
  countLedgerDropped(count: number): void;
  readonly contentType: string;
  /** The Prometheus text exposition of everything the shim measures, process metrics included. */
  render(): Promise<string>;
}

export interface MetricsOptions {
  configs: ConfigHolder;
}

/**
 * The shim's metrics on a registry of their own (never prom-client's global one, so two shims in one process
 * or a library that registers globally cannot collide). Only this module and its metric-cells.ts import prom-client.
 */
export function createMetrics({ configs }: MetricsOptions): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const deprecated = new CellCounter({
    name: 'nango_shim_deprecated_requests_total',
    help: 'Calls to deprecated Nango routes, by route, consumer, what the shim did and the status class.',
    labelNames: ['route', 'consumer', 'action', 'status_class'],
    registry,
  });
  const upstreamDuration = new CellHistogram({
    name: 'nango_shim_upstream_request_duration_seconds',
    help: 'Duration of upstream exchanges: successor (translated), legacy (forwarded) or passthrough.',
    labelNames: ['route', 'target'],
    buckets: DURATION_BUCKETS,
    registry,
  });
  const passThrough = new CellCounter({
    name: 'nango_shim_passthrough_requests_total',
    help: 'Requests no migration owns, forwarded unchanged, by method and status class.',
    labelNames: ['method', 'status_class'],
    registry,
  });
  const upstreamRetries = new Counter({
    name: 'nango_shim_upstream_retries_total',
    help: 'Safe, bodiless requests sent once more on a new connection: the upstream closed the reused one before any answer.',
    registers: [registry],
  });
  const ledgerDropped = new Counter({
    name: 'nango_shim_ledger_dropped_total',
    help: 'Usage ledger updates dropped because the buffer was full while the ledger store was unreachable.',
    registers: [registry],
  });

  // Cells are looked up once and kept: the pass-through path does two map lookups and two additions.
  const knownMethods = new Set(METHODS);
  const passThroughCells = new Map<string, Map<string, CounterCell>>();
  const passThroughDuration = upstreamDuration.cell([PASSTHROUGH, PASSTHROUGH]);
  const seenConsumers = new Set<string>();

  function passThroughCell(method: string, status: number): CounterCell {
    // The HTTP parser only accepts known methods; the guard keeps the label set closed all the same.
    const label = knownMethods.has(method) ? method : 'OTHER';
    let byClass = passThroughCells.get(label);
    if (!byClass) {
      byClass = new Map();
      passThroughCells.set(label, byClass);
    }
    const cls = statusClass(status);
    let cell = byClass.get(cls);
    if (!cell) {
      cell = passThrough.cell([label, cls]);
      byClass.set(cls, cell);
    }
    return cell;
  }

  /** The consumer label: the configured name, else the fingerprint, within the cardinality bound. */
  function consumerLabel(event: UsageEvent): string {
    const consumer = consumerOf(event);
    if (consumer !== event.fingerprint) return consumer;
    // Configured names are bounded by the configuration itself; only unnamed keys count toward the bound.
    const name = configs.current.config.consumers[consumer];
    if (name !== undefined) return name;
    if (seenConsumers.has(consumer)) return consumer;
    if (seenConsumers.size >= configs.current.config.metrics.maxConsumers) return OTHER_CONSUMERS;
    seenConsumers.add(consumer);
    return consumer;
  }

  return {
    usage: {
      record(event) {
        const consumer = consumerLabel(event);
        const cls = statusClass(event.status);
        deprecated.cell([event.routeId, consumer, event.action, cls]).value += 1;
      },
    },
    observer: {
      passThrough(req, res, durationMs) {
        // An answer cut short (by the upstream or the client) counts as 0xx, never as the status its head named.
        passThroughCell(req.method ?? 'GET', res.writableFinished ? res.statusCode : 0).value += 1;
        upstreamDuration.observe(passThroughDuration, durationMs / 1000);
      },
      upstream(routeId, target, durationMs) {
        upstreamDuration.observe(upstreamDuration.cell([routeId, target]), durationMs / 1000);
      },
      retried() {
        upstreamRetries.inc();
      },
    },
    countLedgerDropped(count) {
      ledgerDropped.inc(count);
    },
    contentType: registry.contentType,
    render: () => registry.metrics(),
  };
}
