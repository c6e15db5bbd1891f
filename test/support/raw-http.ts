import net from 'node:net';

export interface RawExchange {
  /** Every byte the server sent back, as latin1 text. */
  text: string;
  /** Whether the server closed the connection before `timeoutMs`. */
  closed: boolean;
  /** The status of the first answer, or 0 when there was none. */
  status: number;
  elapsedMs: number;
}

export interface RawOptions {
  /** After writing: `end` half-closes, `destroy` cuts the connection, `keep` leaves it open (default). */
  then?: 'end' | 'destroy' | 'keep';
  /** How long to wait for the server to close before giving up (the connection is then destroyed). */
  timeoutMs?: number;
  /** Stop waiting as soon as the first answer's header section has arrived. */
  untilAnswer?: boolean;
}

/**
 * Writes bytes to a server over a raw TCP socket, exactly as given, for what node:http's client refuses to
 * send (conflicting framing, truncated bodies, absolute-form targets), and collects what comes back.
 */
export function exchangeRaw(
  baseUrl: string,
  bytes: string | Buffer,
  { then = 'keep', timeoutMs = 3_000, untilAnswer = false }: RawOptions = {},
): Promise<RawExchange> {
  const url = new URL(baseUrl);
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = net.connect(Number(url.port), url.hostname);
    let text = '';
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed, status: statusOf(text), elapsedMs: performance.now() - started });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (untilAnswer && text.includes('\r\n\r\n')) finish(false);
    });
    socket.on('error', () => {});
    socket.on('close', () => finish(true));
    socket.write(bytes, () => {
      if (then === 'end') socket.end();
      else if (then === 'destroy') socket.destroy();
    });
  });
}

/** The status code of the first HTTP/1.1 answer in `text`, or 0. */
export function statusOf(text: string): number {
  const match = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return match ? Number(match[1]) : 0;
}

/** The body of the first answer in `text`, parsed as JSON. */
export function jsonBodyOf(text: string): unknown {
  return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));
}

/** The number of HTTP answers in `text` (status lines). */
export function answerCount(text: string): number {
  return text.match(/HTTP\/1\.1 \d{3} /g)?.length ?? 0;
}
