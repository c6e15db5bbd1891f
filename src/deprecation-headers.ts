import type { RouteConfig } from './config.js';

/** The headers every answer of a deprecated route carries, named as node:http keeps them (lower case). */
export const DEPRECATION_HEADER_NAMES = ['deprecation', 'sunset', 'link'] as const;

export type DeprecationHeaders = Record<(typeof DEPRECATION_HEADER_NAMES)[number], string>;

const cache = new WeakMap<RouteConfig, DeprecationHeaders>();

/**
 * The standard headers for a deprecated route, computed once per active config (route objects are frozen
 * and replaced whole on reload, so the cache can never go stale).
 * - RFC 9745 §2.1: `Deprecation` is a structured-field Date, `@` followed by Unix seconds.
 * - RFC 8594 §3: `Sunset` is an HTTP-date (IMF-fixdate).
 * - RFC 9745 §3 and RFC 5829: `Link` rel="deprecation" to the documentation, rel="successor-version" to the
 *   replacement.
 */
export function deprecationHeaders(route: RouteConfig): DeprecationHeaders {
  let headers = cache.get(route);
  if (!headers) {
    headers = {
      deprecation: `@${Math.floor(Date.parse(route.deprecation) / 1000)}`,
      sunset: new Date(route.sunset).toUTCString(),
      link: `<${route.docsUrl}>; rel="deprecation"; type="text/html", <${route.successorUrl}>; rel="successor-version"`,
    };
    cache.set(route, headers);
  }
  return headers;
}
