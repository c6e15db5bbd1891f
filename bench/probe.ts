/**
 * Preloaded (`node --import`) into every process the bench starts: the upstream, the reference proxy and
 * the shim. It never touches the code under test; it only talks to the bench over the fork IPC channel:
 *
 * - reports the port of every server that starts listening, numbered in the order `listen()` was called
 *   (the shim opens its public listener before its admin listener), so the bench never parses logs;
 * - answers `sample` with the process's own user+system CPU time and RSS, plus the highest RSS since the
 *   previous sample;
 * - ends the process when the bench goes away (IPC disconnect), so a killed bench leaves no orphans.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';

export type ProbeRequest = { op: 'sample'; id: number };

export type ProbeMessage =
  | { op: 'listening'; port: number; order: number }
  | { op: 'sample'; id: number; userUs: number; systemUs: number; rss: number; peakRss: number };

function send(message: ProbeMessage): void {
  if (process.connected) process.send?.(message);
}

const originalListen = net.Server.prototype.listen;
let listenCalls = 0;
net.Server.prototype.listen = function listen(this: net.Server, ...args: unknown[]) {
  const order = listenCalls++;
  this.once('listening', () => {
    const address = this.address();
    if (address !== null && typeof address === 'object') send({ op: 'listening', port: address.port, order });
  });
  return (originalListen as (...rest: unknown[]) => net.Server).apply(this, args);
} as typeof net.Server.prototype.listen;

/** Linux's own high-water mark of the process's RSS (VmHWM), which the kernel keeps at every page fault. */
function kernelPeakRss(): number | undefined {
  try {
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Starts the kernel's high-water mark again from the current RSS (proc(5), clear_refs: "5"). */
function resetKernelPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/**
 * The highest RSS since the previous call. A sampler on the event loop misses a peak that comes and goes
 * between two of its ticks, or inside one long synchronous stretch (a major GC, a large body): the kernel's
 * mark does not, so it is used wherever it can be read and reset, and the sampler only elsewhere.
 */
function createPeakRss(): () => number {
  if (resetKernelPeakRss() && kernelPeakRss() !== undefined) {
    return function kernelPeakSinceLast() {
      const peak = Math.max(kernelPeakRss() ?? 0, process.memoryUsage.rss());
      resetKernelPeakRss();
      return peak;
    };
  }
  let peakRss = process.memoryUsage.rss();
  const sampler = setInterval(() => {
    const rss = process.memoryUsage.rss();
    if (rss > peakRss) peakRss = rss;
  }, 100);
  sampler.unref();
  return function sampledPeakSinceLast() {
    const rss = process.memoryUsage.rss();
    const peak = Math.max(peakRss, rss);
    peakRss = rss;
    return peak;
  };
}

const peakRssSinceLast = createPeakRss();

process.on('message', (message: ProbeRequest) => {
  if (message?.op !== 'sample') return;
  const cpu = process.cpuUsage();
  const rss = process.memoryUsage.rss();
  const peakRss = peakRssSinceLast();
  send({ op: 'sample', id: message.id, userUs: cpu.user, systemUs: cpu.system, rss, peakRss });
});

// A process with no SIGTERM handler of its own (the upstream, the reference) exits normally on SIGTERM, so
// that `--cpu-prof` gets to write its profile; the shim's own handler drains first and exits itself.
function onSigterm(): void {
  if (process.listenerCount('SIGTERM') === 1) process.exit(0);
}
process.on('SIGTERM', onSigterm);

process.once('disconnect', () => {
  // SIGTERM first so the shim drains and writes its CPU profile; a hard exit if that takes too long.
  setTimeout(() => process.exit(1), 3000).unref();
  process.kill(process.pid, 'SIGTERM');
});

// The IPC channel must never be what keeps a process alive.
process.channel?.unref();
