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
});
