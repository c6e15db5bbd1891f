import type { ServerResponse } from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { fingerprintKey } from '../src/api-key.js';
import { createLogger } from '../src/logger.js';
import { createUsageLog, settleValidation, type UsageEvent, type ValidationReport } from '../src/usage.js';
import { sendCapture } from './support/captures.js';
import { closedAfterEach } from './support/cleanup.js';
import { DEV_KEY, type FakeNango, startFakeNango } from './support/fake-nango.js';
import { type RunningShim, startShim } from './support/shim.js';
import { startUpstream } from './support/upstream.js';

let fake: FakeNango | undefined;
let shim: RunningShim | undefined;
const track = closedAfterEach();

async function setUp() {
  fake = track(await startFakeNango());
  shim = track(await startShim(fake.url));
  return { fake, shim };
}

async function usageLines(running: RunningShim, count: number) {
  const deadline = Date.now() + 2_000;
  let lines = running.logs().filter((line) => line.msg === 'deprecated endpoint called');
  while (lines.length < count && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    lines = running.logs().filter((line) => line.msg === 'deprecated endpoint called');
  }
  return lines;
}

describe('the usage log line', () => {
  it('names the route, the fingerprint, the client and the outcome, never the key', async () => {
    const { shim } = await setUp();
    await sendCapture(shim.url, {
      name: 'sdk get',
      request: {
        method: 'GET',
        path: '/connection/conn-1?provider_config_key=unauth',
        headers: {
          Authorization: `Bearer ${DEV_KEY}`,
          'User-Agent': 'nango-node-client/0.66.2 (linux; node.js/20)',
        },
        body: null,
      },
    });
    const [line] = await usageLines(shim, 1);
    expect(line).toMatchObject({
      level: 'info',
      msg: 'deprecated endpoint called',
      route: 'connection-get',
      method: 'GET',
      // The legacy path the client called, not the successor's the shim streamed to.
      path: '/connection/conn-1',
      fingerprint: fingerprintKey(DEV_KEY),
      userAgent: 'nango-node-client/0.66.2 (linux; node.js/20)',
      status: 200,
      stage: 'translate',
      action: 'translated',
    });
    expect(typeof line?.durationMs).toBe('number');
    expect(shim.logText()).not.toContain(DEV_KEY);
  });

  it('records a client that left before any answer as client-closed with status 0, not as a success', async () => {
    const { fake, shim } = await setUp();
    const { port } = new URL(shim.url);
    await new Promise<void>((resolve) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => {
        socket.write(
          `PATCH /connection/metadata HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${DEV_KEY}\r\n` +
            'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"connection_id"',
          () => setTimeout(() => socket.destroy(), 50),
        );
      });
      socket.on('close', () => resolve());
    });
    const [line] = await usageLines(shim, 1);
    expect(line).toMatchObject({ route: 'connection-metadata', status: 0, action: 'client-closed' });
    expect(fake.requests).toEqual([]);
  });

  it('records every pipelined call of a client that left before their answers, and abandons them upstream', async () => {
    const held: ServerResponse[] = [];
    const upstream = track(
      await startUpstream((req, res) => {
        req.resume();
        held.push(res);
      }),
    );
    const running = track(await startShim(upstream.url));
    const get = (id: string) =>
      `GET /connection/${id}?provider_config_key=unauth HTTP/1.1\r\nHost: a\r\n` +
      `Authorization: Bearer ${DEV_KEY}\r\n\r\n`;

    // RFC 9112 §9.3.2: the second answer waits behind the first, though both calls went upstream at once.
    const client = net.connect(Number(new URL(running.url).port), '127.0.0.1');
    client.on('error', () => {});
    client.write(get('a') + get('b'));
    await expect.poll(() => upstream.requests.length).toBe(2);
    client.destroy();

    const lines = await usageLines(running, 2);
    expect(lines.map((line) => [line.path, line.status, line.action])).toEqual([
      ['/connection/a', 0, 'client-closed'],
      ['/connection/b', 0, 'client-closed'],
    ]);
    await expect.poll(() => running.shim.inFlight()).toBe(0);
    // Neither upstream request is left running for an answer nobody will read.
    await expect.poll(() => held.filter((res) => res.destroyed).length).toBe(2);
  });
});

