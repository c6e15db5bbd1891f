import { createHash } from 'node:crypto';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** What the upstream saw of one request, recorded the moment its header section arrived. */
export interface SeenRequest {
  method: string;
  /** The request target exactly as it came on the wire. */
  url: string;
  headers: IncomingHttpHeaders;
  /** Name/value pairs as sent, repeated fields kept apart. */
  rawHeaders: string[];
  /** The shim's end of the upstream connection: one port per upstream socket. */
  remotePort: number;
  remoteAddress: string;
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse) => void;
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

export interface UpstreamOptions {
  /** Serve https with this key and certificate (PEM) instead of plain http. */
  tls?: { key: string; cert: string };
  onUpgrade?: UpgradeHandler;
}

export interface RecordingUpstream {
  url: string;
  port: number;
  requests: SeenRequest[];
  /** Resolves once `count` requests (upgrades included) have arrived, headers only; rejects after `timeoutMs`. */
  waitForRequests(count: number, timeoutMs?: number): Promise<SeenRequest[]>;
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 port 0 and reads the port back. */
export function listen(server: NetServer): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

/** A node:http (or https) upstream that records every request and lets `handler` answer it. */
export async function startUpstream(
  handler: UpstreamHandler,
  options: UpstreamOptions = {},
): Promise<RecordingUpstream> {
  const requests: SeenRequest[] = [];
  const waiters = new Set<() => void>();
  const sockets = new Set<Socket>();
  const seen = (req: IncomingMessage) => {
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      remotePort: req.socket.remotePort ?? 0,
      remoteAddress: req.socket.remoteAddress ?? '',
    });
    for (const wake of waiters) wake();
  };
  const record: UpstreamHandler = (req, res) => {
    seen(req);
    handler(req, res);
  };
  const server = options.tls ? https.createServer(options.tls, record) : http.createServer(record);
  server.on(options.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const { onUpgrade } = options;
  if (onUpgrade) {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      seen(req);
      onUpgrade(req, socket, head);
    });
  }
  const port = await listen(server);
  const scheme = options.tls ? 'https' : 'http';
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    requests,
    waitForRequests(count, timeoutMs = 5_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (requests.length < count) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(requests.slice(0, count));
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`upstream saw ${requests.length} of ${count} requests within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        // Upgraded sockets are no longer the server's connections: destroy them explicitly.
        for (const socket of sockets) socket.destroy();
        server.closeAllConnections();
      });
    },
  };
}

/** A port that nothing listens on: bound on port 0, read back, closed. */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  const port = await listen(server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Reads a whole stream, returning its length and SHA-256 (the bytes are not kept). */
export function digest(stream: NodeJS.ReadableStream): Promise<{ length: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let length = 0;
    stream.on('data', (chunk: Buffer) => {
      length += chunk.length;
      hash.update(chunk);
    });
    stream.on('error', reject);
    stream.on('end', () => resolve({ length, sha256: hash.digest('hex') }));
    // A `data` listener does not restart a stream someone paused explicitly.
    stream.resume();
  });
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Reads a whole stream into memory (small bodies only). */
export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Raw headers as [name, value] pairs, names lowercased: what a client sees of repeated fields. */
export function headerPairs(rawHeaders: string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    pairs.push([(rawHeaders[i] as string).toLowerCase(), rawHeaders[i + 1] as string]);
  }
  return pairs;
}

/** Rejects after `ms` with `what` in the message, so a hung exchange fails its test instead of the suite. */
export function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

/**
 * One request, by default on a fresh connection (tests never share sockets), with the exact request
 * target given (node:http sends `path` as is), answering with the whole body or rejecting when it is cut.
 */
export function request(
  baseUrl: string,
  options: {
    method?: string;
    path?: string;
    headers?: http.OutgoingHttpHeaders;
    body?: Buffer | string;
    /** A keep-alive agent to reuse connections; by default a fresh connection (`Connection: close`). */
    agent?: http.Agent;
  } = {},
): Promise<RawResponse> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        method: options.method ?? 'GET',
        path: options.path ?? '/',
        headers: options.headers ?? {},
        agent: options.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('aborted', () => reject(new Error('response aborted')));
        res.on('end', () => {
          if (!res.complete) return reject(new Error('response incomplete'));
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body: Buffer.concat(chunks),
          });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}
