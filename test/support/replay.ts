import {
  type CaptureEntry,
  type CaptureReply,
  loadCaptures,
  sendCapture,
  stripVolatile,
  substituteKeys,
} from './captures.js';

export interface Mismatch {
  entry: string;
  field: string;
  expected: unknown;
  actual: unknown;
}

/** Compared by value; X-RateLimit-Remaining/Reset, ETag and Date change per run, so only their presence. */
export const EXACT_HEADERS = [
  'content-type',
  'access-control-allow-origin',
  'access-control-expose-headers',
  'access-control-allow-methods',
  'access-control-allow-headers',
  'access-control-max-age',
  'x-ratelimit-limit',
  'content-security-policy',
  'x-content-type-options',
  'x-frame-options',
  'strict-transport-security',
];
export const PRESENT_HEADERS = ['x-ratelimit-remaining', 'x-ratelimit-reset', 'etag', 'retry-after'];

export function exchanges(file: string): CaptureEntry[] {
  // sdk entries without a request threw in the client and never reached the server.
  return loadCaptures(file)
    .filter((entry) => entry.request !== undefined)
    .map(substituteKeys);
}

export async function replayQuietly(baseUrl: string, file: string): Promise<void> {
  for (const entry of exchanges(file)) await sendCapture(baseUrl, entry);
}

/** What a replay compares besides status and body: the fake is held to every header, the shim to fewer. */
export interface CompareOptions {
  exactHeaders?: readonly string[];
  presentHeaders?: readonly string[];
  /** Entries to leave out, by name. */
  skip?: (entry: CaptureEntry) => boolean;
}

export async function replayAndCompare(
  baseUrl: string,
  file: string,
  options: CompareOptions = {},
): Promise<{ sent: number; mismatches: Mismatch[] }> {
  const mismatches: Mismatch[] = [];
  const entries = exchanges(file).filter((entry) => !options.skip?.(entry));
  for (const entry of entries)
    mismatches.push(...compareReply(entry, await sendCapture(baseUrl, entry), options));
  return { sent: entries.length, mismatches };
}

export function compareReply(
  entry: CaptureEntry,
  reply: CaptureReply,
  { exactHeaders = EXACT_HEADERS, presentHeaders = PRESENT_HEADERS }: CompareOptions = {},
): Mismatch[] {
  const captured = entry.response;
  if (!captured) throw new Error(`capture "${entry.name}" has no response`);
  const mismatch = (field: string, expected: unknown, actual: unknown): Mismatch[] =>
    expected === actual ? [] : [{ entry: entry.name, field, expected, actual }];
  return [
    ...mismatch('status', captured.status, reply.status),
    ...mismatch('body', comparableBody(captured.body), comparableBody(reply.body)),
    ...exactHeaders.flatMap((name) =>
      mismatch(`header ${name}`, headerValue(captured.headers, name), headerValue(reply.headers, name)),
    ),
    ...presentHeaders.flatMap((name) =>
      mismatch(
        `header ${name} present`,
        headerValue(captured.headers, name) !== undefined,
        headerValue(reply.headers, name) !== undefined,
      ),
    ),
  ];
}

/** JSON bodies without volatile fields, re-serialised so key order still counts; anything else as text. */
export function comparableBody(body: string): string {
  try {
    return JSON.stringify(stripVolatile(JSON.parse(body)));
  } catch {
    return body;
  }
}

export function headerValue(
  headers: Record<string, string | string[] | undefined>,
  name: string,
): string | undefined {
  const found = Object.entries(headers).find(([key]) => key.toLowerCase() === name)?.[1];
  return Array.isArray(found) ? found.join(', ') : found;
}
