// Module hooks for a child shim: the start-up's `await import('./redis.js')` waits, after writing
// `$SHIM_TEST_HOLD_DIR/reached`, until `$SHIM_TEST_HOLD_DIR/release` exists (10 s at most), so a test can act
// at a known point of the start-up. Hooks run on their own thread: the shim's event loop is free meanwhile.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const HOLD_MS = 10_000;

export async function load(url, context, nextLoad) {
  const dir = process.env.SHIM_TEST_HOLD_DIR;
  if (dir && /\/src\/redis\.ts$/.test(new URL(url).pathname)) {
    writeFileSync(join(dir, 'reached'), '');
    const deadline = Date.now() + HOLD_MS;
    while (!existsSync(join(dir, 'release')) && Date.now() < deadline) await sleep(10);
  }
  return nextLoad(url, context);
}
