import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type ChildShim, startChildShim, writeConfigFile } from './support/child-shim.js';
import { type EchoUpstream, patchLegacyMetadata, startEchoUpstream } from './support/echo-upstream.js';
import { HAS_REDIS_SERVER, startTestRedis, type TestRedis } from './support/redis-server.js';
import { type RecordingUpstream, request, startUpstream, within } from './support/upstream.js';

/**
 * The real entry point, run as a child process: SIGTERM/SIGINT stop the listener, let in-flight requests
 * finish within `server.shutdownGraceMs`, and exit 0 (1 when the grace period had to cut some); a bad
 * configuration stops it before it listens. Its logs are JSON lines on stdout.
 */

const SLOW_MS = 500;
const SECRET = 'Bearer 5ec7e7a1-5107-4b1d-9c0d-5d0e5ec7e7a1';

let upstream: RecordingUpstream | undefined;
let child: ChildShim | undefined;
let agent: http.Agent | undefined;

afterEach(async () => {
  agent?.destroy();
  if (child && child.child.exitCode === null && child.child.signalCode === null) {
    child.child.kill('SIGKILL');
  }
  if (child) await within(5_000, 'child exit', child.exited);
  await upstream?.close();
  agent = undefined;
  child = undefined;
  upstream = undefined;
});

/** `/slow` answers after `slowMs`, anything else at once. */
async function startSlowUpstream(slowMs = SLOW_MS) {
  upstream = await startUpstream((req, res) => {
    req.resume();
    const delay = req.url === '/slow' ? slowMs : 0;
    const timer = setTimeout(() => res.end(`answered ${req.url}`), delay);
    res.once('close', () => clearTimeout(timer));
  });
  return upstream;
}

/** The first log line with `msg`, as soon as the child writes it. */
function waitForLine(shim: ChildShim, msg: string, timeoutMs = 5_000) {
  const stdout = shim.child.stdout;
  let onData = () => {};
  return within(
    timeoutMs,
    `"${msg}" log line`,
    new Promise<Record<string, unknown>>((resolve) => {
      // child-shim's own listener, registered first, has parsed the chunk by the time this one runs.
      onData = () => {
        const line = shim.lines.find((entry) => entry.msg === msg);
        if (line) resolve(line);
      };
      stdout?.on('data', onData);
      onData();
    }),
  ).finally(() => stdout?.off('data', onData));
}

/** Whether a TCP connection to the port is refused (nothing listens) or accepted. */
function connectOutcome(port: number): Promise<'refused' | 'accepted'> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('accepted');
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      resolve(error.code === 'ECONNREFUSED' ? 'refused' : 'accepted');
    });
  });
}

/**
 * Resolves once connections to the port are refused. The "shutting down" line can reach stdout (an async
 * write on another thread) a moment before the listener closes, so this probes instead of trying once.
 */
