/**
 * `npm run bench`: the shim's overhead next to a bare http-proxy-3 and the upstream itself (issue #5).
 *
 * Three child processes on 127.0.0.1, each on a port read back from port 0: a minimal Nango-compatible
 * upstream (bench/upstream.ts), a bare http-proxy-3 reference (bench/reference.ts) and the shim as built
 * (`node dist/main.js`, default configuration: log level info, usage logging on). autocannon, in this
 * process, drives GET pass-through and the translated `PATCH /connection/metadata` at 1 and 50
 * connections, rounds interleaved. CPU per request is each child's own user+system time, read over IPC
 * (bench/probe.ts) before and after every run; a scenario's figure is the median of its rounds.
 *
 *   npm run bench                       full run: 2 s per run, 6 rounds; exits 0, PASS/FAIL per target
 *   npm run bench -- --quick            1 s per run, 1 round; exits 1 only if a request failed (warm-up included)
 *   npm run bench -- --out FILE         also writes the results as JSON
 *   npm run bench -- --profile DIR      instead: CPU profiles (node --cpu-prof) of the reference and the
 *                                       shim under the 50-connection loads, plus a summary of each
 *   npm run bench -- --instructions     instead: instructions per request of the reference and the shim under
 *                                       callgrind (valgrind), which do not move with the machine's load
 *   --duration S, --rounds N            override the run length and round count
 *   --skip-build                        use dist/ as it is
 *   --shim-main FILE                    run another build of the shim (A/B of a change); implies no build
 */
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  BenchChild,
  type Helpers,
  killAllNow,
  ROOT,
  type Sample,
  stopAll,
  transpileHelpers,
} from './children.js';
import { describeFailures, failedRequests, type LoadResult, runLoad, stopLoad } from './load.js';
import {
  formatProfileDiff,
  formatProfileSummary,
  type ProfileSummary,
  summariseProfile,
} from './profile-summary.js';

// ── options ────────────────────────────────────────────────────────────────────────────────────────────

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    profile: { type: 'string' },
    duration: { type: 'string' },
    rounds: { type: 'string' },
    'skip-build': { type: 'boolean', default: false },
    'shim-main': { type: 'string' },
    instructions: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (args.help) {
  process.stdout.write(
    'usage: npm run bench -- [--quick] [--out FILE] [--profile DIR] [--instructions] [--duration S] [--rounds N] [--skip-build] [--shim-main FILE]\n',
  );
  process.exit(0);
}

function positive(raw: string | undefined, fallback: number, what: string): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    process.stderr.write(`bench: ${what} must be a positive number, got ${raw}\n`);
    process.exit(2);
  }
  return value;
}

const QUICK = args.quick;
// Six short rounds rather than a few long ones: a burst of load from elsewhere on the machine spoils a run or
// two, and the median of six per-round ratios stands two spoiled rounds on either side.
const RUN_SECONDS = positive(args.duration, QUICK ? 1 : 2, '--duration');
const ROUNDS = positive(args.rounds, QUICK ? 1 : 6, '--rounds');
if (!Number.isInteger(ROUNDS)) {
  // 0.4 rounds used to round to none, and a run with no requests passed.
  process.stderr.write(`bench: --rounds must be a whole number, got ${args.rounds}\n`);
  process.exit(2);
}
const WARMUP_SECONDS = QUICK ? 0.3 : 0.5;
const CONNECTION_LEVELS = [1, 50] as const;
const SHIM_LOG_LEVEL = process.env.SHIM_LOG_LEVEL || 'info';
const SHIM_MAIN = path.resolve(args['shim-main'] ?? path.join(ROOT, 'dist', 'main.js'));

// ── scenarios ──────────────────────────────────────────────────────────────────────────────────────────

type TargetName = 'upstream' | 'reference' | 'shim';
type ScenarioName = 'get-passthrough' | 'patch-metadata';

interface Scenario {
  name: ScenarioName;
  target: TargetName;
  method: 'GET' | 'PATCH';
  path: string;
  body?: string;
  headers: Record<string, string>;
}

// A syntactically valid Nango secret key (UUID v4); the bench upstream does not check it.
const API_KEY = '3f8a2c1e-5b7d-4e9f-a0c2-6d1b8e4f7a93';
const AUTH_HEADERS = { authorization: `Bearer ${API_KEY}`, 'user-agent': 'nango-node/0.66.2 (bench)' };
const GET_PATH = '/connections/conn-1?provider_config_key=unauth';
const PATCH_BODY = JSON.stringify({
  connection_id: 'conn-1',
  provider_config_key: 'unauth',
  metadata: { plan: 'enterprise', seats: 42, region: 'eu-west-1', flags: { beta: true, sso: false } },
});
const PATCH_HEADERS = { ...AUTH_HEADERS, 'content-type': 'application/json' };

