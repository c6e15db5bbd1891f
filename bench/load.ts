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
  /** Requests still waiting for an answer when a timed run stopped, after more than STALLED_AFTER_MS. */
  stalled: number;
}

/**
 * How long a request may still be waiting when a timed run stops before it counts as failed. autocannon's
 * own timeout (10 s) is longer than any timed run, so it can never fire in one: a request the target never
 * answers would otherwise just be in flight at the stop. Answers here take milliseconds (p99 under 30 ms at
 * 50 connections); a second is a stall, not a slow answer.
 */
export const STALLED_AFTER_MS = 1000;

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

/**
 * The connections whose request in flight at the stop had been waiting more than STALLED_AFTER_MS: with
 * one request at a time per connection, that request was sent when the connection's previous answer came
 * (or when the run started, if none came).
 */
export function stalledConnections(
  lastAnswerAt: Iterable<number>,
  connections: number,
  startedAt: number,
  stoppedAt: number,
): number {
  let answered = 0;
  let stalled = 0;
  for (const at of lastAnswerAt) {
    answered += 1;
    if (stoppedAt - at > STALLED_AFTER_MS) stalled += 1;
  }
  const neverAnswered = Math.max(0, connections - answered);
  return stalled + (stoppedAt - startedAt > STALLED_AFTER_MS ? neverAnswered : 0);
}

/**
 * Every request that did not get a 2xx answer: non-2xx answers, errors and timeouts, unanswered and stalled
 * requests.
 */
export function failedRequests(load: LoadResult): number {
  return load.non2xx + load.errors + load.unanswered + load.stalled;
}

/** `3 non-2xx, 1 errors (1 timeouts), 0 unanswered, 2 stalled`: how the requests of a run failed. */
export function describeFailures(load: LoadResult): string {
  return (
    `${load.non2xx} non-2xx, ${load.errors} errors (${load.timeouts} timeouts), ` +
    `${load.unanswered} unanswered, ${load.stalled} stalled`
  );
}

export function runLoad(
  baseUrl: string,
  request: LoadRequest,
  { connections, seconds, amount, timeoutSeconds = 10 }: LoadOptions,
): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const latenciesMs: number[] = [];
    let responses = 0;
    const lastAnswerAt = new Map<object, number>();
    const startedAt = performance.now();
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
          // A run by amount waits for every answer, so its own timeout applies.
          stalled:
            amount === undefined
              ? stalledConnections(lastAnswerAt.values(), connections, startedAt, performance.now())
              : 0,
        });
      },
    );
    currentLoad = instance;
    // autocannon's own histogram keeps whole milliseconds; these are hrtime-precise.
    instance.on('response', (client, _status, _bytes, responseTimeMs) => {
      lastAnswerAt.set(client, performance.now());
      responses += 1;
      latenciesMs.push(responseTimeMs);
    });
  });
}

/** Stops the run under way, if any (the bench is being interrupted). */
export function stopLoad(): void {
  currentLoad?.stop();
}
