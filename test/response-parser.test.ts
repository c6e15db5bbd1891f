import http from 'node:http';
import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type ParsedResponse,
  parseHead,
  ResponseParseError,
  ResponseParser,
  type ResponseParserOptions,
} from '../src/response-parser.js';
import { type Closable, closedAfterEach } from './support/cleanup.js';
import { listen, readAll } from './support/upstream.js';

const LIMITS: ResponseParserOptions = { maxHeadBytes: 16 * 1024, maxBodyBytes: 1024 * 1024 };

/** Feeds `raw` in pieces of `size` bytes (Infinity: one piece); ends the stream when nothing answered yet. */
function parse(raw: string | Buffer, size = Number.POSITIVE_INFINITY, options = LIMITS): ParsedResponse {
  const bytes = typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw;
  const parser = new ResponseParser(options);
  let answer: ParsedResponse | undefined;
  const step = Number.isFinite(size) ? size : bytes.length;
  for (let offset = 0; offset < bytes.length; offset += step) {
    answer = parser.push(bytes.subarray(offset, offset + step)) ?? answer;
  }
  return answer ?? parser.end();
}

function plain(answer: ParsedResponse) {
  return { ...answer, headers: { ...answer.headers }, body: answer.body.toString('latin1') };
}

const ANSWERS: Record<string, string> = {
  'Content-Length':
    'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}',
  chunked:
    'HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4;name=value\r\n{"a"\r\n7\r\n:[1,2]}\r\n0\r\nX-Trailer: t\r\n\r\n',
  'an interim answer first':
    'HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}',
  'repeated fields':
    'HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Many: one\r\nContent-Type: text/plain\r\nSet-Cookie: b=2\r\n' +
    'X-Many: two\r\nContent-Type: text/html\r\nCookie: c=3\r\nCookie: d=4\r\nETag: "1"\r\nETag: "2"\r\n' +
    'Content-Length: 0\r\n\r\n',
  'no reason phrase, padded values': 'HTTP/1.1 404\r\nX-Pad: \t spaced out \t\r\nContent-Length: 1\r\n\r\nx',
  'no framing (body until close)': 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it',
  // RFC 9112 §7.1: chunk-size is 1*HEXDIG, so any number of leading zeros (a fixed-width 64-bit size, say).
  'a chunk size padded with leading zeros':
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000002\r\n{}\r\n00000000000000000\r\n\r\n',
  'an HTTP/1.0 answer': 'HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold',
  'obs-text in a value': 'HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\nContent-Length: 0\r\n\r\n',
};

/** What node:http's own client makes of the same bytes, sent by a raw server that then closes. */
async function throughNodeHttp(raw: string, track: (server: Closable) => Closable) {
  const server = net.createServer((socket) => {
    socket.once('data', () => socket.end(Buffer.from(raw, 'latin1')));
  });
  track({ close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
  const port = await listen(server);
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>(
    (resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
          // An answer node:http cannot finish (it aborts) rejects at once instead of never settling.
          readAll(res).then(
            (body) =>
              resolve({
                status: res.statusCode ?? 0,
                headers: { ...res.headers },
                body: body.toString('latin1'),
              }),
            reject,
          );
        })
        .on('error', reject);
    },
  );
}

describe('an answer read as node:http reads it', () => {
  const track = closedAfterEach();

  for (const [name, raw] of Object.entries(ANSWERS)) {
    it(`agrees with node:http on ${name}, whole or a byte at a time`, async () => {
      const oracle = await throughNodeHttp(raw, track);
      for (const size of [Number.POSITIVE_INFINITY, 1, 7]) {
        const answer = plain(parse(raw, size));
        expect({ status: answer.status, headers: answer.headers, body: answer.body }).toEqual(oracle);
      }
    });
  }
});

describe('an answer that must not have a body', () => {
  const track = closedAfterEach();
  const raw = 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n';

  // node:http agrees from Node 20.20 on; Node 20.19's client waits for the five bytes and aborts when the
  // connection closes, so there the rule itself is the oracle.
  it('reads none after a 204 whatever its Content-Length says (RFC 9112 §6.3 ¶1), as node:http does', async () => {
    const oracle = await throughNodeHttp(raw, track).catch(() => undefined);
    for (const size of [Number.POSITIVE_INFINITY, 1, 7]) {
      const answer = parse(raw, size);
      expect(plain(answer)).toEqual({
        status: 204,
        headers: { 'content-length': '5' },
        body: '',
        reusable: true,
      });
      if (oracle) expect({ status: answer.status, headers: { ...answer.headers }, body: '' }).toEqual(oracle);
    }
  });
});

