import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Whether a `redis-server` binary is on PATH; the Redis tests are skipped without one. */
export const HAS_REDIS_SERVER = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;

if (!HAS_REDIS_SERVER) {
  console.warn(
    'redis-server is not on PATH: the Redis tests are skipped (apt-get install -y redis-server to run them)',
  );
}

export interface TestRedis {
  /** `unix:///…/redis.sock`: the shim's own URL form for a local socket. */
  url: string;
  /** Stops the server process (SIGKILL: nothing is saved, as in a crash). */
  stop(): Promise<void>;
  /** Starts it again on the same socket, empty (no persistence). */
  start(): Promise<void>;
  /**
   * Freezes the server (SIGSTOP): its connections stay open and the kernel still accepts bytes, but nothing is
   * answered, as with a hung Redis. Resume it in the test's cleanup.
   */
  pause(): void;
  /** Lets a paused server run again (SIGCONT); harmless when it is not paused. */
  resume(): void;
  close(): Promise<void>;
}

/**
 * A private redis-server for one test file: no TCP port at all (`--port 0`), a unix socket in a fresh
 * temporary folder (so no port is picked and nothing races), no persistence.
 */
export async function startTestRedis(): Promise<TestRedis> {
  const folder = mkdtempSync(join(tmpdir(), 'nango-shim-redis-'));
  const socket = join(folder, 'redis.sock');
  let child: ChildProcess | undefined;

  async function start(): Promise<void> {
    const server = spawn(
      'redis-server',
      [
        '--port',
        '0',
        '--unixsocket',
        socket,
        '--unixsocketperm',
        '700',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        folder,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = server;
    await new Promise<void>((resolve, reject) => {
      let output = '';
      const timer = setTimeout(() => {
        server.kill('SIGKILL');
        reject(new Error(`redis-server did not start: ${output}`));
      }, 10_000);
      server.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString('utf8');
        if (/ready to accept connections/i.test(output)) {
          clearTimeout(timer);
          resolve();
        }
      });
      server.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}: ${output}`));
      });
    });
  }

  async function stop(): Promise<void> {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill('SIGCONT');
    running.kill('SIGKILL');
    await exited;
  }

  await start();
  return {
    url: `unix://${socket}`,
    stop,
    start,
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      if (child && child.exitCode === null) child.kill('SIGCONT');
    },
    async close() {
      await stop();
      rmSync(folder, { recursive: true, force: true });
    },
  };
}
