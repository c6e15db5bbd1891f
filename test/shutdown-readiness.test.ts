import { afterEach, describe, expect, it } from 'vitest';
import { type ChildShim, startChildShim } from './support/child-shim.js';
import { type RecordingUpstream, startUpstream } from './support/upstream.js';

let upstream: RecordingUpstream | undefined;
let shim: ChildShim | undefined;

afterEach(async () => {
  await shim?.stop();
  await upstream?.close();
  shim = undefined;
  upstream = undefined;
});

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('readiness during shutdown', () => {
  it('turns /readyz not-ready first, while an in-flight request still completes, then exits 0', async () => {
    // The upstream answers 800 ms late: long enough to look at readiness while the request is in flight.
    upstream = await startUpstream((_req, res) => {
      setTimeout(() => res.end('{"slow":true}'), 800);
    });
    shim = await startChildShim({ SHIM_UPSTREAM_URL: upstream.url });
    const adminPort = await waitFor(
      'the admin listener',
      () => shim?.lines.find((line) => line.msg === 'admin listening')?.port as number | undefined,
    );
    const admin = `http://127.0.0.1:${adminPort}`;
    expect((await fetch(`${admin}/readyz`)).status).toBe(200);

    const inFlight = fetch(`${shim.url}/connections`);
    await upstream.waitForRequests(1);
    shim.child.kill('SIGTERM');
    await waitFor('shutting down', () => shim?.lines.find((line) => line.msg === 'shutting down'));

    const readiness = await fetch(`${admin}/readyz`);
    expect(readiness.status).toBe(503);
    expect(await readiness.json()).toEqual({ status: 'draining' });
    expect((await fetch(`${admin}/healthz`)).status).toBe(200);

    const answer = await inFlight;
    expect(answer.status).toBe(200);
    expect(await answer.text()).toBe('{"slow":true}');
    expect(await shim.exited).toBe(0);
  });
});
