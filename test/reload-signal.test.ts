import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { createConfigReloader } from '../src/reload.js';
import { type CaptureReply, sendCapture } from './support/captures.js';
import { type ChildShim, startChildShim, writeConfigFile } from './support/child-shim.js';
import { closedAfterEach } from './support/cleanup.js';
import { DEV_KEY, startFakeNango } from './support/fake-nango.js';

const track = closedAfterEach();

function patchLegacy(url: string): Promise<CaptureReply> {
  return sendCapture(url, {
    name: 'legacy patch',
    request: {
      method: 'PATCH',
      path: '/connection/metadata',
      headers: { Authorization: `Bearer ${DEV_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ connection_id: 'conn-1', provider_config_key: 'unauth', metadata: { hup: 1 } }),
    },
  });
}

describe('the cutover is a config change', () => {
  it('moves from gone to translate on SIGHUP with no restart and no failed request', async () => {
    const fake = track(await startFakeNango({ legacyRoutes: false }));
    const file = writeConfigFile({ routes: { 'connection-metadata': { stage: 'gone' } } });
    // Debug lines: the file watcher sees the same change, and whichever of the two reloads second logs
    // `config unchanged` (debug) instead of `config active`.
    const shim = track(
      await startChildShim({ SHIM_CONFIG: file, SHIM_UPSTREAM_URL: fake.url, SHIM_LOG_LEVEL: 'debug' }),
    );
    const pid = shim.child.pid;

    const gone = await patchLegacy(shim.url);
    expect(gone.status).toBe(410);
    expect(gone.headers.deprecation).toBe('@1755648000');
    expect(fake.requests).toEqual([]);

    const statuses: number[] = [];
    let done = false;
    const traffic = (async () => {
      while (!done) statuses.push((await patchLegacy((shim as ChildShim).url)).status);
    })();
    writeFileSync(file, JSON.stringify({ routes: { 'connection-metadata': { stage: 'translate' } } }));
    shim.child.kill('SIGHUP');
    const deadline = Date.now() + 5_000;
    while (!statuses.includes(200) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    done = true;
    await traffic;

    expect(statuses.filter((status) => status !== 410 && status !== 200)).toEqual([]);
    const firstServed = statuses.indexOf(200);
    expect(firstServed).toBeGreaterThanOrEqual(0);
    expect(statuses.slice(firstServed).every((status) => status === 200)).toBe(true);
    expect(fake.requests.some((r) => r.method === 'PATCH' && r.url === '/connections/metadata')).toBe(true);
    expect(shim.child.pid).toBe(pid);
    expect(shim.child.exitCode).toBeNull();
    const activations = shim.lines.filter((line) => line.msg === 'config active');
    expect(activations.length).toBeGreaterThanOrEqual(2);
    expect(new Set(activations.map((line) => line.version)).size).toBe(2);
    // The signal reloaded, or found active the version the watcher had just loaded (the watcher waits for
    // the folder to be quiet for 100 ms, so the signal usually comes first).
    const reloads = shim.lines.filter(
      (line) => line.msg === 'config active' || line.msg === 'config unchanged',
    );
    expect(
      reloads.some((line) => line.reason === 'SIGHUP' && line.version === activations.at(-1)?.version),
    ).toBe(true);
  });

  it('reloads when the config file changes, without a signal', async () => {
    const fake = track(await startFakeNango({ legacyRoutes: false }));
    const file = writeConfigFile({ routes: { 'connection-metadata': { stage: 'gone' } } });
    const shim = track(await startChildShim({ SHIM_CONFIG: file, SHIM_UPSTREAM_URL: fake.url }));
    expect((await patchLegacy(shim.url)).status).toBe(410);
    writeFileSync(file, JSON.stringify({ routes: { 'connection-metadata': { stage: 'translate' } } }));
    const deadline = Date.now() + 5_000;
    let status = 410;
    while (status === 410 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      status = (await patchLegacy(shim.url)).status;
    }
    expect(status).toBe(200);
    expect(shim.lines.filter((line) => line.msg === 'config active').at(-1)?.reason).toBe('file changed');
  });

  it('keeps serving under the old config when the new file is invalid', async () => {
    const fake = track(await startFakeNango({ legacyRoutes: false }));
    const file = writeConfigFile({ routes: { 'connection-metadata': { stage: 'gone' } } });
    const shim = track(await startChildShim({ SHIM_CONFIG: file, SHIM_UPSTREAM_URL: fake.url }));
    writeFileSync(
      file,
      '{"routes": {"connection-metadata": {"stage": "translate", "canaryPercent": 400}}, "oops": 1}',
    );
    shim.child.kill('SIGHUP');
    const deadline = Date.now() + 5_000;
    while (!shim.lines.some((line) => line.msg === 'config reload refused') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const refusal = shim.lines.find((line) => line.msg === 'config reload refused');
    expect(refusal?.problems).toEqual(
      expect.arrayContaining([expect.stringMatching(/canaryPercent/), 'oops: unknown key']),
    );
    expect((await patchLegacy(shim.url)).status).toBe(410);
  });

  it('refuses a file that is not JSON by its position, never quoting the admin token in it', async () => {
    const fake = track(await startFakeNango({ legacyRoutes: false }));
    const file = writeConfigFile({ routes: { 'connection-metadata': { stage: 'gone' } } });
    const shim = track(await startChildShim({ SHIM_CONFIG: file, SHIM_UPSTREAM_URL: fake.url }));
    // An operator forgets the quotes around the token; V8's JSON.parse message quoted the text around it.
    writeFileSync(file, '{\n  "admin": {"token": Zq8xV3pLm2Rt7Wk9Ys4N}\n}');
    shim.child.kill('SIGHUP');
    await expect
      .poll(() => shim.lines.find((line) => line.msg === 'config reload refused'), { timeout: 5_000 })
      .toBeDefined();
    const refusal = shim.lines.find((line) => line.msg === 'config reload refused');
    expect(refusal?.problems).toEqual([
      `SHIM_CONFIG (${file}): is not valid JSON (unexpected character at line 2, column 22)`,
    ]);
    expect(JSON.stringify(shim.lines)).not.toMatch(/Zq8|Wk9Ys4N/);
    expect((await patchLegacy(shim.url)).status).toBe(410);
  });

  it('applies a new server.bodyLimitBytes at once and keeps a restart-only change pending, as it logs', async () => {
    const fake = track(await startFakeNango({ legacyRoutes: false }));
    const file = writeConfigFile({ routes: { 'connection-metadata': { stage: 'translate' } } });
    const shim = track(await startChildShim({ SHIM_CONFIG: file, SHIM_UPSTREAM_URL: fake.url }));
    expect((await patchLegacy(shim.url)).status).toBe(200);
    writeFileSync(
      file,
      JSON.stringify({
        routes: { 'connection-metadata': { stage: 'translate' } },
        server: { bodyLimitBytes: 10 },
        upstream: { timeoutMs: 1234 },
      }),
    );
    // The body limit is read per request: the next call is held to it.
    await expect.poll(async () => (await patchLegacy(shim.url)).status, { timeout: 5_000 }).toBe(413);
    await expect
      .poll(() =>
        shim.lines.find((line) => line.msg === 'config sections changed that apply only after a restart'),
      )
      .toMatchObject({ keys: ['upstream.timeoutMs'] });
    const adminLine = shim.lines.find((line) => line.msg === 'admin listening') as { port: number };
    const shown = (await (await fetch(`http://127.0.0.1:${adminLine.port}/admin/config`)).json()) as {
      config: { upstream: { timeoutMs: number }; server: { bodyLimitBytes: number } };
      pendingRestart: string[];
    };
    expect(shown.config.upstream.timeoutMs).toBe(30_000);
    expect(shown.config.server.bodyLimitBytes).toBe(10);
    expect(shown.pendingRestart).toEqual(['upstream.timeoutMs']);
  });
});