describe('the connection after an answer', () => {
  it('is reusable after a framed HTTP/1.1 answer, Content-Length or chunked', () => {
    expect(parse(ANSWERS['Content-Length'] as string).reusable).toBe(true);
    expect(parse(ANSWERS.chunked as string, 3).reusable).toBe(true);
  });

  it('is not reusable when the answer says Connection: close, whatever the case', () => {
    expect(
      parse('HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n').reusable,
    ).toBe(false);
  });

  it('is reusable after HTTP/1.0 only with Connection: keep-alive', () => {
    expect(parse('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n').reusable).toBe(false);
    expect(parse('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n').reusable).toBe(
      true,
    );
  });

  it('is not reusable after an HTTP/1.0 answer with Transfer-Encoding, even one saying keep-alive (RFC 9112 §6.1)', () => {
    const answer = parse(
      'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n',
    );
    expect(answer.body.toString()).toBe('{}');
    expect(answer.reusable).toBe(false);
  });

  it('is not reusable after an answer framed by the close', () => {
    const parser = new ResponseParser(LIMITS);
    expect(parser.push(Buffer.from('HTTP/1.1 200 OK\r\n\r\npart one, '))).toBeUndefined();
    expect(parser.push(Buffer.from('part two'))).toBeUndefined();
    const answer = parser.end();
    expect(answer.body.toString()).toBe('part one, part two');
    expect(answer.reusable).toBe(false);
  });

  it('is not reusable when bytes follow the answer, in the same chunk or later', () => {
    expect(parse('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n').reusable).toBe(false);
    const parser = new ResponseParser(LIMITS);
    const answer = parser.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}'));
    expect(answer?.reusable).toBe(true);
    parser.push(Buffer.from('x'));
    expect(answer?.reusable).toBe(false);
  });

  it('reads no body after a HEAD request, whatever Content-Length says', () => {
    const answer = parse('HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n', 1, {
      ...LIMITS,
      headRequest: true,
    });
    expect(answer.body.length).toBe(0);
    expect(answer.reusable).toBe(true);
  });

  it('keeps a field named __proto__ as a field, not a prototype', () => {
    const answer = parse('HTTP/1.1 200 OK\r\n__proto__: x\r\nContent-Length: 0\r\n\r\n');
    expect(Object.getPrototypeOf(answer.headers)).toBeNull();
    expect(Object.getOwnPropertyDescriptor(answer.headers, '__proto__')?.value).toBe('x');
  });
});

describe('an answer that cannot be trusted', () => {
  const refused: Record<string, string> = {
    'a status line that is not HTTP/1.x': 'HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n',
    'a three-digit status it cannot read': 'HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n',
    'a folded field line (obs-fold)': 'HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n',
    'a field line without a colon': 'HTTP/1.1 200 OK\r\nnot a field\r\nContent-Length: 0\r\n\r\n',
    'a field name with a space': 'HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n',
    'a control character in a value': 'HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n',
    'a bare LF in a field line': 'HTTP/1.1 200 OK\r\nX-A: a\nb\r\nContent-Length: 0\r\n\r\n',
    'a bare CR in a field line': 'HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n',
    'Content-Length and Transfer-Encoding together':
      'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'two Content-Length fields': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}',
    'a Content-Length that is not a number': 'HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n',
    'a chunk size that is not hexadecimal': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    'a chunk not ended by CRLF': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n',
    // As llhttp refuses them: trailer lines are field lines (RFC 9112 §7.1.2), though their CRLF comes later.
    'a trailer line broken by a bare LF':
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\nHTTP/1.1 200 OK\r\n\r\n',
    'a trailer line without a colon':
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nnot a field\r\n\r\n',
    'a trailer field name with a space':
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX T: 1\r\n\r\n',
    'an unrequested 101': 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n',
    'a cut Content-Length body': 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort',
    'a cut chunked body': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab',
    'a cut head': 'HTTP/1.1 200 OK\r\nContent-Len',
  };
  for (const [name, raw] of Object.entries(refused)) {
    it(`refuses ${name}`, () => {
      expect(() => parse(raw)).toThrow(ResponseParseError);
      expect(() => parse(raw, 1)).toThrow(ResponseParseError);
    });
  }

  it('refuses a line broken by a bare LF or CR at once, without waiting for a CRLF that never comes', () => {
    // Each is a head or chunk line that will never end in CRLF: llhttp refuses it at once, and so must the
    // parser, or a kept-alive connection waits for the deadline (push returns undefined: more bytes needed).
    const unended = [
      'HTTP/1.1 200 OK\nContent-Length: 2\n\n{}',
      'HTTP/1.1 200 OK\r\nContent-Length: 2\n\n{}',
      'HTTP/1.1 200 OK\rContent-Length: 2',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\n0\n\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\n\n',
    ];
    for (const raw of unended) {
      expect(() => new ResponseParser(LIMITS).push(Buffer.from(raw, 'latin1')), raw).toThrow(
        /a line not ended by CRLF/,
      );
    }
  });

  it('waits for the LF of a CRLF split across reads', () => {
    const parser = new ResponseParser(LIMITS);
    expect(parser.push(Buffer.from('HTTP/1.1 200 OK\r'))).toBeUndefined();
    expect(parser.push(Buffer.from('\nContent-Length: 2\r'))).toBeUndefined();
    expect(parser.push(Buffer.from('\n\r\n{}'))?.status).toBe(200);
  });

  it('refuses a head over the limit, before it ends', () => {
    const parser = new ResponseParser({ ...LIMITS, maxHeadBytes: 64 });
    expect(() => parser.push(Buffer.from(`HTTP/1.1 200 OK\r\nX-Long: ${'a'.repeat(100)}`))).toThrow(
      /head too large/,
    );
  });

  it('refuses a body over the limit, declared or chunked', () => {
    const options = { ...LIMITS, maxBodyBytes: 4 };
    expect(() => parse('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n', 1, options)).toThrow(/body too large/);
    expect(() =>
      parse(
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n',
        2,
        options,
      ),
    ).toThrow(/body too large/);
    expect(() => parse('HTTP/1.1 200 OK\r\n\r\nabcdef', 1, options)).toThrow(/body too large/);
  });
});

