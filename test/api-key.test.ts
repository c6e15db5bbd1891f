import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { apiKeyOf, fingerprintOf, syntacticAuthFailure } from '../src/api-key.js';

const KEY = '3f2a9c1e-7b4d-4e8f-9a6b-1c2d3e4f5a6b';

describe('fingerprintOf', () => {
  it('is the first 16 hex characters of the SHA-256 of the key', () => {
    const expected = createHash('sha256').update(KEY).digest('hex').slice(0, 16);
    expect(fingerprintOf(`Bearer ${KEY}`)).toBe(expected);
    expect(fingerprintOf(`Bearer ${KEY}`)).not.toContain(KEY.slice(0, 8));
  });

  it('reads the key the way Nango does, scheme or not', () => {
    expect(apiKeyOf(`Bearer ${KEY}`)).toBe(KEY);
    expect(apiKeyOf(KEY)).toBe(KEY);
    expect(fingerprintOf(undefined)).toBeUndefined();
    expect(fingerprintOf('Bearer ')).toBe(fingerprintOf('Bearer '));
  });
});

describe('syntacticAuthFailure', () => {
  it.each([
    [undefined, 'missingAuthHeader'],
    ['', 'missingAuthHeader'],
    ['   ', 'missingAuthHeader'],
    ['Bearer', 'invalidSecretKeyFormat'],
    ['Bearer not-a-uuid', 'invalidSecretKeyFormat'],
    [`bearer ${KEY}`, 'invalidSecretKeyFormat'],
    [`Bearer  ${KEY}`, 'invalidSecretKeyFormat'],
    [`Bearer ${KEY}`, undefined],
    [KEY, undefined],
  ])('answers %j with %s', (header, expected) => {
    expect(syntacticAuthFailure(header)).toBe(expected);
  });
});
