import { type OutgoingHttpHeaders, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { LocalAnswer } from './errors.js';

/** What Express's res.send(object) and res.json() label a body with, and the shim its own JSON answers. */
export const JSON_TYPE = 'application/json; charset=utf-8';

/** Writes one of the shim's own answers (always JSON in Nango's error shape). */
export function sendLocalAnswer(
  res: ServerResponse,
  answer: LocalAnswer,
  extraHeaders: OutgoingHttpHeaders = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(answer.body);
  res.writeHead(answer.status, {
    ...extraHeaders,
    'content-type': JSON_TYPE,
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

export function sendBytes(
  res: ServerResponse,
  status: number,
  headers: OutgoingHttpHeaders,
  body: Buffer,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  headers['content-length'] = body.length;
  res.writeHead(status, headers);
  res.end(body);
}

/**
 * The same answer on a raw socket, for an upgrade request that failed before the upstream switched
 * protocols: the client gets a real HTTP status instead of a dropped connection.
 */
export function sendLocalAnswerOnSocket(
  socket: Duplex,
  answer: LocalAnswer,
  extraHeaders: Readonly<Record<string, string>> = {},
): void {
  if (!socket.writable || socket.writableEnded) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(answer.body);
  let extra = '';
  for (const name in extraHeaders) extra += `${name}: ${extraHeaders[name]}\r\n`;
  socket.end(
    `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}\r\n${extra}Content-Type: ${JSON_TYPE}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
