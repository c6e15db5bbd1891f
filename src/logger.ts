import { type DestinationStream, type Logger, pino } from 'pino';
import type { LogLevel } from './config.js';

/**
 * Paths that could ever hold a secret. Nothing in the shim logs headers, but a redaction list is the net
 * under that rule: an Authorization header or admin token never reaches a log line.
 */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'authorization',
  'token',
  'admin.token',
];

/** JSON lines on stdout, written asynchronously (flushed at exit), or on a stream a test hands in. */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  // Asynchronous but unbuffered: lines leave promptly (operators tail them) without blocking requests.
  const stream = destination ?? pino.destination({ dest: 1, sync: false });
  return pino(
    {
      level,
      base: { service: 'nango-shim' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    stream,
  );
}
