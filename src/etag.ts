import { createHash } from 'node:crypto';

/**
 * Express's default ETag of a body it sends (the `etag` package, weak): the byte length in hex and the first
 * 27 characters of the base64 SHA-1. path-style.json: `{"legacy":"patch","n":1}` is `W/"18-idd/eVdDr5dFZ1JmL3xTcOetIy4"`.
 * A body the shim rebuilt gets the validator Nango's own route would have sent with it.
 */
export function weakEtag(body: Buffer): string {
  const hash = createHash('sha1').update(body).digest('base64').slice(0, 27);
  return `W/"${body.length.toString(16)}-${hash}"`;
}

/**
 * The validator of a body the shim rebuilt: where the upstream's answer carried an ETag, Nango's legacy route
 * would have sent one computed from the body it sent (Express's default, path-style.json). An empty rebuilt
 * body is the legacy route's `res.send(undefined)`, which Express sends without one.
 */
export function rewrittenEtag(upstreamEtag: string | undefined, body: Buffer): string | undefined {
  return upstreamEtag === undefined || body.length === 0 ? undefined : weakEtag(body);
}