const get = (target: TargetName): Scenario => ({
  name: 'get-passthrough',
  target,
  method: 'GET',
  path: GET_PATH,
  headers: AUTH_HEADERS,
});
const patch = (target: TargetName): Scenario => ({
  name: 'patch-metadata',
  target,
  method: 'PATCH',
  // The shim gets the deprecated path and translates it; the others get the successor directly.
  path: target === 'shim' ? '/connection/metadata' : '/connections/metadata',
  body: PATCH_BODY,
  headers: PATCH_HEADERS,
});

// The reference's GET pass-through is the denominator of both CPU ratios: it runs between the shim's GET and
// the shim's translated PATCH, next to both, in either direction.
const SCENARIOS: Scenario[] = [
  get('upstream'),
  patch('upstream'),
  patch('reference'),
  get('shim'),
  get('reference'),
  patch('shim'),
];

// ── children ───────────────────────────────────────────────────────────────────────────────────────────

const TMP = mkdtempSync(path.join(os.tmpdir(), 'nango-shim-bench-'));
let shimLogSeq = 0;

/** The environment every child starts from: ours, minus anything that would change what is measured. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value === undefined || name.startsWith('SHIM_') || name === 'NODE_OPTIONS') continue;
    env[name] = value;
  }
  return env;
}

function startUpstream(helpers: Helpers): BenchChild {
  return new BenchChild({
    name: 'upstream',
    module: helpers.upstream,
    probe: helpers.probe,
    env: { ...baseEnv(), BENCH_HOST: '127.0.0.1', BENCH_PORT: '0' },
  });
}

/** How a proxy is run: extra Node flags, or under a program such as valgrind. */
interface RunUnder {
  execArgv?: string[];
  wrapper?: string[];
}

function underOptions({ wrapper }: RunUnder) {
  return wrapper ? { wrapper, listenTimeoutMs: 300_000 } : {};
}

/**
 * The Node flags `npm start` runs the shim with (package.json `config.node_flags`): the bench measures the
 * shim as operators run it, and runs the reference with the same.
 */
const SHIM_NODE_FLAGS: string[] = (
  (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { config?: { node_flags?: string } })
    .config?.node_flags ?? ''
)
  .split(' ')
  .filter(Boolean);

function startReference(helpers: Helpers, upstreamUrl: string, under: RunUnder = {}): BenchChild {
  return new BenchChild({
    name: 'reference',
    module: helpers.reference,
    probe: helpers.probe,
    env: { ...baseEnv(), BENCH_UPSTREAM_URL: upstreamUrl, BENCH_HOST: '127.0.0.1', BENCH_PORT: '0' },
    // The shim's Node flags too: the ratios then compare the two proxies' code on the same runtime, not the
    // flags (the memory reducer the shim turns off could make an idle reference's next round dearer).
    execArgv: [...SHIM_NODE_FLAGS, ...(under.execArgv ?? [])],
    ...underOptions(under),
  });
}

function startShim(
  helpers: Helpers,
  upstreamUrl: string,
  under: RunUnder = {},
): { child: BenchChild; logFile: string } {
  const execArgv = [...SHIM_NODE_FLAGS, ...(under.execArgv ?? [])];
  // stdout goes to a file: nothing printed, every byte the shim logs is counted.
  const logFile = path.join(TMP, `shim-stdout-${++shimLogSeq}.log`);
  const fd = openSync(logFile, 'w');
  try {
    const child = new BenchChild({
      name: 'shim',
      module: SHIM_MAIN,
      probe: helpers.probe,
      env: {
        ...baseEnv(),
        SHIM_UPSTREAM_URL: upstreamUrl,
        SHIM_HOST: '127.0.0.1',
        SHIM_PORT: '0',
        SHIM_LOG_LEVEL,
        // Only what keeps the bench from colliding with anything else: its admin listener and ledger.
        SHIM_ADMIN_HOST: '127.0.0.1',
        SHIM_ADMIN_PORT: '0',
        SHIM_DATA_DIR: path.join(TMP, `shim-data-${shimLogSeq}`),
      },
      execArgv,
      stdout: fd,
      ...underOptions(under),
    });
    return { child, logFile };
  } finally {
    closeSync(fd);
  }
}

