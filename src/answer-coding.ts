import { gunzipSync } from 'node:zlib';
import { type Decoder, REQUEST_DECODERS } from './json-body.js';
import type { UpstreamResponse } from './successor-client.js';
import { fieldTokens } from './upstream-headers.js';

/**
 * RFC 9110 §8.4.1: the codings a gateway in front of Nango may apply, body-parser's own and `x-gzip`, which
 * RFC 9110 §8.4.1.3 makes the same as gzip. A Map: no prototype keys.
 */
const DECODERS: ReadonlyMap<string, Decoder> = new Map<string, Decoder>([
  ...REQUEST_DECODERS,
  ['x-gzip', gunzipSync],
]);

/** Why a successor's answer could not be read although it arrived whole. */
export class AnswerDecodeError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'AnswerDecodeError';
  }
}

/**
 * The successor's answer with any content coding removed, so the shim reads plain JSON (Nango never
 * compresses, but a gateway in between may): a buffered translation's answer, or a streamed one's 429.
 * Codings are undone in the reverse of the order they are listed in (RFC 9110 §8.4); an answer in a coding
 * the shim does not know is returned as it is. Throws AnswerDecodeError for an answer that is corrupt or
 * larger than `maxBytes`, before or after decoding.
 */
export function decodeAnswer(response: UpstreamResponse, maxBytes: number): UpstreamResponse {
  if (response.body.length > maxBytes) throw new AnswerDecodeError(`answer over ${maxBytes} bytes`);
  if (response.headers['content-encoding'] === undefined) return response;
  const codings = fieldTokens(response.headers['content-encoding']).filter((token) => token !== 'identity');
  if (codings.length === 0) return response;
  const decoders: Decoder[] = [];
  for (const coding of codings) {
    const decode = DECODERS.get(coding);
    if (!decode) return response;
    decoders.unshift(decode);
  }
  let body = response.body;
  try {
    for (const decode of decoders) body = decode(body, { maxOutputLength: maxBytes });
  } catch (error) {
    // Corrupt data, or ERR_BUFFER_TOO_LARGE: zlib stops as soon as the output passes the limit.
    throw new AnswerDecodeError(`answer in ${codings.join(', ')} could not be decoded`, error);
  }
  const headers = { ...response.headers };
  delete headers['content-encoding'];
  return { status: response.status, headers, body };
}
