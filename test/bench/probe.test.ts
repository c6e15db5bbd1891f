import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BenchChild, stopAll, transpileHelpers } from '../../bench/children.js';

const MB = 1024 * 1024;
const dirs: string[] = [];

afterEach(async () => {
  await stopAll();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/**
 * A child that, before it listens, takes 32 MB and gives it back inside one synchronous call: scrypt with
 * N = 2^15, r = 8 allocates 128·N·r bytes in OpenSSL, writes every page and frees them before returning.
 */
function startSpikingChild(): BenchChild {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-probe-'));
  dirs.push(dir);
  const module = path.join(dir, 'spike.mjs');
  writeFileSync(
    module,
    [
      "import { scryptSync } from 'node:crypto';",
      "import http from 'node:http';",
      "scryptSync('password', 'salt', 32, { N: 2 ** 15, r: 8, maxmem: 64 * 1024 * 1024 });",
      "http.createServer().listen(0, '127.0.0.1');",
    ].join('\n'),
  );
  const { probe } = transpileHelpers();
  return new BenchChild({ name: 'spike', module, probe, env: { PATH: process.env.PATH ?? '' } });
}

describe('the probe', () => {
  it.runIf(process.platform === 'linux')(
    'reports an RSS peak that came and went between two samples, and only once',
    async () => {
      const child = startSpikingChild();
      await child.port;
      const first = await child.sample();
      expect(first.peakRss - first.rss).toBeGreaterThan(24 * MB);
      const second = await child.sample();
      expect(second.peakRss - second.rss).toBeLessThan(8 * MB);
    },
  );
});
