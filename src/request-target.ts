/**
 * Where a target's path ends: at its query or its fragment. A fragment never belongs in a request target,
 * but node:http passes it on, and Nango's router (Express 5, parseurl, which hands any `#` to url.parse)
 * drops it and routes `/connection/metadata#x` to the legacy handler: so must the shim's matching.
 */
function pathEnd(url: string): number {
  const query = url.indexOf('?');
  const fragment = url.indexOf('#');
  if (fragment === -1) return query === -1 ? url.length : query;
  return query === -1 || fragment < query ? fragment : query;
}

/** The two halves of an origin-form request target, as received (nothing decoded), without a fragment. */
export function splitTarget(url: string): { path: string; query: string } {
  const end = pathEnd(url);
  if (end === url.length) return { path: url, query: '' };
  const path = url.slice(0, end);
  if (url.charCodeAt(end) !== 63) return { path, query: '' };
  const fragment = url.indexOf('#', end);
  return { path, query: url.slice(end + 1, fragment === -1 ? url.length : fragment) };
}

/** The path of a target without its query or fragment; no new string when it has neither (the hot path). */
export function pathOf(url: string): string {
  const end = pathEnd(url);
  return end === url.length ? url : url.slice(0, end);
}

const ABSOLUTE_FORM = /^(?:https?|wss?):\/\/[^/]*/i;

/**
 * RFC 9112 §3.2.2: a server must accept the absolute form (`GET http://host/path`) and use its path. The
 * host in it is ignored (the shim only ever connects to the configured upstream), and the path is matched
 * like any other, so the absolute form cannot slip a legacy call past its migration. The path is read as
 * Nango's router reads it (url.parse): backslashes before the query or fragment are slashes, and nothing
 * else changes; WHATWG URL would also resolve `..` and `%2e%2e`, claiming routes Nango answers 404.
 * Undefined for a target that is neither form (e.g. `*`).
 */
export function originForm(target: string): string | undefined {
  if (target.charCodeAt(0) === 47) return target;
  const end = pathEnd(target);
  const head = target.slice(0, end).replaceAll('\\', '/');
  const authority = ABSOLUTE_FORM.exec(head);
  if (!authority) return undefined;
  return (head.slice(authority[0].length) || '/') + target.slice(end);
}