async function refusedSoon(url: string, timeoutMs = 2_000): Promise<void> {
  const port = Number(new URL(url).port);
  const deadline = performance.now() + timeoutMs;
  while ((await connectOutcome(port)) !== 'refused') {
    if (performance.now() > deadline) throw new Error(`still accepting connections after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function expectOnlyJsonLines(shim: ChildShim) {
  expect(shim.lines.length).toBeGreaterThan(0);
  expect(shim.lines.filter((line) => 'unparsed' in line)).toEqual([]);
  for (const line of shim.lines) {
    expect(line).toMatchObject({
      level: expect.any(String),
      time: expect.any(Number),
      msg: expect.any(String),
    });
  }
}

/** The entry point with a 100 ms grace period and a data folder of its own, in front of `upstreamUrl`. */
async function startShimWithShortGrace(upstreamUrl: string) {
  const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-data-'));
  const configFile = writeConfigFile({ server: { shutdownGraceMs: 100 } });
  child = await startChildShim({
    SHIM_UPSTREAM_URL: upstreamUrl,
    SHIM_CONFIG: configFile,
    SHIM_DATA_DIR: dataDir,
  });
  return { shim: child, dataDir };
}

/** The ledger file the shim wrote in `dataDir`, its entries' routes and calls. */
function ledgerEntries(dataDir: string) {
  const ledger = JSON.parse(readFileSync(join(dataDir, 'deprecation-ledger.json'), 'utf8')) as {
    entries: Array<{ route: string; calls: Record<string, number> }>;
  };
  return ledger.entries;
}

describe('graceful shutdown', () => {
  it('lets an in-flight request finish on SIGTERM, refuses new connections, and exits 0', async () => {
    const slow = await startSlowUpstream();
    child = await startChildShim({ SHIM_UPSTREAM_URL: slow.url });
    const shim = child;
    agent = new http.Agent({ keepAlive: true });

    const inFlight = request(shim.url, { path: '/slow', headers: { authorization: SECRET }, agent });
    let answered = false;
    inFlight.then(
      () => {
        answered = true;
      },
      () => {},
    );
    await slow.waitForRequests(1);
    shim.child.kill('SIGTERM');
    const stopping = await waitForLine(shim, 'shutting down');

    expect(stopping).toMatchObject({ signal: 'SIGTERM', inFlight: 1 });
    await refusedSoon(shim.url);
    // Refused while the slow request was still being served.
    expect(answered).toBe(false);
    const res = await within(5_000, 'in-flight answer', inFlight);
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('answered /slow');
    // A keep-alive client is told to move on rather than reuse a connection about to close.
    expect(res.headers.connection).toBe('close');
    expect(await within(5_000, 'exit', shim.exited)).toBe(0);
    expect(slow.requests.map((seen) => seen.url)).toEqual(['/slow']);
    expectOnlyJsonLines(shim);
    expect(shim.lines).toContainEqual(expect.objectContaining({ msg: 'shutdown complete', clean: true }));
    expect(JSON.stringify(shim.lines)).not.toContain(SECRET.slice('Bearer '.length));
  });

  it('closes idle keep-alive connections at once instead of waiting out the grace period', async () => {
    const quick = await startSlowUpstream();
    child = await startChildShim({ SHIM_UPSTREAM_URL: quick.url });
    const shim = child;
    agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    expect((await request(shim.url, { path: '/providers', agent })).status).toBe(200);
    const [idle] = Object.values(agent.freeSockets).flat();
    expect(idle).toBeDefined();
    const idleClosed = new Promise<void>((resolve) => idle?.once('close', () => resolve()));

    const started = performance.now();
    shim.child.kill('SIGTERM');
    await within(3_000, 'idle connection closed', idleClosed);

    expect(await within(5_000, 'exit', shim.exited)).toBe(0);
    // The default grace period is 10 s: an idle connection must not hold the shutdown.
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  it('closes a connection on which no request has begun at once, and exits 0', async () => {
    const quick = await startSlowUpstream();
    child = await startChildShim({ SHIM_UPSTREAM_URL: quick.url });
    const shim = child;
    // A client pool's connection opened ahead of its first request, or a probe that connects and waits.
    const unused = net.connect({ host: '127.0.0.1', port: Number(new URL(shim.url).port) });
    unused.on('error', () => {});
    unused.resume();
    const unusedClosed = new Promise<void>((resolve) => unused.once('close', () => resolve()));
    await new Promise<void>((resolve) => unused.once('connect', () => resolve()));
    // Only its first request would tell node:http the connection is in use, so wait until it surely came.
    await new Promise((resolve) => setTimeout(resolve, 100));

    const started = performance.now();
    shim.child.kill('SIGTERM');
    await within(3_000, 'unused connection closed', unusedClosed);

    expect(await within(5_000, 'exit', shim.exited)).toBe(0);
    // The default grace period is 10 s: a connection nobody uses must not hold the shutdown.
    expect(performance.now() - started).toBeLessThan(3_000);
    expect(shim.lines).toContainEqual(expect.objectContaining({ msg: 'shutdown complete', clean: true }));
  });

  it('exits 0 on SIGINT too', async () => {
    const quick = await startSlowUpstream();
    child = await startChildShim({ SHIM_UPSTREAM_URL: quick.url });

    child.child.kill('SIGINT');

    expect(await within(5_000, 'exit', child.exited)).toBe(0);
    expect(child.lines).toContainEqual(expect.objectContaining({ msg: 'shutting down', signal: 'SIGINT' }));
    expectOnlyJsonLines(child);
  });

  it('cuts a request still running when the grace period ends, and exits non-zero', async () => {
    const slow = await startSlowUpstream(3_000);
    const configFile = writeConfigFile({ server: { shutdownGraceMs: 100 } });
    child = await startChildShim({ SHIM_UPSTREAM_URL: slow.url, SHIM_CONFIG: configFile });
    const shim = child;

    const inFlight = request(shim.url, { path: '/slow' });
    await slow.waitForRequests(1);
    const started = performance.now();
    shim.child.kill('SIGTERM');

    // Cut, never answered as if it had succeeded.
    await expect(within(3_000, 'cut request', inFlight)).rejects.toThrow(/socket hang up|ECONNRESET|aborted/);
    const code = await within(3_000, 'exit', shim.exited);
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(performance.now() - started).toBeLessThan(2_000);
    expectOnlyJsonLines(shim);
    expect(shim.lines).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        msg: 'grace period over, cutting remaining requests',
        inFlight: 1,
      }),
    );
    expect(shim.lines).toContainEqual(expect.objectContaining({ clean: false }));
  });

  it('records a deprecated call the grace period cut, in its usage line and in the ledger it writes last', async () => {
    upstream = await startUpstream((req, res) => {
      req.resume();
      const timer = setTimeout(() => res.end('{}'), 3_000);
      res.once('close', () => clearTimeout(timer));
    });
    const slow = upstream;
    const { shim, dataDir } = await startShimWithShortGrace(slow.url);

    const inFlight = request(shim.url, {
      path: '/connection/conn-1?provider_config_key=github',
      headers: { authorization: SECRET },
    });
    inFlight.catch(() => {});
    await slow.waitForRequests(1);
    shim.child.kill('SIGTERM');

    expect(await within(5_000, 'exit', shim.exited)).toBe(1);
    // The call reached the upstream (a write there may have been applied): the key that made it still calls.
    expect(shim.lines).toContainEqual(
      expect.objectContaining({
        msg: 'deprecated endpoint called',
        route: 'connection-get',
        status: 0,
        action: 'failed',
      }),
    );
    expect(ledgerEntries(dataDir)).toEqual([
      expect.objectContaining({ route: 'connection-get', calls: { '0xx': 1 } }),
    ]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('records a pipelined call the grace period cut while it waited behind another, in the ledger it writes last', async () => {
    upstream = await startUpstream((req) => req.resume());
    const silent = upstream;
    const { shim, dataDir } = await startShimWithShortGrace(silent.url);
    const get = (id: string) =>
      `GET /connection/${id}?provider_config_key=github HTTP/1.1\r\nHost: a\r\nAuthorization: ${SECRET}\r\n\r\n`;

    // RFC 9112 §9.3.2: both calls go upstream at once; the second's answer waits behind the first's.
    const client = net.connect(Number(new URL(shim.url).port), '127.0.0.1');
    client.on('error', () => {});
    client.write(get('conn-1') + get('conn-2'));
    await silent.waitForRequests(2);
    shim.child.kill('SIGTERM');

    expect(await within(5_000, 'exit', shim.exited)).toBe(1);
    client.destroy();
    const usage = shim.lines.filter((line) => line.msg === 'deprecated endpoint called');
    expect(usage.map((line) => [line.path, line.status, line.action])).toEqual([
      ['/connection/conn-1', 0, 'failed'],
      ['/connection/conn-2', 0, 'failed'],
    ]);
    expect(ledgerEntries(dataDir)).toEqual([
      expect.objectContaining({ route: 'connection-get', calls: { '0xx': 2 } }),
    ]);
    rmSync(dataDir, { recursive: true, force: true });
  });
});

describe('graceful shutdown on a stuck disk', () => {
  it('exits 1 once the cleanup after the grace period has run out of time, instead of hanging', async () => {
    const echo = await startEchoUpstream();
    try {
      const preload = new URL('./support/hang-file-writes.mjs', import.meta.url).href;
      child = await startChildShim({ SHIM_UPSTREAM_URL: echo.url, NODE_OPTIONS: `--import=${preload}` });
      const shim = child;
      expect(
        (await patchLegacyMetadata(shim.url, SECRET.slice('Bearer '.length), 'stuck-disk/1')).status,
      ).toBe(200);
      const started = performance.now();
      shim.child.kill('SIGTERM');
      // No request in flight: the drain is immediate, then the ledger's last write never returns.
      expect(await within(9_000, 'exit with a stuck ledger write', shim.exited)).toBe(1);
      expect(performance.now() - started).toBeGreaterThan(4_000);
      expect(shim.lines).toContainEqual(
        expect.objectContaining({
          level: 'error',
          msg: 'shutdown cleanup did not finish, exiting',
          afterMs: 5_000,
        }),
      );
      expectOnlyJsonLines(shim);
    } finally {
      await echo.close();
    }
  }, 15_000);
});

describe.skipIf(!HAS_REDIS_SERVER)('graceful shutdown with a hung Redis', () => {
  let redis: TestRedis | undefined;
  let echo: EchoUpstream | undefined;

  afterEach(async () => {
    redis?.resume();
    await redis?.close();
    await echo?.close();
    redis = undefined;
    echo = undefined;
  });

  it('exits 0 within the 2 s ledger deadline, reporting the updates it could not write as lost', async () => {
    redis = await startTestRedis();
    echo = await startEchoUpstream();
    child = await startChildShim({ SHIM_UPSTREAM_URL: echo.url, SHIM_REDIS_URL: redis.url });
    const shim = child;
    const adminLine = await waitForLine(shim, 'admin listening');
    // Answered from Redis once the connection is up (it comes up after the listeners, so the first look may be
    // 503 ledger_unavailable): the shutdown's write then really goes to the hung server.
    const reportUrl = `http://127.0.0.1:${adminLine.port as number}/admin/deprecations`;
    await expect.poll(async () => (await fetch(reportUrl)).status, { timeout: 5_000 }).toBe(200);
    expect((await patchLegacyMetadata(shim.url, SECRET.slice('Bearer '.length))).status).toBe(200);

    redis.pause();
    const started = performance.now();
    shim.child.kill('SIGTERM');
    expect(await within(5_000, 'exit with a hung Redis', shim.exited)).toBe(0);
    expect(performance.now() - started).toBeLessThan(3_500);
    expectOnlyJsonLines(shim);
    expect(shim.lines).toContainEqual(
      expect.objectContaining({ level: 'error', msg: 'ledger updates lost at shutdown', entries: 1 }),
    );
    expect(shim.lines).toContainEqual(expect.objectContaining({ msg: 'shutdown complete', clean: true }));
  });
});

