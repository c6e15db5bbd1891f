import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1: connection-specific fields are never forwarded by a proxy. */
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

function connectionTokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const joined = Array.isArray(value) ? value.join(',') : value;
  return joined.split(',').map((token) => token.trim().toLowerCase());
}

/** Headers minus hop-by-hop ones, those the Connection header names, and any listed in `drop`. */
export function endToEndHeaders(
  headers: IncomingHttpHeaders,
  drop: readonly string[] = [],
): OutgoingHttpHeaders {
  const named = connectionTokens(headers.connection);
  const result: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.includes(name) || drop.includes(name)) continue;
    result[name] = value;
  }
  return result;
}

export interface ClientAddress {
  remoteAddress: string | undefined;
  encrypted: boolean;
}

/** The headers of a translated call: the client's own, re-framed, with the standard X-Forwarded-* added. */
export function successorRequestHeaders(
  headers: IncomingHttpHeaders,
  upstreamHost: string,
  client: ClientAddress,
  body: string | null,
): OutgoingHttpHeaders {
  // Accept-Encoding is dropped so the answer can be reshaped without guessing; Content-Length is recomputed.
  const result = endToEndHeaders(headers, [
    'host',
    'content-length',
    'content-type',
    'accept-encoding',
    'expect',
  ]);
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
