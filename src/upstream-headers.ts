import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1: connection-specific fields are never forwarded by a proxy. */
const NOTHING: ReadonlySet<string> = new Set();

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Headers minus hop-by-hop ones, those the Connection header names, and any listed in `drop`. */
export function endToEndHeaders(
  headers: IncomingHttpHeaders,
  drop: ReadonlySet<string> = NOTHING,
): OutgoingHttpHeaders {
  const connection = headers.connection;
  const named =
    connection === undefined || connection === 'keep-alive' || connection === 'close'
      ? NOTHING
      : new Set(
          (Array.isArray(connection) ? connection.join(',') : connection)
            .split(',')
            .map((token) => token.trim().toLowerCase()),
        );
  const result: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || drop.has(name)) continue;
    result[name] = value;
  }
  return result;
}

/** Re-framed or replaced on a translated call: never copied from the client. */
const REFRAMED: ReadonlySet<string> = new Set([
  'host',
  'content-length',
  'content-type',
  'accept-encoding',
  'expect',
]);

export interface ClientAddress {
  remoteAddress: string | undefined;
  encrypted: boolean;
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
  const forwardedFor = headers['x-forwarded-for'];
  result['x-forwarded-for'] = forwardedFor
    ? `${forwardedFor},${client.remoteAddress ?? ''}`
    : (client.remoteAddress ?? '');
  result['x-forwarded-proto'] = headers['x-forwarded-proto'] ?? (client.encrypted ? 'https' : 'http');
  result['x-forwarded-host'] = headers['x-forwarded-host'] ?? headers.host ?? '';
  if (body !== null) {
    result['content-type'] = 'application/json';
    result['content-length'] = Buffer.byteLength(body);
  } else if (headers['content-length'] !== undefined || headers['transfer-encoding'] !== undefined) {
    result['content-length'] = 0;
  }
  return result;
}
