import { describe, expect, it } from 'vitest';
import { weakEtag } from '../src/etag.js';
import { CAPTURE_FILES, loadCaptures } from './support/captures.js';

/** Every captured answer that carried an ETag, with the bytes it described. */
const TAGGED = CAPTURE_FILES.flatMap((file) =>
  loadCaptures(file).flatMap((entry) => {
    const response = entry.response;
    const tag = response && Object.entries(response.headers).find(([name]) => name.toLowerCase() === 'etag');
    return response && tag && entry.request?.method !== 'HEAD'
      ? [{ name: `${file}: ${entry.name}`, body: response.body, etag: String(tag[1]) }]
      : [];
  }),
);

describe('weakEtag', () => {
  it('is the ETag Nango 0.71.4 sent with every captured body', () => {
    expect(TAGGED.length).toBeGreaterThan(50);
    for (const answer of TAGGED) {
      expect({ name: answer.name, etag: weakEtag(Buffer.from(answer.body)) }).toEqual({
        name: answer.name,
        etag: answer.etag,
      });
    }
  });

  it('counts bytes, not characters, and tags an empty body as Express does', () => {
    expect(weakEtag(Buffer.alloc(0))).toBe('W/"0-2jmj7l5rSw0yVb/vlWAYkK/YBwk"');
    expect(weakEtag(Buffer.from('"é"'))).toMatch(/^W\/"4-[A-Za-z0-9+/]{27}"$/);
  });
});
