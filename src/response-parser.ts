import type { IncomingHttpHeaders } from 'node:http';
import { fieldTokens } from './upstream-headers.js';

/** One whole HTTP/1.x answer, its body undone of any transfer coding (not of its content coding). */
export interface ParsedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The connection may carry another exchange (RFC 9112 §9.3): persistent, framed, nothing after it. */
  reusable: boolean;
}

/** An answer that is not HTTP/1.x as RFC 9112 frames it, or larger than the limits: none of it is trusted. */
export class ResponseParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ResponseParseError';
  }
}

export interface ResponseParserOptions {
  /** The largest head (status line and fields), and separately the largest trailer section. */
  maxHeadBytes: number;
  /** The largest body, after the transfer coding is undone. */
  maxBodyBytes: number;
  /** The request was HEAD: the answer has no body whatever its fields say (RFC 9112 §6.3 ¶1). */
  headRequest?: boolean;
}

const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');
/** RFC 9110 §5.1: 1 for each character of a token (tchar), by its code below 128. */
const TCHAR = tokenCharacters();
const DIGITS = /^\d+$/;
// RFC 9112 §7.1: chunk-size is 1*HEXDIG, leading zeros and all (llhttp reads any number of them, e.g. a
// size printed at a fixed 64-bit width); at most 15 significant digits, far over any body limit.
const CHUNK_SIZE = /^0*([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?$/;
const MAX_CHUNK_LINE = 4096;

/**
 * Fields node:http's IncomingMessage keeps the first of and drops the repeats of (`matchKnownFields`): the
 * translated answer's headers read the same as they did through node:http.
 */
const FIRST_ONLY: ReadonlySet<string> = new Set([
  'content-type',
  'content-length',
  'user-agent',
  'referer',
  'host',
  'authorization',
  'proxy-authorization',
  'if-modified-since',
  'if-unmodified-since',
  'from',
  'location',
  'max-forwards',
  'retry-after',
  'etag',
  'last-modified',
  'server',
  'age',
  'expires',
]);

/** Adds one field line the way node:http does: set-cookie as a list, cookie joined by `; `, others by `, `. */
function addField(headers: IncomingHttpHeaders, name: string, value: string): void {
  const existing = headers[name];
  if (existing === undefined) {
    headers[name] = name === 'set-cookie' ? [value] : value;
  } else if (name === 'set-cookie') {
    (existing as string[]).push(value);
  } else if (!FIRST_ONLY.has(name)) {
    headers[name] = `${existing}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
}

type Framing = 'none' | 'length' | 'chunked' | 'close';

export interface Head {
  status: number;
  minor: number;
  headers: IncomingHttpHeaders;
  framing: Framing;
  length: number;
}

function tokenCharacters(): Uint8Array {
  const table = new Uint8Array(128);
  for (const character of "!#$%&'*+-.^_`|~") table[character.charCodeAt(0)] = 1;
  for (let code = 48; code <= 57; code++) table[code] = 1;
  for (let code = 65; code <= 90; code++) table[code] = 1;
  for (let code = 97; code <= 122; code++) table[code] = 1;
  return table;
}

/**
 * Every character of the head may stand in a field value (RFC 9110 §5.5: HTAB, visible characters, space,
 * obs-text, as node:http allows), and every CR and LF is a CRLF line break (a bare one is refused, as llhttp
 * refuses it). One pass of character codes: a regular expression, a split and a test per name cost a
 * translated call more than the rest of its parsing (perf, at 1 connection).
 */
function checkHeadCharacters(text: string): void {
  const length = text.length;
  for (let index = 0; index < length; index++) {
    const code = text.charCodeAt(index);
    if ((code >= 0x20 && code !== 0x7f) || code === 9) continue;
    if (code === 13 && text.charCodeAt(index + 1) === 10) {
      index++;
      continue;
    }
    throw new ResponseParseError('a control character in the head');
  }
}

/**
 * Waiting for a CRLF: a bare LF or CR already there means the line never ends as RFC 9112 §2.2 frames it.
 * Refused at once, as llhttp refuses it, instead of waiting for the deadline on a kept-alive connection.
 * (A CR as the last byte may be the first half of a CRLF split across reads.)
 */
function refuseBareLineBreak(data: Buffer, offset: number): void {
  for (let lf = data.indexOf(10, offset); lf !== -1; lf = data.indexOf(10, lf + 1)) {
    if (lf === offset || data[lf - 1] !== 13) throw new ResponseParseError('a line not ended by CRLF');
  }
  for (let cr = data.indexOf(13, offset); cr !== -1 && cr + 1 < data.length; cr = data.indexOf(13, cr + 1)) {
    if (data[cr + 1] !== 10) throw new ResponseParseError('a line not ended by CRLF');
  }
}

function isDigit(code: number): boolean {
  return code >= 48 && code <= 57;
}

/** RFC 9112 §4: `HTTP/1.x NNN[ reason]` ending at `end`; the status and the minor version. */
function parseStatusLine(text: string, end: number): { minor: number; status: number } {
  const minor = text.charCodeAt(7) - 48;
  const hundreds = text.charCodeAt(9);
  if (
    end < 12 ||
    !text.startsWith('HTTP/1.') ||
    (minor !== 0 && minor !== 1) ||
    text.charCodeAt(8) !== 32 ||
    hundreds < 49 ||
    hundreds > 57 ||
    !isDigit(text.charCodeAt(10)) ||
    !isDigit(text.charCodeAt(11)) ||
    (end > 12 && text.charCodeAt(12) !== 32)
  ) {
    throw new ResponseParseError('not an HTTP/1.x status line');
  }
  const status = (hundreds - 48) * 100 + (text.charCodeAt(10) - 48) * 10 + (text.charCodeAt(11) - 48);
  return { minor, status };
}

/** The field name in `[start, colon)`, lower-cased (RFC 9110 §5.1: a token, compared without case). */
function fieldName(text: string, start: number, colon: number): string {
  let upper = false;
  for (let index = start; index < colon; index++) {
    const code = text.charCodeAt(index);
    if (code >= 128 || TCHAR[code] === 0) throw new ResponseParseError('a field name that is not a token');
    if (code >= 65 && code <= 90) upper = true;
  }
  const name = text.slice(start, colon);
  return upper ? name.toLowerCase() : name;
}

/** The field value in `[start, end)` without its surrounding spaces and tabs (RFC 9110 §5.5 OWS). */
function fieldValue(text: string, start: number, end: number): string {
  let from = start;
  let to = end;
  while (from < to && (text.charCodeAt(from) === 32 || text.charCodeAt(from) === 9)) from++;
  while (to > from && (text.charCodeAt(to - 1) === 32 || text.charCodeAt(to - 1) === 9)) to--;
  return text.slice(from, to);
}

/** The head of an answer (status line and field lines, without the blank line): exported for its tests. */
export function parseHead(text: string, headRequest: boolean): Head {
  checkHeadCharacters(text);
  const statusEnd = text.indexOf('\r\n');
  const { minor, status } = parseStatusLine(text, statusEnd < 0 ? text.length : statusEnd);
  // No prototype: a field named __proto__ is a field like any other.
  const headers: IncomingHttpHeaders = Object.create(null);
  let lengths = 0;
  let start = statusEnd < 0 ? text.length + 2 : statusEnd + 2;
  while (start <= text.length) {
    const found = text.indexOf('\r\n', start);
    const end = found < 0 ? text.length : found;
    const colon = text.indexOf(':', start);
    // RFC 9112 §5.2: obs-fold is rejected, as llhttp rejects it; so is a line that is not `name: value`.
    if (colon <= start || colon >= end) throw new ResponseParseError('a field line without a name');
    const name = fieldName(text, start, colon);
    if (name === 'content-length') lengths += 1;
    addField(headers, name, fieldValue(text, colon + 1, end));
    start = end + 2;
  }
  // RFC 9112 §6.3: the answer's framing, in the order the RFC gives.
  if (status < 200 || status === 204 || status === 304 || headRequest) {
    return { status, minor, headers, framing: 'none', length: 0 };
  }
  const transferEncoding = headers['transfer-encoding'];
  if (transferEncoding !== undefined) {
    // Both framings at once is how responses are smuggled (§6.3 ¶3); llhttp refuses it too.
    if (lengths > 0) throw new ResponseParseError('both Transfer-Encoding and Content-Length');
    const codings = fieldTokens(transferEncoding);
    return { status, minor, headers, framing: codings.at(-1) === 'chunked' ? 'chunked' : 'close', length: 0 };
  }
  if (lengths > 0) {
    const declared = headers['content-length'] as string;
    if (lengths > 1 || !DIGITS.test(declared)) throw new ResponseParseError('an invalid Content-Length');
    return { status, minor, headers, framing: 'length', length: Number(declared) };
  }
  return { status, minor, headers, framing: 'close', length: 0 };
}

/**
 * A trailer line is a field line (RFC 9112 §7.1.2), held to the head's rules as llhttp holds it: a bare LF
 * in one would end the trailer section for a lenient parser on the way (`X: 1\n\n`) while the shim read on,
 * and the two would disagree where the answer ends on a kept-alive connection.
 */
function checkTrailerLine(line: string): void {
  checkHeadCharacters(line);
  const colon = line.indexOf(':');
  if (colon <= 0) throw new ResponseParseError('a field line without a name');
  fieldName(line, 0, colon);
}

/**
 * RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`, and never with a
 * Transfer-Encoding (§6.1: its framing is faulty, the sender may have kept part of it back, so the connection
 * is closed after it).
 */
function persists(head: Head): boolean {
  const connection = fieldTokens(head.headers.connection);
  if (head.minor === 1) return !connection.includes('close');
  return connection.includes('keep-alive') && head.headers['transfer-encoding'] === undefined;
}

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'close' | 'done';

/**
 * Reads one answer from the bytes of a connection as they arrive: `push` each chunk, `end` at end of
 * stream. Interim (1xx) answers are skipped. Built for the buffered exchanges of translated calls, which
 * are small: the common answer (head and a Content-Length body in one chunk) costs one search and one pass
 * over its head.
 */
export class ResponseParser {
  private readonly options: ResponseParserOptions;
  private state: State = 'head';
  private pending: Buffer | undefined;
  private head: Head | undefined;
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private remaining = 0;
  private trailerBytes = 0;
  private result: ParsedResponse | undefined;

  constructor(options: ResponseParserOptions) {
    this.options = options;
  }

  /** The answer once it is whole, else undefined. Throws ResponseParseError. */
  push(chunk: Buffer): ParsedResponse | undefined {
    if (this.state === 'done') {
      // Bytes after a whole answer: the connection is out of step and is never reused.
      if (chunk.length > 0 && this.result) this.result.reusable = false;
      return this.result;
    }
    const data = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let offset = 0;
    while (!this.done() && offset < data.length) {
      const next = this.step(data, offset);
      if (next < 0) {
        // The rest of a line or of the head has not arrived yet.
        this.pending = data.subarray(offset);
        return undefined;
      }
      offset = next;
    }
    const result = this.result;
    if (result && offset < data.length) result.reusable = false;
    return result;
  }

  private done(): boolean {
    return this.state === 'done';
  }

  /** The end of the stream: completes an answer framed by the close, else the answer was cut. */
  end(): ParsedResponse {
    if (this.state === 'done' && this.result) return this.result;
    if (this.state === 'close' && this.head) return this.finish(false);
    throw new ResponseParseError('the connection closed before the answer was whole');
  }

  /** Consumes from `offset`; returns the new offset, or -1 when more bytes are needed. */
  private step(data: Buffer, offset: number): number {
    switch (this.state) {
      case 'head':
        return this.readHead(data, offset);
      case 'length': {
        const take = Math.min(this.remaining, data.length - offset);
        this.addBody(data.subarray(offset, offset + take));
        this.remaining -= take;
        if (this.remaining === 0) this.finish(persists(this.head as Head));
        return offset + take;
      }
      case 'close':
        this.addBody(offset === 0 ? data : data.subarray(offset));
        return data.length;
      case 'chunk-size': {
        const lineEnd = this.lineEnd(data, offset);
        if (lineEnd < 0) return -1;
        const match = CHUNK_SIZE.exec(data.toString('latin1', offset, lineEnd));
        if (!match) throw new ResponseParseError('an invalid chunk size');
        this.remaining = Number.parseInt(match[1] as string, 16);
        this.state = this.remaining === 0 ? 'trailers' : 'chunk-data';
        return lineEnd + 2;
      }
      case 'chunk-data': {
        const take = Math.min(this.remaining, data.length - offset);
        this.addBody(data.subarray(offset, offset + take));
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'chunk-end';
        return offset + take;
      }
      case 'chunk-end': {
        if (data.length - offset < 2) return -1;
        if (data[offset] !== 13 || data[offset + 1] !== 10)
          throw new ResponseParseError('a chunk not ended by CRLF');
        this.state = 'chunk-size';
        return offset + 2;
      }
      case 'trailers': {
        // Trailer fields are checked and dropped, as a translated answer never uses them.
        const lineEnd = this.lineEnd(data, offset);
        if (lineEnd < 0) return -1;
        this.trailerBytes += lineEnd - offset + 2;
        if (this.trailerBytes > this.options.maxHeadBytes) throw new ResponseParseError('trailers too large');
        if (lineEnd === offset) this.finish(persists(this.head as Head));
        else checkTrailerLine(data.toString('latin1', offset, lineEnd));
        return lineEnd + 2;
      }
      case 'done':
        return data.length;
    }
  }

  private readHead(data: Buffer, offset: number): number {
    const end = data.indexOf(HEAD_END, offset);
    if (end < 0) {
      if (data.length - offset > this.options.maxHeadBytes) throw new ResponseParseError('head too large');
      refuseBareLineBreak(data, offset);
      return -1;
    }
    if (end - offset > this.options.maxHeadBytes) throw new ResponseParseError('head too large');
    const head = parseHead(data.toString('latin1', offset, end), this.options.headRequest === true);
    const next = end + 4;
    if (head.status < 200) {
      // RFC 9110 §15.2: an interim answer comes before the final one. 101 switches protocols, which a
      // translated call never asks for.
      if (head.status === 101) throw new ResponseParseError('an unrequested protocol switch');
      return next;
    }
    this.head = head;
    switch (head.framing) {
      case 'none':
        this.finish(persists(head));
        break;
      case 'length':
        this.remaining = head.length;
        if (head.length > this.options.maxBodyBytes) throw new ResponseParseError('body too large');
        if (head.length === 0) this.finish(persists(head));
        else this.state = 'length';
        break;
      case 'chunked':
        this.state = 'chunk-size';
        break;
      case 'close':
        this.state = 'close';
        break;
    }
    return next;
  }

  private lineEnd(data: Buffer, offset: number): number {
    const end = data.indexOf(CRLF, offset);
    if (end < 0) {
      if (data.length - offset > MAX_CHUNK_LINE) throw new ResponseParseError('a line too long');
      refuseBareLineBreak(data, offset);
    }
    return end;
  }

  private addBody(part: Buffer): void {
    if (part.length === 0) return;
    this.size += part.length;
    if (this.size > this.options.maxBodyBytes) throw new ResponseParseError('body too large');
    this.chunks.push(part);
  }

  private finish(reusable: boolean): ParsedResponse {
    const head = this.head as Head;
    const body =
      this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks, this.size);
    this.state = 'done';
    this.result = { status: head.status, headers: head.headers, body, reusable };
    return this.result;
  }
}
