/**
 * Starting, sampling and stopping the bench's child processes. Every child is a plain `node` process (no
 * tsx loader in it, so the reference and the shim run the same way) with bench/probe.ts preloaded, which
 * reports its listening port and answers CPU/RSS samples over the fork IPC channel.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';
import type { ProbeMessage, ProbeRequest } from './probe.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BENCH_DIR = new URL('.', import.meta.url);
// Inside node_modules so that `http-proxy-3` resolves from the transpiled reference proxy.
const CACHE_DIR = new URL('../node_modules/.cache/nango-shim-bench/', import.meta.url);

export interface Helpers {
  probe: string;
  upstream: string;
  reference: string;
}

/** Transpiles the helper processes to plain ESM JavaScript, so they run under plain `node`. */
export function transpileHelpers(): Helpers {
  mkdirSync(CACHE_DIR, { recursive: true });
  const out = (name: keyof Helpers): string => {
    const source = readFileSync(new URL(`${name}.ts`, BENCH_DIR), 'utf8');
    const { outputText } = ts.transpileModule(source, {
      fileName: `${name}.ts`,
      compilerOptions: {
        module: ts.ModuleKind.ES2022,
        target: ts.ScriptTarget.ES2022,
        esModuleInterop: true,
      },
    });
    const file = new URL(`${name}.mjs`, CACHE_DIR);
    writeFileSync(file, outputText);
    return fileURLToPath(file);
  };
  return { probe: out('probe'), upstream: out('upstream'), reference: out('reference') };
}

export interface Sample {
  /** User + system CPU time of the whole process, microseconds. */
  cpuUs: number;
  rss: number;
  /** Highest RSS since the previous sample (the kernel's high-water mark on Linux). */
  peakRss: number;
  at: number;
}

export interface StartOptions {
  name: string;
  module: string;
  probe: string;
  env: Record<string, string>;
  execArgv?: string[];
  /**
   * A program the child's `node` runs under, with its arguments (valgrind for --instructions): the process is
   * then `wrapper… node --import probe … module`, and its pid is the wrapper's.
   */
  wrapper?: string[];
  /** How long the child may take to listen; longer under valgrind. */
  listenTimeoutMs?: number;
  /** A file descriptor for the child's stdout; ignored when absent. */
  stdout?: number;
}

const LIVE = new Set<BenchChild>();

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export class BenchChild {
  readonly name: string;
  readonly process: ChildProcess;
  /** The port of the child's first listener (the one whose `listen()` was called first). */
  readonly port: Promise<number>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly pending = new Map<number, (message: ProbeMessage & { op: 'sample' }) => void>();
  private nextId = 1;

  constructor(options: StartOptions) {
    this.name = options.name;
    // execArgv is always explicit: the bench itself runs under tsx, whose flags must not reach the children.
    const nodeArgs = ['--import', pathToFileURL(options.probe).href, ...(options.execArgv ?? [])];
    const [wrapper, ...wrapperArgs] = options.wrapper ?? [];
    this.process = fork(options.module, [], {
      cwd: ROOT,
      env: options.env,
      ...(wrapper === undefined
        ? { execArgv: nodeArgs }
        : { execPath: wrapper, execArgv: [...wrapperArgs, process.execPath, ...nodeArgs] }),
      stdio: ['ignore', options.stdout ?? 'ignore', 'inherit', 'ipc'],
    });
    LIVE.add(this);
    this.exited = new Promise((resolve) => {
      this.process.once('exit', (code, signal) => {
        LIVE.delete(this);
        resolve({ code, signal });
      });
    });
    const listening = new Promise<number>((resolve, reject) => {
      this.process.on('message', (message: ProbeMessage) => {
        if (message.op === 'listening' && message.order === 0) resolve(message.port);
        else if (message.op === 'sample') {
          this.pending.get(message.id)?.(message);
          this.pending.delete(message.id);
        }
      });
      this.process.once('error', reject);
      void this.exited.then(({ code, signal }) =>
        reject(new Error(`${this.name} exited before listening (code ${code}, signal ${signal})`)),
      );
    });
    this.port = withTimeout(listening, options.listenTimeoutMs ?? 20_000, `${this.name} listening`);
    // The rejection is reported by whoever awaits `port`; a child that exits later must not crash the bench.
    this.port.catch(() => undefined);
  }

  get alive(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  sample(): Promise<Sample> {
    const id = this.nextId++;
    const answer = new Promise<Sample>((resolve) => {
      this.pending.set(id, (message) =>
        resolve({
          cpuUs: message.userUs + message.systemUs,
          rss: message.rss,
          peakRss: message.peakRss,
          at: performance.now(),
        }),
      );
    });
    const request: ProbeRequest = { op: 'sample', id };
    this.process.send(request);
    return withTimeout(answer, 5_000, `${this.name} sample`);
  }

  /** SIGTERM, then SIGKILL if the child has not exited within `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.alive) return;
    this.process.kill('SIGTERM');
    const ended = await Promise.race([this.exited.then(() => true), delay(graceMs).then(() => false)]);
    if (!ended && this.alive) {
      this.process.kill('SIGKILL');
      await this.exited;
    }
  }
}

export async function stopAll(graceMs?: number): Promise<void> {
  await Promise.all([...LIVE].map((child) => child.stop(graceMs)));
}

/** Last resort, from a synchronous `exit` handler: nothing may outlive the bench. */
export function killAllNow(): void {
  for (const child of LIVE) if (child.alive) child.process.kill('SIGKILL');
}
