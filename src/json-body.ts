import { constants as bufferConstants } from 'node:buffer';
import type { IncomingHttpHeaders } from 'node:http';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';

/** How Nango's express.json() (body-parser 2, strict) would see a request body. */
export type JsonBody =
  | { kind: 'absent' }
  | { kind: 'json'; value: unknown }
  | { kind: 'invalid'; message: string }
  | { kind: 'unsupported-charset' }
  /** A Content-Encoding body-parser does not know, or bytes that do not decode in the one named. */
  | { kind: 'undecodable' }
  /** Bytes that decode to more than the limit given. */
  | { kind: 'too-large' };

export type Decoder = (body: Buffer, options: { maxOutputLength: number }) => Buffer;

/**
 * body-parser's request codings (read.js createDecompressionStream): the whole field, lower-cased, is one
 * name, so a list (`gzip, br`) or `x-gzip` is unknown, unlike in an answer (answer-coding.ts decodeAnswer). No zstd:
 * Node 20, on which Nango 0.71.4 was captured, has no zstd decoder for body-parser to use. A Map: no
 * prototype keys.
 */
export const REQUEST_DECODERS: ReadonlyMap<string, Decoder> = new Map<string, Decoder>([
  ['gzip', gunzipSync],
  ['deflate', inflateSync],
  ['br', brotliDecompressSync],
]);

// JSON whitespace is exactly space, tab, LF and CR (RFC 8259 §2).
const FIRST_CHAR = /^[ \t\n\r]*([^ \t\n\r])/;
// What V8 12 and later (Node 22, 24) add to a JSON.parse message that names a position.
const LINE_AND_COLUMN = / \(line \d+ column \d+\)$/;

/**
 * A JSON.parse message in the wording Nango 0.71.4 answered with (its captures: `Expected property name or
 * '}' in JSON at position 1`, the wording of Node 20's V8), whatever Node runs the shim: V8 12 and later append
 * ` (line 1 column 2)` to the same message, and a legacy client's error text must not change with the
 * shim's runtime.
 */
export function nangoJsonMessage(message: string): string {
  return message.replace(LINE_AND_COLUMN, '');
}

/** The media type, lower-cased and without parameters, as type-is compares it. */
export function mediaType(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  const semicolon = contentType.indexOf(';');
  return (semicolon === -1 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase();
}

function charsetOf(contentType: string): string | undefined {
  const match = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(contentType);
  return match?.[1]?.toLowerCase();
}

/** type-is hasBody: a body exists when either framing header is present, even `Content-Length: 0`. */
export function hasBody(headers: IncomingHttpHeaders): boolean {
  return headers['transfer-encoding'] !== undefined || headers['content-length'] !== undefined;
}

/**
 * body-parser's strict mode rejects a top-level value that is not an object or array by parsing a
 * same-length placeholder, so the message names the client's own first token
 * (metadata-patch.json "top-level JSON null body": `Unexpected token 'n', "null" is not valid JSON`).
 */
function strictViolationMessage(text: string, char: string): string {
  const index = text.indexOf(char);
  const partial = index === -1 ? '' : text.slice(0, index) + '#'.repeat(text.length - index);
  try {
    JSON.parse(partial);
    return 'strict violation';
  } catch (error) {
    return nangoJsonMessage(
      (error as Error).message.replace(/#+/g, (placeholder) => text.slice(index, index + placeholder.length)),
    );
  }
}

/**
 * The body as body-parser reads it under the request's Content-Encoding (its `inflate` default): a compressed
 * JSON body is Nango's to parse like any other. Undecodable where body-parser fails: an unknown coding (415)
 * or corrupt bytes (400), neither of which Nango's error handler tells from any other error.
 */
function decodeBody(
  contentEncoding: string | undefined,
  raw: Buffer,
  maxBytes: number,
): Buffer | { kind: 'undecodable' | 'too-large' } {
  const coding = (contentEncoding || 'identity').toLowerCase();
  if (coding === 'identity') return raw;
  const decode = REQUEST_DECODERS.get(coding);
  if (!decode) return { kind: 'undecodable' };
  try {
    return decode(raw, { maxOutputLength: Math.min(maxBytes, bufferConstants.MAX_LENGTH) });
  } catch (error) {
    // zlib stops as soon as the output passes the limit (a small bomb never inflates in memory).
    const code = (error as NodeJS.ErrnoException).code;
    return { kind: code === 'ERR_BUFFER_TOO_LARGE' ? 'too-large' : 'undecodable' };
  }
}

/**
 * Pure: what Nango's JSON parser makes of these bytes under this Content-Type and Content-Encoding, in its
 * order: the media type, the charset, the coding, then the JSON. `maxBytes` bounds the decoded body.
 */
export function parseJsonBody(
  headers: IncomingHttpHeaders,
  received: Buffer,
  maxBytes: number = Number.POSITIVE_INFINITY,
): JsonBody {
  const contentType = headers['content-type'];
  if (mediaType(contentType) !== 'application/json' || !hasBody(headers)) return { kind: 'absent' };
  const charset = charsetOf(contentType as string) ?? 'utf-8';
  if (charset !== 'utf-8' && charset !== 'utf8') return { kind: 'unsupported-charset' };
  const raw = decodeBody(headers['content-encoding'], received, maxBytes);
  if (!Buffer.isBuffer(raw)) return raw;
  // An empty JSON body parses as {} (nango-api.md "Empty bodies").
  if (raw.length === 0) return { kind: 'json', value: {} };
  // body-parser decodes with iconv-lite, which drops a leading byte order mark: Nango accepts `EF BB BF {…}`.
  const decoded = raw.toString('utf8');
  const text = decoded.charCodeAt(0) === 0xfeff ? decoded.slice(1) : decoded;
  const first = FIRST_CHAR.exec(text)?.[1];
  if (first !== '{' && first !== '[') {
    return { kind: 'invalid', message: strictViolationMessage(text, first ?? '') };
  }
  try {
    return { kind: 'json', value: JSON.parse(text) };
  } catch (error) {
    return { kind: 'invalid', message: nangoJsonMessage((error as Error).message) };
  }
}
