import { randomUUID } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { fingerprintKey } from '../src/api-key.js';
import { closedAfterEach, closeWithSockets } from './support/cleanup.js';
import { type RunningShim, startShim } from './support/shim.js';
import { listen } from './support/upstream.js';

/**
 * The hostile run: upstream faults of every kind, chosen at random per request, under concurrent mixed
 * client traffic (translated writes, invalid bodies, pass-through reads, smuggling attempts). Afterwards:
 * the shim is alive, every answer was one a client can act on, no write reached the upstream twice, no
 * invalid body reached it, and no key appears in anything the shim wrote. Bounded in count and time.
 */

type Fault = 'ok' | 'html-502' | 'gzip' | 'silent' | 'close' | 'reset-mid-body' | 'trickle' | 'slow-ok';
const FAULTS: Fault[] = ['ok', 'html-502', 'gzip', 'silent', 'close', 'reset-mid-body', 'trickle', 'slow-ok'];
const TIMEOUT_MS = 300;

/** A seeded generator, so a failing run can be replayed (the seed is in the test name). */
function prng(seed: number) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

interface ChaosUpstream {
  url: string;
  writes: Map<string, number>;
  invalidBodies: string[];
  close(): Promise<void>;
}

async function startChaosUpstream(random: () => number): Promise<ChaosUpstream> {
  const writes = new Map<string, number>();
  const invalidBodies: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      if (req.url === '/connections/metadata') {
        try {
          const parsed = JSON.parse(body) as { metadata?: { marker?: string } };
          const marker = parsed.metadata?.marker;
          if (typeof marker === 'string') writes.set(marker, (writes.get(marker) ?? 0) + 1);
          if (typeof parsed.metadata !== 'object' || parsed.metadata === null) invalidBodies.push(body);
        } catch {
          invalidBodies.push(body);
        }
      }
      const fault = FAULTS[Math.floor(random() * FAULTS.length)] as Fault;
      const ok = Buffer.from(req.url === '/connections/metadata' ? body : '{"connections":[]}');
      switch (fault) {
        case 'ok':
          res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end(ok);
          return;
        case 'slow-ok':
          setTimeout(
            () => res.writeHead(200, { 'content-type': 'application/json' }).end(ok),
            TIMEOUT_MS / 3,
          );
          return;
        case 'html-502':
          res.writeHead(502, { 'content-type': 'text/html' }).end('<html><body>Bad gateway</body></html>');
          return;
        case 'gzip':
          res
            .writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
            .end(gzipSync(ok));
          return;
        case 'silent':
          return;
        case 'close':
          req.socket.destroy();
          return;
        case 'reset-mid-body':
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': ok.length + 50 });
          res.write(ok.subarray(0, 5), () => req.socket.resetAndDestroy());
          return;
        case 'trickle': {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': ok.length });
          let sent = 0;
          const drip = setInterval(() => {
            if (sent >= ok.length || res.destroyed) return void clearInterval(drip);
            res.write(ok.subarray(sent, sent + 1));
            sent += 1;
          }, 40);
          return;
        }
      }
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    writes,
    invalidBodies,
    close: () => closeWithSockets(server, sockets),
  };
}

/** One exchange; `cut` when the answer broke off after its status line (a streamed answer the upstream cut). */
function exchange(
  url: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; cut: boolean }> {
  return new Promise((resolve) => {
    const req = http.request(`${url}${path}`, { method, headers, agent: false, timeout: 3_000 }, (res) => {
      res.on('data', () => {});
      res.on('error', () => resolve({ status: res.statusCode ?? 0, cut: true }));
      res.on('aborted', () => resolve({ status: res.statusCode ?? 0, cut: true }));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, cut: !res.complete }));
    });
    req.on('timeout', () => req.destroy(new Error('client timeout')));
    req.on('error', () => resolve({ status: 0, cut: true }));
    req.end(body);
  });
}

