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

/** How long a log line may wait in the buffer before it is written. */
export const LOG_FLUSH_INTERVAL_MS = 200;
/** Lines are written in chunks of about this size (one system call each). */
const LOG_CHUNK_BYTES = 8 * 1024;

/**
 * JSON lines on stdout, or on a stream a test hands in. Under load every deprecated call writes a line:
 * written one by one through libuv's thread pool they cost about as much CPU as the call itself and their
 * queue grew the heap by tens of megabytes (the benchmark). They are collected in memory instead and written
 * synchronously in chunks, at most LOG_FLUSH_INTERVAL_MS late; `logger.flush()` empties the buffer (exit, reload).
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const stream = destination ?? bufferedStdout();
  return pino(
    {
      level,
      base: { service: 'nango-shim' },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      formatters: { level: levelField },
    },
    stream,
  );
}

/** How a line names its level: `"level":"info"`, not pino's number. */
function levelField(label: string) {
  return { level: label };
}

/** The pino fields a line is assembled from; pino exports these symbols for libraries that write lines. */
interface LineParts {
  [pino.symbols.streamSym]: DestinationStream;
  [pino.symbols.timeSym]: () => string;
  [pino.symbols.chindingsSym]: string;
}

/**
 * A writer of one hot line of fixed shape, at level info: the very JSON `logger.info(fields, msg)` writes
 * (level, time, the logger's bindings, the fields, msg), assembled here instead of by pino's generic
 * serialiser, which among the shim's other log calls made the usage line per deprecated call cost about 45k
 * instructions instead of 14k (callgrind). `members` are
 * the fields as JSON object members, each starting with a comma. The caller vouches for them: no
 * redaction runs, so they must never hold a secret.
 */
export function infoLineWriter(logger: Logger, msg: string): (members: string) => void {
  const parts = logger as unknown as LineParts;
  const head = JSON.stringify(levelField('info')).slice(0, -1);
  const tail = `,"msg":${JSON.stringify(msg)}}\n`;
  return (members) => {
    if (!logger.isLevelEnabled('info')) return;
    parts[pino.symbols.streamSym].write(
      head + parts[pino.symbols.timeSym]() + parts[pino.symbols.chindingsSym] + members + tail,
    );
  };
}

function bufferedStdout(): DestinationStream {
  // Buffer mode: in text mode sonic-boom measures the whole pending chunk again (Buffer.byteLength of a
  // string it has just concatenated, flattened anew) on every line, which made each usage line cost as much
  // as a third of the translation it records (callgrind). Each line is encoded once here instead.
  const boom = pino.destination({ dest: 1, sync: true, minLength: LOG_CHUNK_BYTES, contentMode: 'buffer' });
  const timer = setInterval(() => flushQuietly(boom), LOG_FLUSH_INTERVAL_MS);
  timer.unref();
  const write = boom.write as unknown as (chunk: Buffer) => boolean;
  return {
    write(line: string) {
      write.call(boom, Buffer.from(line));
    },
    // pino's logger.flush() calls it; exit and reload use it to empty the buffer.
    flush(callback?: (error?: Error) => unknown) {
      boom.flush(callback);
    },
  } as DestinationStream;
}

function flushQuietly(stream: { flushSync(): void }): void {
  try {
    stream.flushSync();
  } catch {
    // stdout closed or busy: the next interval tries again, and nothing here may crash the shim.
  }
}
