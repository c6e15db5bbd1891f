import { describe, expect, it } from 'vitest';
import { originForm, pathOf, splitTarget } from '../src/request-target.js';

describe('request targets', () => {
  it('splits path and query as received', () => {
    expect(splitTarget('/connection/a%40b?provider_config_key=x&y')).toEqual({
      path: '/connection/a%40b',
      query: 'provider_config_key=x&y',
    });
    expect(splitTarget('/connection/metadata?')).toEqual({ path: '/connection/metadata', query: '' });
    expect(pathOf('/connections')).toBe('/connections');
    expect(pathOf('/connections?x=1')).toBe('/connections');
  });

  it('reduces the absolute form to its path and refuses targets with none (RFC 9112 §3.2.2)', () => {
    expect(originForm('/connection/metadata')).toBe('/connection/metadata');
    expect(originForm('http://evil.example/connection/metadata?a=1')).toBe('/connection/metadata?a=1');
    expect(originForm('WSS://evil.example/socket')).toBe('/socket');
    expect(originForm('*')).toBeUndefined();
    expect(originForm('ftp://evil.example/x')).toBeUndefined();
  });

  // Nango's router: parseurl hands a target with `#` to url.parse, which drops the fragment.
  it('ends the path at a fragment as Nango does, and keeps no fragment in the query', () => {
    expect(pathOf('/connection/metadata#x')).toBe('/connection/metadata');
    expect(pathOf('/connection/metadata/#?a=1')).toBe('/connection/metadata/');
    expect(splitTarget('/connection/c1?provider_config_key=x#frag')).toEqual({
      path: '/connection/c1',
      query: 'provider_config_key=x',
    });
    expect(splitTarget('/connection/c1#?provider_config_key=x')).toEqual({
      path: '/connection/c1',
      query: '',
    });
    expect(splitTarget('/connection?a=1#b?c')).toEqual({ path: '/connection', query: 'a=1' });
  });

  // url.parse, not WHATWG URL: no dot segment is resolved, so the shim claims no route Nango answers 404.
  it('reads the path of the absolute form as Nango does, dot segments kept', () => {
    expect(originForm('http://h/x/%2e%2e/connection/metadata')).toBe('/x/%2e%2e/connection/metadata');
    expect(originForm('http://h/x/../connection/metadata')).toBe('/x/../connection/metadata');
    expect(originForm('http://h\\connection\\metadata?a=\\')).toBe('/connection/metadata?a=\\');
    expect(originForm('http://h')).toBe('/');
    expect(originForm('http://h?x=1')).toBe('/?x=1');
    expect(originForm('http://h#f')).toBe('/#f');
  });
});
