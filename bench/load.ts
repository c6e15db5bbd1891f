/**
 * One bounded autocannon run against one URL, and what came back: every answer with its hrtime-precise
 * latency, and every request that failed, whichever way it failed.
 */
import autocannon from 'autocannon';

/** What to send, over and over. */
export interface LoadRequest {
  method: 'GET' | 'PATCH';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface LoadOptions {
  connections: number;
  seconds: number;
  /** A count of requests instead of a duration (--instructions): the same work in every window. */
  amount?: number;
  timeoutSeconds?: number;
}

export interface LoadResult {
  responses: number;
  durationS: number;
  latenciesMs: number[];
  non2xx: number;
  /** autocannon's errors, which already include its timeouts. */
  errors: number;
  timeouts: number;
  /** Requests sent that got neither an answer nor an error: the connection was closed on them. */
  unanswered: number;
}

let currentLoad: autocannon.Instance | undefined;

/**
 * autocannon reconnects without counting anything when the server closes a connection with a request on it
 * (a FIN, not a reset): the request is simply never answered. It counts every request it writes, so those
 * are what is left of the sent requests once the answers, the errors (each consumed one request) and the
 * one request each connection still has in flight when a timed run stops are taken off. A run by amount
 * stops each connection after its last answer, with nothing in flight.
 */
export function unansweredRequests(
  result: { requests: { sent: number }; errors: number },
  responses: number,
  inFlightAtStop: number,
): number {
  return Math.max(0, result.requests.sent - responses - result.errors - inFlightAtStop);
}

/** Every request that did not get a 2xx answer: non-2xx answers, errors and timeouts, unanswered requests. */
export function failedRequests(load: LoadResult): number {
  return load.non2xx + load.errors + load.unanswered;
}

export function runLoad(
  baseUrl: string,
  request: LoadRequest,
  { connections, seconds, amount, timeoutSeconds = 10 }: LoadOptions,
): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const latenciesMs: number[] = [];
    let responses = 0;
    const instance = autocannon(
      {
        url: baseUrl + request.path,
        method: request.method,
        headers: request.headers,
        ...(request.body === undefined ? {} : { body: request.body }),
        connections,
        pipelining: 1,
        duration: seconds,
        ...(amount === undefined ? {} : { amount }),
        timeout: timeoutSeconds,
      },
      (error: unknown, result) => {
        currentLoad = undefined;
        if (error) return reject(error);
        resolve({
          responses,
          durationS: result.duration,
          latenciesMs,
          non2xx: result.non2xx,
          errors: result.errors,
          timeouts: result.timeouts,
          unanswered: unansweredRequests(result, responses, amount === undefined ? connections : 0),
        });
      },
    );
    currentLoad = instance;
    // autocannon's own histogram keeps whole milliseconds; these are hrtime-precise.
    instance.on('response', (_client, _status, _bytes, responseTimeMs) => {
      responses += 1;
      latenciesMs.push(responseTimeMs);
    });
  });
}

/** Stops the run under way, if any (the bench is being interrupted). */
export function stopLoad(): void {
  currentLoad?.stop();
}
