import type { Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach } from 'vitest';

export interface Closable {
  close(): Promise<void>;
}

/**
 * Servers a test starts are closed after it, in the reverse order they were started (the shim before its
 * upstream), whether the test passed or not. Call once per file; wrap each server as it starts.
 */
export function closedAfterEach(): <T extends Closable>(server: T) => T {
  const open: Closable[] = [];
  afterEach(async () => {
    for (let server = open.pop(); server; server = open.pop()) await server.close();
  });
  return (server) => {
    open.push(server);
    return server;
  };
}

/**
 * Closes a raw server a test wrote by hand, with the sockets it keeps: `server.close()` alone waits for every
 * open connection, which a test's half-finished exchanges never end.
 */
export function closeWithSockets(server: Server, sockets: Iterable<Duplex>): Promise<void> {
  return new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy();
    server.close(() => resolve());
  });
}