describe('the usage line writer', () => {
  /** A logger like the shim's, writing into an array. */
  function capture(level: 'info' | 'warn' = 'info') {
    const lines: string[] = [];
    const logger = createLogger(level, { write: (line: string) => lines.push(line) });
    return { logger, lines };
  }
  const base: UsageEvent = {
    routeId: 'connection-metadata',
    method: 'PATCH',
    path: '/connection/metadata',
    fingerprint: '586560f12c102e47',
    userAgent: 'nango-node/0.66.2',
    status: 200,
    durationMs: 1.234,
    stage: 'translate',
    action: 'translated',
    at: 0,
  };
  const events: Array<[string, UsageEvent]> = [
    ['a translated call', base],
    ['no key and no user agent', { ...base, fingerprint: undefined, userAgent: undefined, status: 401 }],
    [
      'a user agent with quotes, controls and non-ASCII',
      { ...base, userAgent: 'x "q" \\ \u0001\n\t é 🚀 \ud800 </script>' },
    ],
    [
      'a validate-stage report',
      {
        ...base,
        stage: 'validate',
        action: 'passed-through',
        validation: {
          predictedStatus: undefined,
          predictedCode: undefined,
          predictedBy: 'successor',
          actualStatus: 200,
          agrees: true,
        },
      },
    ],
    [
      'a client that left',
      { ...base, status: 0, action: 'client-closed', durationMs: 1e-7, path: '/connection/a%2Fb' },
    ],
  ];

  it.each(events)('writes what pino writes for %s, byte for byte', (_name, event) => {
    const { logger, lines } = capture();
    createUsageLog(logger).record(event);
    logger.info(
      {
        route: event.routeId,
        method: event.method,
        path: event.path,
        fingerprint: event.fingerprint ?? null,
        userAgent: event.userAgent ?? null,
        status: event.status,
        durationMs: event.durationMs,
        stage: event.stage,
        action: event.action,
        ...(event.validation ? { validation: event.validation } : {}),
      },
      'deprecated endpoint called',
    );
    const [fast, viaPino] = lines.map((line) => line.replace(/"time":\d+/, '"time":0'));
    expect(lines).toHaveLength(2);
    expect(fast).toBe(viaPino);
    expect(JSON.parse(fast ?? '')).toMatchObject({
      level: 'info',
      service: 'nango-shim',
      route: event.routeId,
    });
  });

  it('writes nothing when the level is above info', () => {
    const { logger, lines } = capture('warn');
    createUsageLog(logger).record(base);
    expect(lines).toEqual([]);
    logger.level = 'info';
    createUsageLog(logger).record(base);
    expect(lines).toHaveLength(1);
  });
});

describe('settleValidation', () => {
  const settled = (report: Omit<ValidationReport, 'actualStatus' | 'agrees'>, actual: number) =>
    settleValidation(report, actual).agrees;
  const shim = { predictedStatus: 400, predictedCode: 'invalid_body', predictedBy: 'shim' } as const;
  const refused = { predictedStatus: 400, predictedCode: 'invalid_body', predictedBy: 'successor' } as const;
  const judged = { predictedStatus: undefined, predictedCode: undefined, predictedBy: 'successor' } as const;
  const same = {
    predictedStatus: undefined,
    predictedCode: undefined,
    predictedBy: 'same-controller',
  } as const;

  it('holds a local answer to the very status the legacy route gave', () => {
    expect([400, 401, 200].map((actual) => settled(shim, actual))).toEqual([true, false, false]);
  });

  it("holds a successor's refusal to its status, or to what Nango answers before it reads the body", () => {
    expect([400, 401, 403, 429, 200, 404, 500].map((actual) => settled(refused, actual))).toEqual([
      true,
      true,
      true,
      true,
      false,
      false,
      false,
    ]);
  });

  it('flags a forwarded call the legacy route refused as invalid', () => {
    expect([200, 404, 401, 400, 415].map((actual) => settled(judged, actual))).toEqual([
      true,
      true,
      true,
      false,
      false,
    ]);
  });

  it("takes the legacy controller's answer as the translation's own", () => {
    expect([200, 400, 415, 500].map((actual) => settled(same, actual))).toEqual([true, true, true, true]);
  });
});