/** Runs the entry point expecting it to refuse to start; resolves with its exit code and output. */
function runRefusingShim(env: Record<string, string>, preload: string[] = []) {
  const dataDir = mkdtempSync(join(tmpdir(), 'nango-shim-data-'));
  const started = spawn(process.execPath, [...preload, '--import', 'tsx', 'src/main.ts'], {
    cwd: new URL('..', import.meta.url),
    env: {
      PATH: process.env.PATH ?? '',
      SHIM_HOST: '127.0.0.1',
      SHIM_ADMIN_PORT: '0',
      SHIM_DATA_DIR: dataDir,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  started.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  started.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    started.once('close', (code) => resolve({ code, stdout, stderr }));
  });
  return within(10_000, 'refusing shim exit', exited).finally(() => {
    if (started.exitCode === null) started.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });
}

describe('a bad configuration', () => {
  it.each([
    ['SHIM_PORT', 'notaport', 'server.port'],
    ['SHIM_UPSTREAM_URL', 'ftp://127.0.0.1:21', 'upstream.url'],
    ['SHIM_UPSTREAM_TIMEOUT_MS', '-5', 'upstream.timeoutMs'],
    // An unencoded "/" in the password: `new URL()` threw with the URL, and Node printed it on stderr.
    ['SHIM_REDIS_URL', 'redis://:hunter2/pw@127.0.0.1:6379', 'redisUrl'],
    ['SHIM_UPSTREAM_URL', 'https://user:hunter2/pw@127.0.0.1', 'upstream.url'],
  ])('%s=%s stops the shim before it listens, naming the field', async (name, value, field) => {
    const env: Record<string, string> = { SHIM_PORT: '0', SHIM_UPSTREAM_URL: 'http://127.0.0.1:1' };
    env[name] = value;

    const { code, stdout, stderr } = await runRefusingShim(env);

    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(stdout).not.toContain('shim listening');
    const report = JSON.parse(stderr.trim().split('\n').at(-1) ?? '{}') as {
      msg?: string;
      problems?: string[];
    };
    expect(report.msg).toBe('invalid configuration');
    expect(report.problems?.join('\n')).toContain(field);
    expect(report.problems?.join('\n')).toContain(name);
    // The value is not echoed: it may hold a password.
    expect(stdout + stderr).not.toContain(value);
    expect(stdout + stderr).not.toContain('hunter2');
  });

  it('reports a start-up failure nobody expected in one line, without the properties of its error', async () => {
    // The listener cannot be created, with an error that carries a secret as `new URL()` carries its input.
    const failing =
      "import http from 'node:http'; http.createServer = () => { const error = new TypeError('Invalid URL'); " +
      "error.input = 'redis://:hunter2@127.0.0.1:6379'; throw error; };";
    const { code, stdout, stderr } = await runRefusingShim(
      { SHIM_PORT: '0', SHIM_UPSTREAM_URL: 'http://127.0.0.1:1' },
      ['--import', `data:text/javascript,${encodeURIComponent(failing)}`],
    );
    expect(code).toBe(1);
    expect(stdout).not.toContain('shim listening');
    expect(JSON.parse(stderr.trim().split('\n').at(-1) ?? '{}')).toEqual({
      level: 'fatal',
      msg: 'start-up failed',
      error: 'TypeError',
      reason: 'Invalid URL',
    });
    expect(stdout + stderr).not.toContain('hunter2');
  });

  it('names a public port already in use in one fatal line, not a stack trace', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = taken.address() as net.AddressInfo;
      const { code, stdout, stderr } = await runRefusingShim({
        SHIM_PORT: String(port),
        SHIM_UPSTREAM_URL: 'http://127.0.0.1:1',
      });
      expect(code).toBe(1);
      expect(stderr).toBe('');
      const lines = stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines.find((line) => line.msg === 'shim listener failed')).toEqual(
        expect.objectContaining({ level: 'fatal', host: '127.0.0.1', port, code: 'EADDRINUSE' }),
      );
      expect(lines.some((line) => line.msg === 'shim listening')).toBe(false);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('names the position of a JSON error in the SHIM_CONFIG file, never the text around it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nango-shim-config-'));
    const file = join(dir, 'shim.json');
    // An operator forgot the quotes around the token: V8's message quotes the characters around it.
    writeFileSync(file, '{"admin":{"token": Zq8xV3pLm2Rt7Wk9Ys4N}}');
    try {
      const { code, stdout, stderr } = await runRefusingShim({ SHIM_PORT: '0', SHIM_CONFIG: file });
      expect(code).toBe(1);
      const report = JSON.parse(stderr.trim().split('\n').at(-1) ?? '{}') as { problems?: string[] };
      expect(report.problems).toEqual([
        `SHIM_CONFIG (${file}): is not valid JSON (unexpected character at line 1, column 20)`,
      ]);
      expect(stdout + stderr).not.toMatch(/Zq8|Wk9Ys4N/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
