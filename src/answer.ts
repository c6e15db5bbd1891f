import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { LocalAnswer } from './errors.js';

const JSON_TYPE = 'application/json; charset=utf-8';

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
