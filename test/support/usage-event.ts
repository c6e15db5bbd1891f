import type { UsageEvent } from '../../src/usage.js';

/** A translated legacy PATCH by @nangohq/node 0.66.2, as a usage sink receives it; fields overridable. */
export function usageEvent(overrides: Partial<UsageEvent> = {}): UsageEvent {
  return {
    routeId: 'connection-metadata',
    method: 'PATCH',
    path: '/connection/metadata',
    fingerprint: undefined,
    userAgent: 'nango-node/0.66.2',
    status: 200,
    durationMs: 1,
    stage: 'translate',
    action: 'translated',
    at: Date.now(),
    ...overrides,
  };
}
