/**
 * SIGHUP from the first moment the shim's own code runs. Node ends a process on a SIGHUP nobody listens
 * for, and start-up takes most of a second (loading express, pino and ajv, then the Redis client and the
 * ledger) before the reloader exists: a `systemctl reload` or a ConfigMap tool's signal right after start
 * killed the shim. main.ts imports this module first, so its listener is in place before the rest of the
 * module graph is evaluated; a signal that arrives before the reloader is remembered and carried out once
 * the reloader takes over, several of them as one reload.
 */
let handler: (() => void) | undefined;
let pending = false;

process.on('SIGHUP', function onHangup() {
  if (handler) handler();
  else pending = true;
});

/** Hands SIGHUP to `reload`, at once if one came while the shim was starting. */
export function takeHangups(reload: () => void): void {
  handler = reload;
  if (!pending) return;
  pending = false;
  reload();
}