/** A scenario's proxy (the reference or the shim; never the upstream), run as `under` says. */
function startProxy(helpers: Helpers, upstreamUrl: string, target: TargetName, under: RunUnder): BenchChild {
  return target === 'shim'
    ? startShim(helpers, upstreamUrl, under).child
    : startReference(helpers, upstreamUrl, under);
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

const urlOf = (port: number) => `http://127.0.0.1:${port}`;

const CHECK_TIMEOUT_MS = 10_000;

/** One request per scenario before any load: a wrong answer fails the bench at once, with the body. */
async function checkScenario(baseUrl: string, scenario: Scenario): Promise<void> {
  const response = await fetch(baseUrl + scenario.path, {
    method: scenario.method,
    headers: scenario.headers,
    // Bounded like every run: a target that accepts and never answers fails the bench, not hangs it.
    signal: AbortSignal.timeout(CHECK_TIMEOUT_MS),
    ...(scenario.body === undefined ? {} : { body: scenario.body }),
  });
  const text = await response.text();
  const expected =
    scenario.method === 'PATCH' ? text === PATCH_BODY : text.includes('"connection_id":"conn-1"');
  if (response.status !== 200 || !expected) {
    throw new Error(
      `${scenario.method} ${scenario.path} on ${scenario.target}: unexpected answer ${response.status} ${text.slice(0, 300)}`,
    );
  }
}

// ── measurement ────────────────────────────────────────────────────────────────────────────────────────

interface Run {
  round: number;
  scenario: Scenario;
  connections: number;
  load: LoadResult;
  cpuUs: number;
  upstreamCpuUs: number;
  peakRss: number;
  logBytes: number;
}

interface Targets {
  upstream: BenchChild;
  reference: BenchChild;
  shim: BenchChild;
  urls: Record<TargetName, string>;
  shimLogFile: string;
}

async function measure(
  targets: Targets,
  scenario: Scenario,
  connections: number,
  seconds: number,
  round: number,
): Promise<Run> {
  const child = targets[scenario.target];
  const sampled = child === targets.upstream ? [child] : [child, targets.upstream];
  const logBefore = scenario.target === 'shim' ? fileSize(targets.shimLogFile) : 0;
  const before: Sample[] = await Promise.all(sampled.map((each) => each.sample()));
  const load = await runLoad(targets.urls[scenario.target], scenario, { connections, seconds });
  const after: Sample[] = await Promise.all(sampled.map((each) => each.sample()));
  const cpu = (index: number) => (after[index]?.cpuUs ?? 0) - (before[index]?.cpuUs ?? 0);
  return {
    round,
    scenario,
    connections,
    load,
    cpuUs: cpu(0),
    upstreamCpuUs: sampled.length === 1 ? cpu(0) : cpu(1),
    peakRss: after[0]?.peakRss ?? 0,
    logBytes: scenario.target === 'shim' ? fileSize(targets.shimLogFile) - logBefore : 0,
  };
}

interface ScenarioResult {
  name: ScenarioName;
  target: TargetName;
  path: string;
  connections: number;
  rps: number;
  p50_ms: number;
  p99_ms: number;
  cpu_us_per_req: number;
  /** CPU µs/req of each round, to show how much the machine moved between rounds. */
  cpu_us_per_req_rounds: number[];
  upstream_cpu_us_per_req: number;
  peak_rss_mb: number;
  errors: number;
  requests: number;
  log_bytes_per_req: number | null;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

function aggregate(runs: Run[]): ScenarioResult {
  const first = runs[0];
  if (!first) throw new Error('aggregate: no runs');
  const requests = runs.reduce((sum, run) => sum + run.load.responses, 0);
  const seconds = runs.reduce((sum, run) => sum + run.load.durationS, 0);
  const latencies = Float64Array.from(runs.flatMap((run) => run.load.latenciesMs)).sort();
  const perReq = (total: number) => (requests === 0 ? Number.NaN : total / requests);
  const cpuRounds = runs.map((run) =>
    run.load.responses === 0 ? Number.NaN : run.cpuUs / run.load.responses,
  );
  return {
    name: first.scenario.name,
    target: first.scenario.target,
    path: first.scenario.path,
    connections: first.connections,
    rps: seconds === 0 ? 0 : requests / seconds,
    p50_ms: percentile(latencies, 50),
    p99_ms: percentile(latencies, 99),
    // The median of the rounds: one round hit by something else on the machine does not move the result.
    cpu_us_per_req: median(cpuRounds),
    cpu_us_per_req_rounds: cpuRounds,
    upstream_cpu_us_per_req: perReq(runs.reduce((sum, run) => sum + run.upstreamCpuUs, 0)),
    peak_rss_mb: Math.max(...runs.map((run) => run.peakRss)) / (1024 * 1024),
    errors: runs.reduce((sum, run) => sum + failedRequests(run.load), 0),
    requests,
    log_bytes_per_req:
      first.scenario.target === 'shim' ? perReq(runs.reduce((sum, run) => sum + run.logBytes, 0)) : null,
  };
}

/**
 * The CPU ratios, one per round: the shim's CPU/req at 50 connections over the reference's GET pass-through
 * in the same round, measured seconds apart. The summary is their median: a ratio of two runs side by side
 * holds still when the whole machine speeds up or slows down between rounds, which a ratio of two
 * separately pooled figures does not.
 */
function pairedRatios(runs: Map<string, Run[]>, shimScenario: ScenarioName, referenceScenario: ScenarioName) {
  const shim = runs.get(`${shimScenario}|shim|50`) ?? [];
  const reference = runs.get(`${referenceScenario}|reference|50`) ?? [];
  const perReq = (run: Run) => (run.load.responses === 0 ? Number.NaN : run.cpuUs / run.load.responses);
  return shim.flatMap((run) => {
    const partner = reference.find((candidate) => candidate.round === run.round);
    return partner ? [perReq(run) / perReq(partner)] : [];
  });
}

// ── report ─────────────────────────────────────────────────────────────────────────────────────────────

const TARGETS = {
  passthrough_cpu_vs_reference: 1.1,
  translate_cpu_vs_reference: 1.6,
  added_p50_ms_c1: 0.25,
  peak_rss_mb: 120,
  errors: 0,
} as const;
type TargetKey = keyof typeof TARGETS;

function machineInfo() {
  const cpus = os.cpus();
  return {
    cpu_model: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    available_parallelism: os.availableParallelism(),
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    total_mem_mb: Math.round(os.totalmem() / (1024 * 1024)),
    load_avg_at_start: os.loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

/** Which code was measured: the commit and whether src/ differs from it. */
function gitState(): { head: string; src_dirty: boolean } | null {
  try {
    const git = (...gitArgs: string[]) =>
      execFileSync('git', gitArgs, {
        cwd: ROOT,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    return {
      head: git('rev-parse', '--short', 'HEAD'),
      src_dirty: git('status', '--porcelain', '--', 'src') !== '',
    };
  } catch {
    return null;
  }
}

function fixed(value: number | null, digits: number): string {
  return value === null || Number.isNaN(value) ? '-' : value.toFixed(digits);
}

function table(header: string[], rows: string[][], rightAligned: boolean[]): string {
  const widths = header.map((cell, column) =>
    Math.max(cell.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) =>
        rightAligned[column] ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0),
      )
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((width) => '─'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}

/** Half the range of the per-round values, relative to their mean: how far apart the rounds were. */
function spread(values: number[]): string {
  if (values.length < 2) return '-';
  const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
  return `${((50 * (Math.max(...values) - Math.min(...values))) / mean).toFixed(0)}%`;
}

/** A warning when the rounds behind the CPU ratios disagree by more than the margins being judged. */
function noiseNote(inputs: Array<ScenarioResult | undefined>): string[] {
  let worst = 0;
  for (const result of inputs) {
    const values = result?.cpu_us_per_req_rounds ?? [];
    if (values.length < 2) continue;
    const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
    worst = Math.max(worst, (50 * (Math.max(...values) - Math.min(...values))) / mean);
  }
  if (worst <= 5) return [];
  return [
    `  note: the 50-connection CPU/req behind the ratios moved by up to ±${worst.toFixed(0)}% between rounds; ` +
      'on a busy machine use more rounds (--rounds 10)',
  ];
}

function formatResults(results: ScenarioResult[]): string {
  const header = [
    'scenario',
    'target',
    'path',
    'conns',
    'req/s',
    'p50 ms',
    'p99 ms',
    'CPU µs/req',
    '± rounds',
    'upstream µs/req',
    'peak RSS MB',
    'log B/req',
    'errors',
  ];
  const rows = results.map((result) => [
    result.name,
    result.target,
    result.path,
    String(result.connections),
    fixed(result.rps, 0),
    fixed(result.p50_ms, 3),
    fixed(result.p99_ms, 3),
    fixed(result.cpu_us_per_req, 1),
    spread(result.cpu_us_per_req_rounds),
    fixed(result.upstream_cpu_us_per_req, 1),
    fixed(result.peak_rss_mb, 1),
    fixed(result.log_bytes_per_req, 0),
    String(result.errors),
  ]);
  return table(header, rows, [
    false,
    false,
    false,
    true,
    true,
    true,
    true,
    true,
    true,
    true,
    true,
    true,
    true,
  ]);
}

// ── the full / quick run ───────────────────────────────────────────────────────────────────────────────

async function benchmark(helpers: Helpers): Promise<number> {
  const started = performance.now();
  const machine = machineInfo();
  const git = gitState();
  const shimLabel = `${path.relative(ROOT, SHIM_MAIN)}${git ? ` (git ${git.head}${git.src_dirty ? ', src/ modified' : ''})` : ''}`;
  process.stderr.write(
    `bench: ${machine.cpu_model}, ${machine.cores} cores, node ${machine.node}; ${ROUNDS} round(s) of ` +
      `${SCENARIOS.length * CONNECTION_LEVELS.length} runs × ${RUN_SECONDS} s\n`,
  );
  const upstream = startUpstream(helpers);
  const upstreamUrl = urlOf(await upstream.port);
  const reference = startReference(helpers, upstreamUrl);
  const { child: shim, logFile } = startShim(helpers, upstreamUrl);
  const targets: Targets = {
    upstream,
    reference,
    shim,
    urls: {
      upstream: upstreamUrl,
      reference: urlOf(await reference.port),
      shim: urlOf(await shim.port),
    },
    shimLogFile: logFile,
  };

  for (const scenario of SCENARIOS) await checkScenario(targets.urls[scenario.target], scenario);
  // Warm-up: JIT, agent socket pools. Not measured, but a request that fails in it has failed all the same.
  let warmupErrors = 0;
  for (const scenario of SCENARIOS) {
    const warm = await runLoad(targets.urls[scenario.target], scenario, {
      connections: 50,
      seconds: WARMUP_SECONDS,
    });
    warmupErrors += failedRequests(warm);
    if (failedRequests(warm) > 0) {
      process.stderr.write(
        `bench: warm-up ${scenario.name} → ${scenario.target}: ${describeFailures(warm)}\n`,
      );
    }
  }

  const runs = new Map<string, Run[]>();
  for (let round = 1; round <= ROUNDS; round++) {
    // Every other round runs the scenarios in reverse (A B C, then C B A): whatever the previous run leaves
    // behind on the machine falls on each target alike, not always on the same one.
    const order = round % 2 === 1 ? SCENARIOS : [...SCENARIOS].reverse();
    for (const connections of CONNECTION_LEVELS) {
      for (const scenario of order) {
        const run = await measure(targets, scenario, connections, RUN_SECONDS, round);
        const key = `${scenario.name}|${scenario.target}|${connections}`;
        runs.set(key, [...(runs.get(key) ?? []), run]);
        const rps = run.load.durationS > 0 ? run.load.responses / run.load.durationS : 0;
        process.stderr.write(
          `  round ${round}/${ROUNDS} c=${String(connections).padEnd(2)} ${scenario.name.padEnd(15)} → ` +
            `${scenario.target.padEnd(9)} ${rps.toFixed(0).padStart(6)} req/s, ` +
            `${(run.cpuUs / Math.max(1, run.load.responses)).toFixed(1)} µs CPU/req\n`,
        );
      }
    }
  }

  // Shown by connection count, scenario and target, whatever order they ran in.
  const rank = (result: ScenarioResult) =>
    result.connections * 100 +
    (result.name === 'get-passthrough' ? 0 : 10) +
    ['upstream', 'reference', 'shim'].indexOf(result.target);
  const results = [...runs.values()].map(aggregate).sort((a, b) => rank(a) - rank(b));
  const find = (name: ScenarioName, target: TargetName, connections: number) =>
    results.find((r) => r.name === name && r.target === target && r.connections === connections);
  const value = (result: ScenarioResult | undefined, field: 'cpu_us_per_req' | 'p50_ms') =>
    result?.[field] ?? Number.NaN;

  const shimResults = results.filter((r) => r.target === 'shim');
  const passthroughRounds = pairedRatios(runs, 'get-passthrough', 'get-passthrough');
  const translateRounds = pairedRatios(runs, 'patch-metadata', 'get-passthrough');
  const summary = {
    passthrough_cpu_vs_reference: median(passthroughRounds),
    translate_cpu_vs_reference: median(translateRounds),
    added_p50_ms_c1:
      value(find('patch-metadata', 'shim', 1), 'p50_ms') -
      value(find('patch-metadata', 'upstream', 1), 'p50_ms'),
    added_p50_ms_c1_get:
      value(find('get-passthrough', 'shim', 1), 'p50_ms') -
      value(find('get-passthrough', 'upstream', 1), 'p50_ms'),
    // The same PATCH passed through the bare reference, to /connections/metadata: the library's own share.
    reference_added_p50_ms_c1:
      value(find('patch-metadata', 'reference', 1), 'p50_ms') -
      value(find('patch-metadata', 'upstream', 1), 'p50_ms'),
    reference_added_p50_ms_c1_get:
      value(find('get-passthrough', 'reference', 1), 'p50_ms') -
      value(find('get-passthrough', 'upstream', 1), 'p50_ms'),
    peak_rss_mb: Math.max(...shimResults.filter((r) => r.connections === 50).map((r) => r.peak_rss_mb)),
    errors: shimResults.reduce((sum, r) => sum + r.errors, 0),
    passthrough_cpu_vs_reference_rounds: passthroughRounds,
    translate_cpu_vs_reference_rounds: translateRounds,
  };
  const checks = Object.fromEntries(
    (Object.keys(TARGETS) as TargetKey[]).map((key) => [
      key,
      { max: TARGETS[key], pass: summary[key] <= TARGETS[key] },
    ]),
  ) as Record<TargetKey, { max: number; pass: boolean }>;
  const pass = Object.values(checks).every((check) => check.pass);
  const allErrors = results.reduce((sum, r) => sum + r.errors, 0) + warmupErrors;

  const out: string[] = [
    '',
    `machine: ${machine.cpu_model} · ${machine.cores} cores (${machine.available_parallelism} usable) · node ${machine.node} · ${machine.platform}`,
    `shim: ${shimLabel}, log level ${SHIM_LOG_LEVEL}; runs: ${ROUNDS} round(s) × ${RUN_SECONDS} s per scenario and connection count, interleaved`,
    '',
    formatResults(results),
    '',
  ];
  const digits: Record<TargetKey, number> = {
    passthrough_cpu_vs_reference: 3,
    translate_cpu_vs_reference: 3,
    added_p50_ms_c1: 3,
    peak_rss_mb: 1,
    errors: 0,
  };
  const summaryRows = (Object.keys(TARGETS) as TargetKey[]).map((key) => [
    key,
    fixed(summary[key], digits[key]),
    key === 'errors' ? '= 0' : `≤ ${TARGETS[key]}`,
    checks[key].pass ? 'PASS' : 'FAIL',
  ]);
  out.push(table(['summary', 'value', 'target', ''], summaryRows, [false, true, false, false]));
  const list = (values: number[]) => values.map((ratio) => ratio.toFixed(3)).join(' ');
  out.push(
    `  (CPU ratios are the median of one ratio per round, shim and reference side by side: pass-through ` +
      `${list(summary.passthrough_cpu_vs_reference_rounds)}; translated ${list(summary.translate_cpu_vs_reference_rounds)})`,
    `  (added p50 at 1 connection: PATCH translated by the shim ${fixed(summary.added_p50_ms_c1, 3)} ms, the same ` +
      `PATCH through the bare reference ${fixed(summary.reference_added_p50_ms_c1, 3)} ms; GET: shim ` +
      `${fixed(summary.added_p50_ms_c1_get, 3)} ms, reference ${fixed(summary.reference_added_p50_ms_c1_get, 3)} ms)`,
    ...noiseNote([
      find('get-passthrough', 'shim', 50),
      find('get-passthrough', 'reference', 50),
      find('patch-metadata', 'shim', 50),
    ]),
    `  errors across all scenarios: ${allErrors} (${warmupErrors} in the warm-up); total time ${((performance.now() - started) / 1000).toFixed(1)} s`,
    QUICK
      ? `quick run: ${allErrors === 0 ? 'PASS' : 'FAIL'} (no request may fail; targets ${pass ? 'met' : 'not met'}, informative only)`
      : `overall: ${pass ? 'PASS' : 'FAIL'}`,
    '',
  );
  process.stdout.write(out.join('\n'));

  if (args.out) {
    const report = {
      machine,
      settings: {
        quick: QUICK,
        run_seconds: RUN_SECONDS,
        rounds: ROUNDS,
        shim_log_level: SHIM_LOG_LEVEL,
        shim_main: path.relative(ROOT, SHIM_MAIN),
        git,
      },
      scenarios: results,
      warmup_errors: warmupErrors,
      summary,
      targets: checks,
      pass,
    };
    mkdirSync(path.dirname(path.resolve(args.out)), { recursive: true });
    writeFileSync(args.out, `${JSON.stringify(report, null, 2)}\n`);
    process.stderr.write(`bench: wrote ${args.out}\n`);
  }
  if (QUICK) return allErrors > 0 ? 1 : 0;
  return 0;
}

/** What --profile and --instructions measure, one proxy process at a time. */
const MEASURED_ALONE: Scenario[] = [get('reference'), get('shim'), patch('shim')];

// ── profiling ──────────────────────────────────────────────────────────────────────────────────────────

async function profile(helpers: Helpers, dir: string): Promise<number> {
  const profileDir = path.resolve(dir);
  mkdirSync(profileDir, { recursive: true });
  const upstream = startUpstream(helpers);
  const upstreamUrl = urlOf(await upstream.port);
  const specs = MEASURED_ALONE.map((scenario) => ({
    label: `${scenario.target}-${scenario.name === 'get-passthrough' ? 'get-passthrough' : 'patch-translate'}-c50`,
    scenario,
  }));
  let errors = 0;
  const profiled = new Map<string, { summary: ProfileSummary; requests: number }>();
  for (const { label, scenario } of specs) {
    const file = path.join(profileDir, `${label}.cpuprofile`);
    rmSync(file, { force: true });
    const execArgv = ['--cpu-prof', '--cpu-prof-dir', profileDir, '--cpu-prof-name', `${label}.cpuprofile`];
    const child = startProxy(helpers, upstreamUrl, scenario.target, { execArgv });
    const url = urlOf(await child.port);
    await checkScenario(url, scenario);
    errors += failedRequests(await runLoad(url, scenario, { connections: 50, seconds: 1 }));
    const startUs = Number(process.hrtime.bigint() / 1000n);
    const before = await child.sample();
    const load = await runLoad(url, scenario, { connections: 50, seconds: RUN_SECONDS });
    const after = await child.sample();
    const endUs = Number(process.hrtime.bigint() / 1000n);
    errors += failedRequests(load);
    // The profile is written when the process exits: a graceful stop, with time to drain and write.
    await child.stop(20_000);
    const window = { startUs, endUs };
    const summary = summariseProfile(file, ROOT, window);
    profiled.set(label, { summary, requests: load.responses });
    writeFileSync(
      path.join(profileDir, `${label}.window.json`),
      `${JSON.stringify({ ...window, requests: load.responses, seconds: load.durationS })}\n`,
    );
    const cpuPerReq = (after.cpuUs - before.cpuUs) / Math.max(1, load.responses);
    const text =
      `${formatProfileSummary(label, summary, load.responses)}\n` +
      `  (${(load.responses / load.durationS).toFixed(0)} req/s under the profiler, ${cpuPerReq.toFixed(1)} µs CPU/req)\n`;
    writeFileSync(path.join(profileDir, `${label}.summary.txt`), text);
    process.stdout.write(`${text}\n`);
  }
  const reference = profiled.get('reference-get-passthrough-c50');
  for (const label of ['shim-get-passthrough-c50', 'shim-patch-translate-c50']) {
    const subject = profiled.get(label);
    if (!reference || !subject) continue;
    const text = `${formatProfileDiff(`${label} vs reference-get-passthrough-c50`, subject, reference)}\n`;
    writeFileSync(path.join(profileDir, `${label}.vs-reference.txt`), text);
    process.stdout.write(`${text}\n`);
  }
  process.stdout.write(`profiles and summaries in ${profileDir}\n`);
  return errors > 0 ? 1 : 0;
}

// ── instructions ───────────────────────────────────────────────────────────────────────────────────────

// Long enough for V8's optimising compiler to be done: after 4000, a larger shim build still compiled and ran a
// major GC inside the windows under valgrind (434-454k instructions per GET, where a copy of the same build
// measured 347k).
const INSTRUCTION_WARMUP = 10_000;
const INSTRUCTION_WINDOW = 2_500;
const INSTRUCTION_WINDOWS = 3;

/** The `totals:` line of a callgrind dump: instructions executed since the counters were last zeroed. */
function callgrindTotal(file: string): number {
  const match = /^totals:\s+(\d+)/m.exec(readFileSync(file, 'utf8'));
  if (!match) throw new Error(`${file}: no totals line`);
  return Number(match[1]);
}

function callgrindControl(flag: '-z' | '-d', pid: number): void {
  execFileSync('callgrind_control', [flag, String(pid)], { stdio: 'ignore' });
}

/**
 * `--instructions`: each proxy under callgrind, which counts the instructions its process executed (user
 * space, every thread) instead of timing them, so it does not move with the machine's load, where CPU time
 * moves by ±20 % between runs here. After a warm-up the counters are zeroed and dumped after each of three
 * windows of requests; the figure is their median, which one window holding a major GC cannot move. The
 * kernel's share (the same system calls for the reference and the shim) is not counted: these ratios are of
 * the user-space part only.
 */
async function instructions(helpers: Helpers): Promise<number> {
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'ignore' });
    execFileSync('callgrind_control', ['--version'], { stdio: 'ignore' });
  } catch {
    process.stderr.write('bench: --instructions needs valgrind (Debian package valgrind)\n');
    return 2;
  }
  const dir = mkdtempSync(path.join(TMP, 'callgrind-'));
  const upstream = startUpstream(helpers);
  const upstreamUrl = urlOf(await upstream.port);
  const specs = MEASURED_ALONE.map((scenario) => ({
    label: `${scenario.target.padEnd(10)} ${scenario.name === 'get-passthrough' ? 'GET pass-through' : 'PATCH translated'}`,
    scenario,
  }));
  process.stderr.write(
    `bench: instructions per request under callgrind, 50 connections, ${INSTRUCTION_WARMUP} warm-up requests, ` +
      `${INSTRUCTION_WINDOWS} windows of ${INSTRUCTION_WINDOW} (a few minutes per proxy)\n`,
  );
  let errors = 0;
  const steady: number[] = [];
  const rows: string[][] = [];
  for (const { label, scenario } of specs) {
    const outFile = path.join(dir, `${scenario.target}-${scenario.name}.out`);
    const wrapper = [
      'valgrind',
      '-q',
      '--tool=callgrind',
      // V8 writes and rewrites machine code: callgrind must notice code changing anywhere but in files.
      '--smc-check=all-non-file',
      '--dump-instr=no',
      `--callgrind-out-file=${outFile}`,
    ];
    const child = startProxy(helpers, upstreamUrl, scenario.target, { wrapper });
    const url = urlOf(await child.port);
    await checkScenario(url, scenario);
    // Under valgrind the first requests wait for code that runs 50 times slower: a minute, not 10 s.
    const warm = await runLoad(url, scenario, {
      connections: 50,
      seconds: 1,
      amount: INSTRUCTION_WARMUP,
      timeoutSeconds: 60,
    });
    const failed = (load: LoadResult, phase: string) => {
      const count = failedRequests(load);
      if (count > 0) {
        process.stderr.write(`  ${label}, ${phase}: ${describeFailures(load)}\n`);
      }
      return count;
    };
    errors += failed(warm, 'warm-up');
    const pid = child.process.pid as number;
    callgrindControl('-z', pid);
    const perRequest: number[] = [];
    for (let window = 1; window <= INSTRUCTION_WINDOWS; window++) {
      const load = await runLoad(url, scenario, {
        connections: 50,
        seconds: 1,
        amount: INSTRUCTION_WINDOW,
        timeoutSeconds: 60,
      });
      callgrindControl('-d', pid);
      errors += failed(load, `window ${window}`);
      perRequest.push(callgrindTotal(`${outFile}.${window}`) / Math.max(1, load.responses));
    }
    await child.stop(60_000);
    const figure = median(perRequest);
    steady.push(figure);
    rows.push([label, ...perRequest.map((value) => fixed(value / 1000, 1)), fixed(figure / 1000, 1)]);
    process.stderr.write(`  ${label}: ${fixed(figure / 1000, 1)}k instructions per request\n`);
  }
  const [reference = Number.NaN, shimGet = Number.NaN, shimPatch = Number.NaN] = steady;
  const windows = Array.from({ length: INSTRUCTION_WINDOWS }, (_, index) => `window ${index + 1}`);
  process.stdout.write(
    [
      '',
      'thousands of instructions per request (callgrind; user space, all threads):',
      table(['target     scenario', ...windows, 'steady'], rows, [false, true, true, true, true]),
      '',
      `pass-through ÷ reference: ${fixed(shimGet / reference, 3)}   translated PATCH ÷ reference pass-through: ${fixed(shimPatch / reference, 3)}`,
      `errors: ${errors}`,
      '',
    ].join('\n'),
  );
  return errors > 0 ? 1 : 0;
}

// ── main ───────────────────────────────────────────────────────────────────────────────────────────────

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  stopLoad();
  cleaning ??= stopAll(5_000).finally(() => rmSync(TMP, { recursive: true, force: true }));
  return cleaning;
}

for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
] as const) {
  process.once(signal, () => {
    process.stderr.write(`bench: ${signal}, stopping the children\n`);
    void cleanup().finally(() => process.exit(code));
  });
}
process.on('exit', killAllNow);

async function main(): Promise<number> {
  if (!args['skip-build'] && !args['shim-main']) {
    process.stderr.write('bench: npm run build\n');
    execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  }
  const helpers = transpileHelpers();
  if (args.instructions) return instructions(helpers);
  return args.profile ? profile(helpers, args.profile) : benchmark(helpers);
}

main().then(
  (code) => cleanup().finally(() => process.exit(code)),
  (error: unknown) => {
    process.stderr.write(
      `bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    void cleanup().finally(() => process.exit(1));
  },
);
