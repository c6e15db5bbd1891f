import { describe, expect, it } from 'vitest';
import { startChildShim } from './support/child-shim.js';
import { closedAfterEach } from './support/cleanup.js';
import { startUpstream } from './support/upstream.js';

const track = closedAfterEach();

describe('readiness during shutdown', () => {
  it('turns /readyz not-ready first, while an in-flight request still completes, then exits 0', async () => {
    // The upstream answers 800 ms late: long enough to look at readiness while the request is in flight.
    const upstream = track(
      await startUpstream((_req, res) => {
        setTimeout(() => res.end('{"slow":true}'), 800);
      }),
    );
    const shim = track(await startChildShim({ SHIM_UPSTREAM_URL: upstream.url }));
    const line = (msg: string) => shim.lines.find((each) => each.msg === msg);
    await expect.poll(() => line('admin listening')).toBeDefined();
    const admin = `http://127.0.0.1:${line('admin listening')?.port as number}`;
    expect((await fetch(`${admin}/readyz`)).status).toBe(200);

    const inFlight = fetch(`${shim.url}/connections`);
    await upstream.waitForRequests(1);
    shim.child.kill('SIGTERM');
    await expect.poll(() => line('shutting down')).toBeDefined();

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
