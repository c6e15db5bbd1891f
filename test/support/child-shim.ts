import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MAIN = new URL('../../src/main.ts', import.meta.url).pathname;

export interface ChildShim {
  child: ChildProcess;
  url: string;
  /** Every stdout line, parsed where it is JSON. */
  lines: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
  /** stop(), for closedAfterEach. */
  close(): Promise<void>;
}

/** Writes a config file for SHIM_CONFIG in a fresh temporary folder and returns its path. */
export function writeConfigFile(content: unknown): string {
  const file = join(mkdtempSync(join(tmpdir(), 'nango-shim-')), 'shim.json');
  writeFileSync(file, JSON.stringify(content));
  return file;
}

/** Runs the real entry point (src/main.ts through tsx) on port 0 and waits for its "shim listening" line. */
export async function startChildShim(
  env: Record<string, string>,
  timeoutMs = 15_000,
  /** Called with the process as soon as it is spawned, for a test that acts while it starts. */
  onSpawn?: (child: ChildProcess) => void,
): Promise<ChildShim> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    env: {
      PATH: process.env.PATH ?? '',
      SHIM_HOST: '127.0.0.1',
      SHIM_PORT: '0',
      SHIM_ADMIN_PORT: '0',
      SHIM_DATA_DIR: mkdtempSync(join(tmpdir(), 'nango-shim-data-')),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  onSpawn?.(child);
  const lines: Array<Record<string, unknown>> = [];
  let buffered = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const listening = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the shim did not start in time')), timeoutMs);
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline = buffered.indexOf('\n');
      while (newline !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          lines.push(parsed);
          if (parsed.msg === 'shim listening') {
            clearTimeout(timer);
            resolve(parsed.port as number);
          }
        } catch {
          lines.push({ unparsed: line });
        }
        newline = buffered.indexOf('\n');
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the shim exited with ${code} before listening`));
    });
  });
  const port = await listening;
  async function stop(): Promise<number | null> {
    if (child.exitCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }
  return {
    child,
    url: `http://127.0.0.1:${port}`,
    lines,
    exited,
    stop,
    async close() {
      await stop();
    },
  };
}
