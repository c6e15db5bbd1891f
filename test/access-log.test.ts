import { describe, expect, it } from 'vitest';
import { sendCapture } from './support/captures.js';
import { closedAfterEach } from './support/cleanup.js';
import { type RunningShim, startShim } from './support/shim.js';
import { type RecordingUpstream, startUpstream } from './support/upstream.js';

const KEY = '9d1e5c7a-2b3f-4a6d-8e9f-0a1b2c3d4e5f';

let upstream: RecordingUpstream | undefined;
let shim: RunningShim | undefined;
const track = closedAfterEach();

async function passThroughOnce(passthroughLog: boolean) {
  upstream = track(await startUpstream((_req, res) => res.end('ok')));
  shim = track(await startShim(upstream.url, { log: { passthrough: passthroughLog } }));
  const reply = await sendCapture(shim.url, {
    name: 'pass-through',
    request: {
      method: 'GET',
      path: `/providers?secret_key=${KEY}`,
      headers: { Authorization: `Bearer ${KEY}` },
      body: null,
    },
  });
  expect(reply.status).toBe(200);
  await new Promise((resolve) => setTimeout(resolve, 20));
  return shim.logs().filter((line) => line.msg === 'request completed');
}

describe('the pass-through access log', () => {
  // A key can travel in the query string (`?secret_key=`): the line carries the path only.
  it('writes one line per pass-through request with log.passthrough, without headers, query or key', async () => {
    const lines = await passThroughOnce(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 'info',
      req: { method: 'GET', path: '/providers' },
      res: { statusCode: 200 },
    });
    expect(typeof lines[0]?.responseTime).toBe('number');
    expect(shim?.logText()).not.toContain(KEY);
    expect(JSON.stringify(lines[0])).not.toContain('authorization');
    expect(JSON.stringify(lines[0])).not.toContain('secret_key');
  });

  it('writes nothing for pass-through traffic by default', async () => {
    expect(await passThroughOnce(false)).toEqual([]);
  });
});
