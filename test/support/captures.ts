/**
 * The recorded Nango 0.71.4 exchanges in ../shared/fixtures/nango-captures: loading them, and sending a
 * captured request again, byte for byte, to another server.
 */
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import * as z from 'zod';
import { DEV_KEY, PROD_KEY } from './fake-nango.js';

/**
 * The captures live in the project's shared folder, beside the repository (as on CI:
 * `../shared/fixtures/nango-captures`); NANGO_CAPTURES_DIR points elsewhere for a clone kept somewhere else.
 */
const CAPTURES_DIR = process.env.NANGO_CAPTURES_DIR
  ? pathToFileURL(`${process.env.NANGO_CAPTURES_DIR.replace(/\/?$/, '/')}`)
  : new URL('../../../shared/fixtures/nango-captures/', import.meta.url);

/** The order the files were captured in, on one database (capture-meta.json "fixture_data"). */
export const CAPTURE_FILES = [
  'setup.json',
  'metadata-patch.json',
  'metadata-post.json',
  'path-style.json',
  'connection-get.json',
  'sdk-0.66.2.json',
  'sdk-0.67.0.json',
  'auth-raw.json',
  'rate-limit.json',
] as const;

export type CaptureFile = (typeof CAPTURE_FILES)[number];

const headersSchema = z.record(z.string(), z.union([z.string(), z.array(z.string())]));

const captureEntrySchema = z.looseObject({
  name: z.string(),
  note: z.string().optional(),
  sdk: z.unknown().optional(),
  request: z
    .looseObject({
      method: z.string(),
      path: z.string(),
      headers: headersSchema,
      body: z.string().nullable(),
      /** Only in auth-raw.json: the exact bytes written to a raw TCP socket. */
      raw: z.string().optional(),
    })
    .optional(),
  response: z
    .looseObject({
      status: z.number(),
      statusMessage: z.string().optional(),
      headers: headersSchema,
      body: z.string(),
      json: z.unknown().optional(),
    })
    .optional(),
});

export type CaptureEntry = z.infer<typeof captureEntrySchema>;
export type CapturedRequest = NonNullable<CaptureEntry['request']>;

export interface CaptureReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export function loadCaptures(file: string): CaptureEntry[] {
  const location = new URL(file, CAPTURES_DIR);
  if (!existsSync(location)) {
    throw new Error(
      `capture ${file} not found at ${location.pathname}: the tests need the shared captures beside the ` +
        'repository (../shared/fixtures/nango-captures) or NANGO_CAPTURES_DIR set to their folder',
    );
  }
  const text = readFileSync(location, 'utf8');
  return z.array(captureEntrySchema).parse(JSON.parse(text));
}

const KEY_PLACEHOLDERS: ReadonlyArray<readonly [string, string]> = [
  ['<SECRET_KEY>', DEV_KEY],
  ['<PROD_SECRET_KEY>', PROD_KEY],
];

function replaceKeys(text: string): string {
  return KEY_PLACEHOLDERS.reduce((result, [placeholder, key]) => result.replaceAll(placeholder, key), text);
}

/** A copy of the entry whose request carries the fake's real keys instead of the placeholders. */
export function substituteKeys(entry: CaptureEntry): CaptureEntry {
  if (!entry.request) return entry;
  const headers = Object.fromEntries(
    Object.entries(entry.request.headers).map(([name, value]) => [
      name,
      typeof value === 'string' ? replaceKeys(value) : value.map(replaceKeys),
    ]),
  );
  const raw = entry.request.raw === undefined ? undefined : replaceKeys(entry.request.raw);
  return { ...entry, request: { ...entry.request, headers, ...(raw === undefined ? {} : { raw }) } };
}

/** Body fields that differ on every run (capture-meta.json "volatile_body_fields"). */
const VOLATILE_FIELDS = new Set(['created_at', 'updated_at', 'last_fetched_at', 'created', 'id']);
const SUPPORT_ID_MASK = '<uuid>';

/** A copy without the volatile fields, at any depth, and with generic_error_support's uuid masked. */
export function stripVolatile(json: unknown): unknown {
  if (Array.isArray(json)) return json.map(stripVolatile);
  if (!isRecord(json)) return json;
  const stripped: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(json)) {
    if (!VOLATILE_FIELDS.has(key)) stripped[key] = stripVolatile(value);
  }
  return maskSupportId(stripped);
}

function maskSupportId(error: Record<string, unknown>): Record<string, unknown> {
  const { code, message, payload } = error;
  if (code !== 'generic_error_support' || typeof payload !== 'string') return error;
  const masked = typeof message === 'string' ? message.replaceAll(payload, SUPPORT_ID_MASK) : message;
  return { ...error, message: masked, payload: SUPPORT_ID_MASK };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Sends the captured request to baseUrl exactly as captured: method, path as is, headers in their case
 * (Host, Content-Length and Connection recomputed) and body bytes. auth-raw.json entries go over a raw
 * socket, because Node's client would not write their header bytes. By default on a connection of its own
 * (`Connection: close`); on `agent`'s connections if given (a keep-alive agent's: `Connection: keep-alive`).
 */
export function sendCapture(
  baseUrl: string,
  entry: CaptureEntry,
  agent: http.Agent | false = false,
): Promise<CaptureReply> {
  const { request } = entry;
  if (!request) throw new Error(`capture "${entry.name}" sent no request`);
  const url = new URL(baseUrl);
  return request.raw === undefined ? sendOverHttp(url, request, agent) : sendOverSocket(url, request.raw);
}

const RECOMPUTED_HEADERS = new Set(['host', 'content-length', 'connection']);

function outgoingHeaders(request: CapturedRequest): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = {};
  let hadContentLength = false;
  for (const [name, value] of Object.entries(request.headers)) {
    if (name.toLowerCase() === 'content-length') hadContentLength = true;
    if (!RECOMPUTED_HEADERS.has(name.toLowerCase())) headers[name] = value;
  }
  // Without a Content-Length, Node would send a bodiless PATCH/POST chunked, which the capture did not.
  if (hadContentLength || request.body !== null)
    headers['Content-Length'] = Buffer.byteLength(request.body ?? '');
  return headers;
}

function sendOverHttp(url: URL, request: CapturedRequest, agent: http.Agent | false): Promise<CaptureReply> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(
      {
        host: url.hostname,
        port: url.port,
        method: request.method,
        path: request.path,
        headers: outgoingHeaders(request),
        agent,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    outgoing.on('error', reject);
    outgoing.end(request.body ?? undefined);
  });
}

/** Writes the bytes and reads until the server closes (every raw capture asks for Connection: close). */
function sendOverSocket(url: URL, raw: string): Promise<CaptureReply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      try {
        resolve(parseRawResponse(Buffer.concat(chunks)));
      } catch (error) {
        reject(error);
      }
    });
    // Not end(): Nango drops the answer to a client that half-closes right after sending (nango-api.md).
    socket.write(raw);
  });
}

function parseRawResponse(bytes: Buffer): CaptureReply {
  const headEnd = bytes.indexOf('\r\n\r\n');
  if (headEnd < 0) throw new Error(`incomplete HTTP response: ${JSON.stringify(bytes.toString('latin1'))}`);
  const [statusLine = '', ...headerLines] = bytes.subarray(0, headEnd).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1]);
  const headers: http.IncomingHttpHeaders = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const body = bytes.subarray(headEnd + 4);
  const length = Number(headers['content-length'] ?? body.length);
  return { status, headers, body: body.subarray(0, length).toString('utf8') };
}
