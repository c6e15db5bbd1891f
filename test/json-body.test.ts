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
});
