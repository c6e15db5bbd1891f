import { Counter, type Histogram, type Registry } from 'prom-client';

/**
 * Counters and histograms whose hot path is a plain field update. prom-client's own `inc`/`observe` validate
 * the label names and rebuild a hash string of the label values on every call, even on a child from
 * `labels()`: about two microseconds a request, per metric, on the pass-through path that issue 5 budgets.
 * Here each series is a cell, looked up once by the caller and kept; prom-client still owns the exposition,
 * the metric types and the registry, and reads the cells only when /metrics is scraped.
 */

export interface CounterCell {
  /** The series' labels, in the metric's label order. */
  readonly labels: Readonly<Record<string, string>>;
  value: number;
}

export interface HistogramCell {
  readonly labels: Readonly<Record<string, string>>;
  /** Per bucket (not cumulative), the last one being +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

interface CellOptions {
  name: string;
  help: string;
  labelNames: readonly string[];
  registry: Registry;
}

function labelsOf(labelNames: readonly string[], values: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  labelNames.forEach((name, index) => {
    labels[name] = values[index] ?? '';
  });
  return labels;
}

/** The cell of these label values in `cells`, made by `create` the first time. */
function cellOf<T>(cells: Map<string, T>, values: readonly string[], create: () => T): T {
  const key = values.join('\n');
  let cell = cells.get(key);
  if (cell === undefined) {
    cell = create();
    cells.set(key, cell);
  }
  return cell;
}

/** A counter of cells: `cell(values).value += 1` is the whole cost of counting. */
export class CellCounter {
  private readonly cells = new Map<string, CounterCell>();
  private readonly labelNames: readonly string[];

  constructor({ name, help, labelNames, registry }: CellOptions) {
    this.labelNames = labelNames;
    const cells = this.cells;
    new Counter({
      name,
      help,
      labelNames: [...labelNames],
      registers: [registry],
      // At scrape time: the series are rebuilt from the cells (a counter never loses a series it had).
      collect() {
        this.reset();
        for (const cell of cells.values()) this.inc(cell.labels, cell.value);
      },
    });
  }

  /** The series of these label values, created at 0 the first time. Callers keep it: the lookup is a Map get. */
  cell(values: readonly string[]): CounterCell {
    return cellOf(this.cells, values, () => ({ labels: labelsOf(this.labelNames, values), value: 0 }));
  }
}

interface HistogramValue {
  labels: Record<string, string | number>;
  sharedLabels: Readonly<Record<string, string>>;
  value: number;
  metricName: string;
}

/**
 * A histogram of cells. prom-client's registry reads a metric through `name`, `get()` and
 * `getForPromString()` only; this one answers them from its cells, in exactly the shape prom-client's own
 * Histogram gives (buckets with `le` first, then `+Inf`, `_sum` and `_count` per series).
 */
export class CellHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly bounds: readonly number[];
  private readonly cells = new Map<string, HistogramCell>();
  private readonly labelNames: readonly string[];

  constructor({ name, help, labelNames, buckets, registry }: CellOptions & { buckets: readonly number[] }) {
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
    this.bounds = [...buckets].sort((a, b) => a - b);
    // The registry's own type names prom-client's classes; this object has every member it reads.
    registry.registerMetric(this as unknown as Histogram);
  }

  cell(values: readonly string[]): HistogramCell {
    return cellOf(this.cells, values, () => ({
      labels: labelsOf(this.labelNames, values),
      counts: new Float64Array(this.bounds.length + 1),
      sum: 0,
      count: 0,
    }));
  }

  /** Adds one observation to a cell of this histogram: find the bucket, count it. */
  observe(cell: HistogramCell, value: number): void {
    const bounds = this.bounds;
    let index = 0;
    while (index < bounds.length && value > (bounds[index] as number)) index++;
    cell.counts[index] = (cell.counts[index] ?? 0) + 1;
    cell.sum += value;
    cell.count += 1;
  }

  /** JSON form (registry.getMetricsAsJSON): each value's labels whole. */
  async get() {
    const data = await this.getForPromString();
    return {
      ...data,
      values: data.values.map(({ labels, sharedLabels, ...rest }) => ({
        ...rest,
        labels: { ...sharedLabels, ...labels },
      })),
    };
  }

  async getForPromString() {
    const name = this.name;
    const values: HistogramValue[] = [];
    for (const cell of this.cells.values()) {
      let cumulative = 0;
      this.bounds.forEach((bound, index) => {
        cumulative += cell.counts[index] ?? 0;
        values.push({
          labels: { le: bound },
          sharedLabels: cell.labels,
          value: cumulative,
          metricName: `${name}_bucket`,
        });
      });
      values.push(
        {
          labels: { le: '+Inf' },
          sharedLabels: cell.labels,
          value: cell.count,
          metricName: `${name}_bucket`,
        },
        { labels: {}, sharedLabels: cell.labels, value: cell.sum, metricName: `${name}_sum` },
        { labels: {}, sharedLabels: cell.labels, value: cell.count, metricName: `${name}_count` },
      );
    }
    return { name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** Zeroes every series in place: callers keep their cells, so a cell is never dropped. */
  reset(): void {
    for (const cell of this.cells.values()) {
      cell.counts.fill(0);
      cell.sum = 0;
      cell.count = 0;
    }
  }
}