/** A Kubernetes ConfigMap volume: `<dir>/shim.json -> ..data/shim.json`, `..data -> ..<version>`. */
function configMapVolume(content: unknown): { dir: string; file: string; update(content: unknown): void } {
  const dir = mkdtempSync(join(tmpdir(), 'nango-shim-configmap-'));
  let version = 0;
  let current: string | undefined;
  function publish(next: unknown): string {
    version += 1;
    const folder = `..2026_01_20_00_00_0${version}.${process.pid}`;
    mkdirSync(join(dir, folder));
    writeFileSync(join(dir, folder, 'shim.json'), JSON.stringify(next));
    return folder;
  }
  current = publish(content);
  symlinkSync(current, join(dir, '..data'));
  symlinkSync('..data/shim.json', join(dir, 'shim.json'));
  return {
    dir,
    file: join(dir, 'shim.json'),
    // What kubelet does: a new folder, a new link beside `..data`, renamed over it at once, the old folder removed.
    update(next) {
      const folder = publish(next);
      symlinkSync(folder, join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      rmSync(join(dir, current as string), { recursive: true });
      current = folder;
    },
  };
}

describe('a SIGHUP while the shim starts', () => {
  it('is remembered and carried out once the reloader is ready, instead of ending the process', async () => {
    const hold = mkdtempSync(join(tmpdir(), 'nango-shim-hold-'));
    const preload = new URL('./support/hold-redis-import.mjs', import.meta.url).href;
    let reached: Promise<void> = Promise.reject(new Error('the shim was not spawned'));
    reached.catch(() => {});
    const starting = startChildShim(
      {
        NODE_OPTIONS: `--import=${preload}`,
        SHIM_TEST_HOLD_DIR: hold,
        // Nothing listens there: the import of the Redis client is what the test holds, not a connection.
        SHIM_REDIS_URL: 'redis://127.0.0.1:1',
        SHIM_LOG_LEVEL: 'debug',
      },
      15_000,
      (child) => {
        reached = (async () => {
          const deadline = Date.now() + 10_000;
          while (!existsSync(join(hold, 'reached'))) {
            if (Date.now() > deadline) throw new Error('the start-up never reached the Redis import');
            await sleep(10);
          }
          // Start-up is held at `await import('./redis.js')`, before the reloader exists.
          child.kill('SIGHUP');
          await sleep(200);
          writeFileSync(join(hold, 'release'), '');
        })();
      },
    );
    const shim = track(await starting);
    await reached;
    await expect
      .poll(() => shim.lines.some((line) => line.msg === 'config unchanged' && line.reason === 'SIGHUP'), {
        timeout: 5_000,
      })
      .toBe(true);
    expect(shim.child.exitCode).toBeNull();
    expect(shim.child.signalCode).toBeNull();
  });
});

describe('the config file watcher', () => {
  it('reloads when a ConfigMap volume swaps its ..data link, again and again', async () => {
    const fake = track(await startFakeNango({ legacyRoutes: false }));
    const volume = configMapVolume({ routes: { 'connection-metadata': { stage: 'translate' } } });
    const shim = track(await startChildShim({ SHIM_CONFIG: volume.file, SHIM_UPSTREAM_URL: fake.url }));
    expect((await patchLegacy(shim.url)).status).toBe(200);

    volume.update({ routes: { 'connection-metadata': { stage: 'gone' } } });
    await expect.poll(async () => (await patchLegacy(shim.url)).status, { timeout: 5_000 }).toBe(410);
    volume.update({ routes: { 'connection-metadata': { stage: 'translate' } } });
    await expect.poll(async () => (await patchLegacy(shim.url)).status, { timeout: 5_000 }).toBe(200);

    const activations = shim.lines.filter((line) => line.msg === 'config active');
    expect(activations.map((line) => line.reason)).toEqual(['start', 'file changed', 'file changed']);
    expect(shim.lines.some((line) => line.msg === 'config reload refused')).toBe(false);
    expect(shim.child.exitCode).toBeNull();
  });

  function watchInProcess(file: string) {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger('debug', { write: (line: string) => lines.push(JSON.parse(line)) } as never);
    const load = () => loadConfig({ SHIM_CONFIG: file });
    const configs = { current: load() };
    const reloader = createConfigReloader({ configs, load, logger });
    const stop = reloader.watchFile(file);
    return { configs, lines, stop, stage: () => configs.current.config.routes['connection-metadata'].stage };
  }

  it('loads an edit made after the start-up read the file and before the watch began', () => {
    const file = writeConfigFile({ routes: { 'connection-metadata': { stage: 'translate' } } });
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger('debug', { write: (line: string) => lines.push(JSON.parse(line)) } as never);
    const load = () => loadConfig({ SHIM_CONFIG: file });
    const configs = { current: load() };
    // Start-up opens the ledger and Redis between its read and the watch: an edit then raises no event.
    writeFileSync(file, JSON.stringify({ routes: { 'connection-metadata': { stage: 'gone' } } }));
    const stop = createConfigReloader({ configs, load, logger }).watchFile(file);
    try {
      expect(configs.current.config.routes['connection-metadata'].stage).toBe('gone');
      expect(lines.filter((line) => line.msg === 'config active').map((line) => line.reason)).toEqual([
        'file changed',
      ]);
    } finally {
      stop();
    }
  });

  it('logs nothing above debug when the file is as it was read at start-up', () => {
    const file = writeConfigFile({ routes: { 'connection-metadata': { stage: 'translate' } } });
    const watched = watchInProcess(file);
    try {
      expect(watched.lines.map((line) => line.msg)).toEqual(['config unchanged']);
      expect(watched.lines[0]?.level).toBe('debug');
    } finally {
      watched.stop();
    }
  });

  it('reloads when the file a link points to is edited in place', async () => {
    const target = writeConfigFile({ routes: { 'connection-metadata': { stage: 'translate' } } });
    const link = join(mkdtempSync(join(tmpdir(), 'nango-shim-link-')), 'shim.json');
    symlinkSync(target, link);
    const watched = watchInProcess(link);
    try {
      writeFileSync(target, JSON.stringify({ routes: { 'connection-metadata': { stage: 'gone' } } }));
      await expect.poll(watched.stage, { timeout: 5_000 }).toBe('gone');
    } finally {
      watched.stop();
    }
  });

  it('waits out a file missing mid-swap without refusing, then loads what replaces it', async () => {
    const file = writeConfigFile({ routes: { 'connection-metadata': { stage: 'translate' } } });
    const watched = watchInProcess(file);
    try {
      const before = watched.configs.current;
      unlinkSync(file);
      await expect
        .poll(() => watched.lines.some((line) => line.msg === 'config file missing'), { timeout: 5_000 })
        .toBe(true);
      expect(watched.configs.current).toBe(before);
      // An editor's save: a temporary file renamed over the name.
      writeFileSync(`${file}.tmp`, JSON.stringify({ routes: { 'connection-metadata': { stage: 'gone' } } }));
      renameSync(`${file}.tmp`, file);
      await expect.poll(watched.stage, { timeout: 5_000 }).toBe('gone');
      expect(watched.lines.filter((line) => line.msg === 'config reload refused')).toEqual([]);
      expect(watched.lines.filter((line) => line.msg === 'config active')).toHaveLength(1);
    } finally {
      watched.stop();
    }
  });
});
