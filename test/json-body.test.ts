import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { nangoJsonMessage, parseJsonBody } from '../src/json-body.js';

const json = { 'content-type': 'application/json', 'content-length': '1' };

describe('parseJsonBody', () => {
  it('leaves a body without a JSON content type unparsed', () => {
    expect(parseJsonBody({ 'content-length': '2' }, Buffer.from('{}'))).toEqual({ kind: 'absent' });
    expect(parseJsonBody({ 'content-type': 'text/plain', 'content-length': '2' }, Buffer.from('{}'))).toEqual(
      {
        kind: 'absent',
      },
    );
  });

  it('parses an empty JSON body as {}', () => {
    expect(parseJsonBody({ ...json, 'content-length': '0' }, Buffer.alloc(0))).toEqual({
      kind: 'json',
      value: {},
    });
  });

  it('treats a request without framing headers as having no body', () => {
    expect(parseJsonBody({ 'content-type': 'application/json' }, Buffer.alloc(0))).toEqual({
      kind: 'absent',
    });
  });

  it('rejects top-level scalars with the message body-parser gives', () => {
    expect(parseJsonBody(json, Buffer.from('null'))).toEqual({
      kind: 'invalid',
      message: `Unexpected token 'n', "null" is not valid JSON`,
    });
    expect(parseJsonBody(json, Buffer.from('"hello"'))).toEqual({
      kind: 'invalid',
      message: `Unexpected token '"', ""hello"" is not valid JSON`,
    });
  });

  it("passes V8 syntax errors through in Nango 0.71.4's wording, whatever Node runs the tests", () => {
    // metadata-patch.json "malformed JSON": Nango answered exactly this; Node 22 and 24 add " (line 1 column 2)".
    expect(parseJsonBody(json, Buffer.from('{'))).toEqual({
      kind: 'invalid',
      message: "Expected property name or '}' in JSON at position 1",
    });
    expect(parseJsonBody(json, Buffer.from('{"a":1}x'))).toEqual({
      kind: 'invalid',
      message: 'Unexpected non-whitespace character after JSON at position 7',
    });
  });

  it("drops only the line and column V8 12 and later append to a position (Node 22's wording)", () => {
    expect(nangoJsonMessage("Expected property name or '}' in JSON at position 1 (line 1 column 2)")).toBe(
      "Expected property name or '}' in JSON at position 1",
    );
    expect(
      nangoJsonMessage('Bad control character in string literal in JSON at position 16 (line 2 column 5)'),
    ).toBe('Bad control character in string literal in JSON at position 16');
    // A client's own text that merely looks like it, inside the quoted input, is left alone.
    const quoted = `Unexpected token 'x', "x (line 1 column 2)" is not valid JSON`;
    expect(nangoJsonMessage(quoted)).toBe(quoted);
    expect(nangoJsonMessage('Unexpected end of JSON input')).toBe('Unexpected end of JSON input');
  });

  it('lets the last duplicate key win, as Nango does', () => {
    expect(parseJsonBody(json, Buffer.from('{"a":1,"a":2}'))).toEqual({ kind: 'json', value: { a: 2 } });
  });

  it('accepts a utf-8 charset parameter and refuses others', () => {
    const utf8 = { ...json, 'content-type': 'application/json; charset=UTF-8' };
    expect(parseJsonBody(utf8, Buffer.from('{}'))).toEqual({ kind: 'json', value: {} });
    const latin = { ...json, 'content-type': 'application/json; charset=latin1' };
    expect(parseJsonBody(latin, Buffer.from('{}'))).toEqual({ kind: 'unsupported-charset' });
  });

  describe('a Content-Encoding, as body-parser reads it', () => {
    const text = '{"metadata":{"plan":"pro"}}';
    const coded = (coding: string) => ({ ...json, 'content-encoding': coding });

    it.each([
      ['gzip', gzipSync(text)],
      ['GZIP', gzipSync(text)],
      ['deflate', deflateSync(text)],
      ['br', brotliCompressSync(text)],
      ['identity', Buffer.from(text)],
      ['', Buffer.from(text)],
    ])('parses a body in %j as Nango does', (coding, bytes) => {
      expect(parseJsonBody(coded(coding), bytes)).toEqual({
        kind: 'json',
        value: { metadata: { plan: 'pro' } },
      });
    });

    it.each([
      // Names body-parser does not know: the whole field is one name, and x-gzip is not one of them.
      ['x-gzip', gzipSync(text)],
      ['gzip, identity', gzipSync(text)],
      ['compress', Buffer.from(text)],
      ['zstd', Buffer.from(text)],
      // Bytes that are not in the coding named: plain JSON, raw deflate without its zlib wrapper, nothing.
      ['gzip', Buffer.from(text)],
      ['deflate', deflateRawSync(text)],
      ['gzip', Buffer.alloc(0)],
    ])('finds a body in %j that body-parser cannot decode undecodable', (coding, bytes) => {
      expect(parseJsonBody(coded(coding), bytes)).toEqual({ kind: 'undecodable' });
    });

    it('stops decoding at the limit, so a small bomb is never inflated whole', () => {
      const bomb = gzipSync(Buffer.alloc(10 * 1024 * 1024));
      expect(parseJsonBody(coded('gzip'), bomb, 64 * 1024)).toEqual({ kind: 'too-large' });
      expect(parseJsonBody(coded('gzip'), gzipSync(text), text.length)).toMatchObject({ kind: 'json' });
    });

    it('leaves a body whose type is not JSON unread, whatever its coding', () => {
      const plain = { 'content-type': 'text/plain', 'content-length': '1', 'content-encoding': 'zstd' };
      expect(parseJsonBody(plain, Buffer.from('x'))).toEqual({ kind: 'absent' });
    });
  });
});
