/** The two halves of an origin-form request target, as received (nothing decoded). */
export function splitTarget(url: string): { path: string; query: string } {
  const mark = url.indexOf('?');
  return mark === -1 ? { path: url, query: '' } : { path: url.slice(0, mark), query: url.slice(mark + 1) };
}

/** The path of a target without its query; no new string when there is no query (the hot path). */
export function pathOf(url: string): string {
  const mark = url.indexOf('?');
  return mark === -1 ? url : url.slice(0, mark);
}

/**
 * RFC 9112 §3.2.2: a server must accept the absolute form (`GET http://host/path`) and use its path. The
 * host in it is ignored (the shim only ever connects to the configured upstream), and the path is matched
 * like any other, so the absolute form cannot slip a legacy call past its migration. Undefined for a
 * target that is neither form (e.g. `*`).
 */
export function originForm(target: string): string | undefined {
  if (target.charCodeAt(0) === 47) return target;
  if (!/^(https?|wss?):\/\//i.test(target)) return undefined;
  try {
    const url = new URL(target);
    return url.pathname + url.search;
  } catch {
    return undefined;
  }
}
