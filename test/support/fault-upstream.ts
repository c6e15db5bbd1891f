import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type Socket } from 'node:net';
import { closeWithSockets } from './cleanup.js';
import { listen } from './upstream.js';

/** What the upstream saw of one request. `body` is set once the body has arrived whole. */
export interface FaultSeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer | undefined;
}

/**
 * How the upstream answers one request, once its whole body has arrived. `body` is what it received.
 * A fault is free to answer badly, slowly, or not at all.
 */
export type RequestFault = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

export interface FaultUpstream {
  url: string;
  /** Every request whose header section arrived, in order. */
  requests: FaultSeenRequest[];
  /** TCP connections accepted, faulty ones included. */
  connections(): number;
  /** The next `count` connections are closed the moment they are accepted, before a byte is read. */
  closeOnAccept(count?: number): void;
  /** The next request is answered by `fault` instead of the successor's echo. Queued in order. */
  nextRequest(...faults: RequestFault[]): void;
  close(): Promise<void>;
}

/** Nango's successor contract: 200 (PATCH) / 201 (POST) with the request body echoed, JSON everywhere. */
export const successorEcho: RequestFault = (req, res, body) => {
  const status = req.method === 'POST' ? 201 : 200;
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length });
  res.end(body);
};

/**
 * An upstream on 127.0.0.1 whose faults are queued per connection and per request, for the failure
 * behaviour of translated calls. It is a plain TCP listener that hands healthy connections to node:http,
 * so a connection can also be refused an answer before HTTP starts.
 */
export async function startFaultUpstream(): Promise<FaultUpstream> {
  const requests: FaultSeenRequest[] = [];
  const faults: RequestFault[] = [];
  const sockets = new Set<Socket>();
  let accepted = 0;
  let closing = 0;

  const server = http.createServer((req, res) => {
    const seen: FaultSeenRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      body: undefined,
    };
    requests.push(seen);
    const fault = faults.shift() ?? successorEcho;
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      seen.body = Buffer.concat(chunks);
      fault(req, res, seen.body);
    });
  });
  server.keepAliveTimeout = 61_000;

  const listener = net.createServer((socket) => {
    accepted += 1;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    if (closing > 0) {
      closing -= 1;
      socket.destroy();
      return;
    }
    server.emit('connection', socket);
  });
  const port = await listen(listener);

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    connections: () => accepted,
    closeOnAccept(count = 1) {
      closing += count;
    },
    nextRequest(...next) {
      faults.push(...next);
    },
    close() {
      return closeWithSockets(listener, sockets);
    },
  };
}
