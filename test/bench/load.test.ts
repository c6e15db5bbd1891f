import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { failedRequests, runLoad } from '../../bench/load.js';

const GET = { method: 'GET' as const, path: '/', headers: {} };

let server: http.Server | undefined;

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

/**
 * A server that answers 200, except on every `failEvery`-th request: it closes the connection (`drop`) or
 * never answers (`hang`).
 */
async function start(
  failEvery = 0,
  how: 'drop' | 'hang' = 'drop',
): Promise<{ url: string; dropped: () => number }> {
  let seen = 0;
  let dropped = 0;
  server = http.createServer((req, res) => {
    seen += 1;
    if (failEvery > 0 && seen % failEvery === 0) {
      dropped += 1;
      if (how === 'drop') req.socket.destroy();
      return;
    }
    res.end('{"ok":true}');
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, dropped: () => dropped };
}

describe('runLoad', () => {
  it('counts a request whose connection was closed without an answer as failed', async () => {
    const { url, dropped } = await start(25);
    const load = await runLoad(url, GET, { connections: 10, seconds: 0.5 });
    // autocannon itself sees no error here: it reconnects and carries on.
    expect(load.errors).toBe(0);
    expect(load.non2xx).toBe(0);
    expect(dropped()).toBeGreaterThan(0);
    expect(load.unanswered).toBeGreaterThan(0);
    expect(load.unanswered).toBeLessThanOrEqual(dropped());
    expect(failedRequests(load)).toBe(load.unanswered);
  });

  it('counts a request still waiting for its answer when a timed run stops as failed', async () => {
    // The 5th request hangs; autocannon's 10 s timeout cannot fire in a 1.5 s run.
    const { url } = await start(5, 'hang');
    const load = await runLoad(url, GET, { connections: 1, seconds: 1.5 });
    expect(load.responses).toBe(4);
    expect(load.timeouts).toBe(0);
    expect(load.stalled).toBe(1);
    expect(failedRequests(load)).toBe(1);
  });

  it('finds nothing unanswered when every request is answered, by duration or by amount', async () => {
    const { url } = await start();
    const timed = await runLoad(url, GET, { connections: 10, seconds: 0.5 });
    expect(timed.responses).toBeGreaterThan(0);
    expect(failedRequests(timed)).toBe(0);
    expect(timed.stalled).toBe(0);
    const counted = await runLoad(url, GET, { connections: 10, seconds: 1, amount: 500 });
    expect(counted.responses).toBe(500);
    expect(failedRequests(counted)).toBe(0);
  });
});
