import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** No field: what endToEndHeaders drops when asked to drop nothing more. */
const NOTHING: ReadonlySet<string> = new Set();

/**
 * Fields of one hop that a proxy removes whatever it does with the framing: the options of one connection
 * (RFC 9110 §7.6.1) and the credentials and challenges of a proxy (§11.7: they apply to the next proxy only,
 * and the shim asks for none). Pass-through removes these (forward.ts) and leaves the framing to node:http.
 */
export const HOP_FIELDS = [
  'keep-alive',
  'proxy-connection',
  'te',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
] as const;

/** A translated call is framed anew as well: its Connection, Trailer and Transfer-Encoding go too. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  ...HOP_FIELDS,
  'connection',
  'trailer',
  'transfer-encoding',
]);

/** The comma-separated tokens of a field (RFC 9110 §5.6.1), lower-cased, repeated lines joined, empties dropped. */
export function fieldTokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return String(value)
    .split(',')
    .map((token) => token.trim().toLowerCase())
    .filter((token) => token !== '');
}

/** Headers minus hop-by-hop ones, those the Connection header names, and any listed in `drop`. */
export function endToEndHeaders(
  headers: IncomingHttpHeaders,
  drop: ReadonlySet<string> = NOTHING,
): OutgoingHttpHeaders {
  const connection = headers.connection;
  const named =
    connection === undefined || connection === 'keep-alive' || connection === 'close'
      ? NOTHING
      : new Set(fieldTokens(connection));
  const result: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || drop.has(name)) continue;
    result[name] = value;
  }
  return result;
}

/**
 * Re-framed or replaced on a translated call: never copied from the client. Content-Encoding described the
 * client's bytes; the body sent is the shim's own JSON, never encoded.
 */
const REFRAMED: ReadonlySet<string> = new Set([
  'host',
  'content-length',
  'content-type',
  'content-encoding',
  'accept-encoding',
  'expect',
]);

/** Where a request came from. A client's socket is one: `encrypted` is only on a TLS socket. */
export interface ClientAddress {
  readonly remoteAddress?: string | undefined;
  readonly encrypted?: boolean;
}

/**
 * The standard X-Forwarded-* headers, the same on every path to the upstream: the client's address appended
 * to X-Forwarded-For; X-Forwarded-Proto and -Host set by the first proxy and kept after it. Written into
 * `into`, which may be `headers` itself (pass-through forwards the client's own header object).
 */
export function setForwardedHeaders(
  into: IncomingHttpHeaders | OutgoingHttpHeaders,
  headers: IncomingHttpHeaders,
  client: ClientAddress,
): void {
  const forwardedFor = headers['x-forwarded-for'];
  const proto = headers['x-forwarded-proto'];
  const host = headers['x-forwarded-host'];
  const address = client.remoteAddress ?? '';
  into['x-forwarded-for'] = forwardedFor ? `${forwardedFor},${address}` : address;
  into['x-forwarded-proto'] = proto ?? (client.encrypted ? 'https' : 'http');
  into['x-forwarded-host'] = host ?? headers.host ?? '';
}

/** The headers of a translated call: the client's own, re-framed, with the standard X-Forwarded-* added. */
export function successorRequestHeaders(
  headers: IncomingHttpHeaders,
  upstreamHost: string,
  client: ClientAddress,
  body: string | Buffer | null,
): OutgoingHttpHeaders {
  // Accept-Encoding is dropped so the answer can be reshaped without guessing; Content-Length is recomputed.
  const result = endToEndHeaders(headers, REFRAMED);
  result.host = upstreamHost;
  setForwardedHeaders(result, headers, client);
  if (body !== null) {
    result['content-type'] = 'application/json';
    result['content-length'] = Buffer.byteLength(body);
  } else if (headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined) {
    result['content-length'] = 0;
  }
  return result;
}
