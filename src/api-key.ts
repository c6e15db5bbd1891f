import { createHash } from 'node:crypto';

/** What Nango itself reads as the key: `authorization.split('Bearer ').pop()` (nango-api.md §4). */
export function apiKeyOf(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  const key = authorization.split('Bearer ').pop()?.trim();
  return key ? key : undefined;
}

/**
 * The identity of a key in every log line, metric and ledger entry: the first 16 hex characters of its
 * SHA-256. The key itself never leaves the process.
 */
export function fingerprintKey(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

/**
 * Fingerprints of the keys seen lately, by Authorization value: a SHA-256 per deprecated call was a visible
 * share of its cost, and a client sends the same key again and again. Bounded: cleared when full, so
 * random keys cannot grow it. It lives in process memory only, like the request itself.
 */
const recent = new Map<string, string | undefined>();
const RECENT_MAX = 1024;

export function fingerprintOf(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  let fingerprint = recent.get(authorization);
  if (fingerprint === undefined && !recent.has(authorization)) {
    const key = apiKeyOf(authorization);
    fingerprint = key === undefined ? undefined : fingerprintKey(key);
    if (recent.size >= RECENT_MAX) recent.clear();
    recent.set(authorization, fingerprint);
  }
  return fingerprint;
}

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/**
 * The answer Nango's secretKeyAuth gives from the header alone, before any account lookup, or undefined
 * when only the upstream can tell (auth-raw.json: empty or blank → missing; anything not a UUID v4 →
 * invalid format).
 */
export function syntacticAuthFailure(
  authorization: string | undefined,
): 'missingAuthHeader' | 'invalidSecretKeyFormat' | undefined {
  if (authorization === undefined || authorization.trim() === '') return 'missingAuthHeader';
  const key = authorization.split('Bearer ').pop() ?? '';
  return UUID_V4.test(key) ? undefined : 'invalidSecretKeyFormat';
}
