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