function rawExchange(url: string, bytes: string): Promise<string> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    let text = '';
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(bytes));
    socket.setTimeout(2_000, () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(text));
  });
}

let upstream: ChaosUpstream | undefined;
let shim: RunningShim | undefined;
const track = closedAfterEach();

const SEED = 20261126;

describe(`a hostile run (seed ${SEED})`, () => {
  it('leaves the shim alive, every answer defined, no write doubled, no invalid body forwarded, no key out', async () => {
    const random = prng(SEED);
    upstream = track(await startChaosUpstream(random));
    shim = track(await startShim(upstream.url, { upstream: { timeoutMs: TIMEOUT_MS } }));
    const keys = Array.from({ length: 4 }, () => randomUUID());
    const statuses: Array<{ kind: string; status: number }> = [];
    const markers: string[] = [];
    const deadline = Date.now() + 4_000;
    let sent = 0;

    const worker = async () => {
      while (Date.now() < deadline && sent < 600) {
        sent += 1;
        const key = keys[Math.floor(random() * keys.length)] as string;
        const roll = random();
        const headers = { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' };
        if (roll < 0.45) {
          const marker = randomUUID();
          markers.push(marker);
          const body = JSON.stringify({
            connection_id: 'c-1',
            provider_config_key: 'unauth',
            metadata: { marker },
          });
          const method = random() < 0.5 ? 'PATCH' : 'POST';
          const reply = await exchange(shim?.url ?? '', method, '/connection/metadata', headers, body);
          statuses.push({ kind: 'write', status: reply.cut ? -1 : reply.status });
        } else if (roll < 0.65) {
          const body = ['{"metadata":', '{"connection_id":1}', '[]', 'null', '{"a":'.repeat(50)][
            Math.floor(random() * 5)
          ];
          const reply = await exchange(shim?.url ?? '', 'PATCH', '/connection/metadata', headers, body);
          statuses.push({ kind: 'invalid', status: reply.cut ? -1 : reply.status });
        } else if (roll < 0.9) {
          const reply = await exchange(shim?.url ?? '', 'GET', '/connections', {
            Authorization: `Bearer ${key}`,
          });
          statuses.push({ kind: 'read', status: reply.cut ? -1 : reply.status });
        } else {
          const text = await rawExchange(
            shim?.url ?? '',
            `PATCH /connection/metadata HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
              'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n',
          );
          statuses.push({ kind: 'smuggle', status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0) });
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));

    // Every answer is one a client can act on: the legacy answer, or a defined error in Nango's shape. A
    // translated write is buffered, so a broken upstream answer is a 502, never a cut; a streamed read whose
    // upstream broke off mid-body is cut (-1), never completed as if it were whole.
    const allowed: Record<string, number[]> = {
      write: [200, 201, 502, 504],
      invalid: [400],
      read: [200, 502, 504, -1],
      smuggle: [400],
    };
    const unexpected = statuses.filter(({ kind, status }) => !allowed[kind]?.includes(status));
    expect(unexpected).toEqual([]);
    expect(statuses.length).toBeGreaterThan(100);
    expect(new Set(statuses.filter((s) => s.kind === 'write').map((s) => s.status)).size).toBeGreaterThan(2);

    // At most once: no marker reached the upstream twice; and only valid bodies reached it.
    const doubled = [...upstream.writes.entries()].filter(([, count]) => count > 1);
    expect(doubled).toEqual([]);
    expect([...upstream.writes.keys()].every((marker) => markers.includes(marker))).toBe(true);
    expect(upstream.invalidBodies).toEqual([]);

    // Alive, and still answering normally.
    const after = await exchange(shim.url, 'GET', '/after', {});
    expect([200, 502, 504, -1]).toContain(after.cut ? -1 : after.status);
    const logs = shim.logText();
    for (const key of keys) expect(logs).not.toContain(key);
    expect(logs).toContain(fingerprintKey(keys[0] as string));
    expect(shim.logs().some((line) => line.msg === 'migration failed')).toBe(false);
  });
});
