import type { RouteConfig } from './config.js';

/** What happens to one deprecated call. */
export type RouteAction = 'passthrough' | 'translate' | 'gone';

export interface RouteDecision {
  action: RouteAction;
  /** In the validate stage the call passes through and is also checked against the translation. */
  validate: boolean;
  reason: 'stage' | 'brownout' | 'override' | 'canary';
}

/** Where a key falls in the canary, in [0, 100): stable for a fingerprint, whatever the percentage. */
export function canaryBucket(fingerprint: string | undefined): number {
  // A fingerprint is already hex of SHA-256: its first 32 bits are uniformly spread. Keyless calls share
  // one bucket (0), so they follow the canary as soon as it starts.
  if (fingerprint === undefined) return 0;
  return (Number.parseInt(fingerprint.slice(0, 8), 16) / 0x1_0000_0000) * 100;
}

export function activeBrownout(route: RouteConfig, now: number): boolean {
  for (const window of route.brownouts) {
    const start = Date.parse(window.start);
    if (now >= start && now < start + window.durationMinutes * 60_000) return true;
  }
  return false;
}

/**
 * The cutover decision, pure: stage × canary percentage × per-key overrides × time.
 * - `gone` and an active brownout window answer 410, whoever calls.
 * - Otherwise per-key overrides win (always translate / always pass through), in every stage, so a team can
 *   try the translation for one key before the canary starts, or keep one key on the legacy route.
 * - `canary` translates a key when its stable bucket is below `canaryPercent`: raising the percentage only
 *   adds keys, and a key never flips between requests at a fixed percentage.
 */
export function chooseRoute(route: RouteConfig, fingerprint: string | undefined, now: number): RouteDecision {
  if (route.stage === 'gone') return { action: 'gone', validate: false, reason: 'stage' };
  if (route.brownouts.length > 0 && activeBrownout(route, now)) {
    return { action: 'gone', validate: false, reason: 'brownout' };
  }
  if (fingerprint !== undefined) {
    if (route.alwaysTranslate.includes(fingerprint))
      return { action: 'translate', validate: false, reason: 'override' };
    if (route.alwaysPassthrough.includes(fingerprint)) {
      return { action: 'passthrough', validate: route.stage === 'validate', reason: 'override' };
    }
  }
  switch (route.stage) {
    case 'passthrough':
      return { action: 'passthrough', validate: false, reason: 'stage' };
    case 'validate':
      return { action: 'passthrough', validate: true, reason: 'stage' };
    case 'translate':
      return { action: 'translate', validate: false, reason: 'stage' };
    case 'canary':
      return canaryBucket(fingerprint) < route.canaryPercent
        ? { action: 'translate', validate: false, reason: 'canary' }
        : { action: 'passthrough', validate: false, reason: 'canary' };
  }
}