/**
 * The rules of a head as regular expressions (RFC 9112 §4 and §5, RFC 9110 §5.1 and §5.5): the statement
 * the parser's character-by-character reading must agree with, error for error.
 */
function headByTheRules(text: string): { status: number; minor: number; headers: Record<string, string> } {
  if (/[^\t\r\n\x20-\x7e\x80-\xff]|\r(?!\n)|(?<!\r)\n/.test(text))
    throw new Error('a control character in the head');
  const lines = text.split('\r\n');
  const statusLine = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: [^\r\n]*)?$/.exec(lines[0] ?? '');
  if (!statusLine) throw new Error('not an HTTP/1.x status line');
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error('a field line without a name');
    const name = line.slice(0, colon);
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) throw new Error('a field name that is not a token');
    const lower = name.toLowerCase();
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    // RFC 9110 §5.3: repeated field lines combine with a comma.
    headers[lower] = lower in headers ? `${headers[lower]}, ${value}` : value;
  }
  return { status: Number(statusLine[2]), minor: Number(statusLine[1]), headers };
}

type Outcome = { status: number; minor: number; headers: object } | { error: string };

function outcome(read: () => { status: number; minor: number; headers: object }): Outcome {
  try {
    const { status, minor, headers } = read();
    return { status, minor, headers: { ...headers } };
  } catch (error) {
    return { error: (error as Error).message };
  }
}

describe('a head read character by character', () => {
  const characters = (alphabet: string, maxLength: number) =>
    fc.string({ unit: fc.constantFrom(...alphabet), maxLength });
  const statusLine = fc.oneof(
    fc.constantFrom('HTTP/1.1 200 OK', 'HTTP/1.0 404', 'HTTP/1.1 503 ', 'HTTP/1.1 299 a\tb\xe9'),
    fc.constantFrom('HTTP/1.2 200 OK', 'HTTP/1.1 20', 'HTTP/1.1 2000', 'HTTP/1.1 099 x', 'http/1.1 200'),
    fc.constantFrom('HTTP/1.1  200', 'HTTP/1.1 200\tOK', 'HTTP/1.1 2a0', ' HTTP/1.1 200', ''),
    characters('HTP/1. 02\t:\r\n\x01', 16),
  );
  // No name here is one node:http keeps apart or combines in its own way (Set-Cookie, Cookie, the fields it
  // keeps the first of): those are checked against node:http above.
  const fieldLine = fc.oneof(
    fc
      .tuple(
        characters('aZx-_~!9', 6),
        characters(' \t', 2),
        characters('va lue\t\xe9"/', 10),
        characters(' \t', 2),
      )
      .map(([name, before, value, after]) => `x${name}:${before}${value}${after}`),
    characters('aZ:-\t \r\n\x00\x7f\xff(', 12),
  );
  const head = fc
    .tuple(statusLine, fc.array(fieldLine, { maxLength: 6 }))
    .map(([status, fields]) => [status, ...fields].join('\r\n'))
    .filter((text) => !text.includes('\r\n\r\n'));

  it('agrees with the rules on any head: the same fields, or the same refusal', () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(head, (text) => {
        const expected = outcome(() => headByTheRules(text));
        expect(outcome(() => parseHead(text, false))).toEqual(expected);
        seen.add('error' in expected ? expected.error : 'read');
      }),
      { numRuns: 5000 },
    );
    // Every outcome was reached: heads read, and each of the four refusals.
    expect(seen.size).toBe(5);
  });
});
