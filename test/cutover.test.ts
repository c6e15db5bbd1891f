import { describe, expect, it } from 'vitest';
import { fingerprintKey } from '../src/api-key.js';
import type { RouteConfig, Stage } from '../src/config.js';
import { canaryBucket, chooseRoute } from '../src/cutover.js';
import { DEFAULTS } from './support/shim.js';

const BASE: RouteConfig = DEFAULTS.routes['connection-metadata'];
const NOW = Date.parse('2026-01-10T12:00:00Z');

/** Fingerprints whose canary bucket is known: the first 8 hex digits place them. */
const LOW = '0000000000000000'; // bucket 0
const MID = '8000000000000000'; // bucket 50
const HIGH = 'ffffffff00000000'; // bucket ~99.99

function route(overrides: Partial<RouteConfig>): RouteConfig {
  return { ...BASE, ...overrides };
}

describe('chooseRoute', () => {
  it.each<[Stage, number, string | undefined, string, boolean]>([
    ['passthrough', 0, MID, 'passthrough', false],
    ['validate', 0, MID, 'passthrough', true],
    ['translate', 0, MID, 'translate', false],
    ['gone', 0, MID, 'gone', false],
    ['canary', 0, LOW, 'passthrough', false],
    ['canary', 1, LOW, 'translate', false],
    ['canary', 50, MID, 'passthrough', false],
    ['canary', 50.01, MID, 'translate', false],
    ['canary', 99, HIGH, 'passthrough', false],
    ['canary', 100, HIGH, 'translate', false],
    ['canary', 1, undefined, 'translate', false],
  ])('stage %s at %d%% sends %s to %s', (stage, canaryPercent, fingerprint, action, validate) => {
    const decision = chooseRoute(route({ stage, canaryPercent }), fingerprint, NOW);
    expect(decision.action).toBe(action);
    expect(decision.validate).toBe(validate);
  });

  it.each<[Stage, 'alwaysTranslate' | 'alwaysPassthrough', string]>([
    ['canary', 'alwaysTranslate', 'translate'],
    ['passthrough', 'alwaysTranslate', 'translate'],
    ['validate', 'alwaysTranslate', 'translate'],
    ['canary', 'alwaysPassthrough', 'passthrough'],
    ['translate', 'alwaysPassthrough', 'passthrough'],
  ])('in stage %s a key in %s goes to %s, whatever the percentage', (stage, list, action) => {
    const percent = list === 'alwaysTranslate' ? 0 : 100;
    const decision = chooseRoute(route({ stage, canaryPercent: percent, [list]: [MID] }), MID, NOW);
    expect(decision).toMatchObject({ action, reason: 'override' });
    expect(chooseRoute(route({ stage, canaryPercent: percent, [list]: [MID] }), LOW, NOW).reason).not.toBe(
      'override',
    );
  });

  it('answers gone to everyone once the stage is gone, overrides included', () => {
    const decision = chooseRoute(route({ stage: 'gone', alwaysTranslate: [MID] }), MID, NOW);
    expect(decision).toEqual({ action: 'gone', validate: false, reason: 'stage' });
  });

  it('answers gone during a brownout window, and only then', () => {
    const brownouts = [{ start: '2026-01-10T11:30:00Z', durationMinutes: 60 }];
    const config = route({ stage: 'translate', brownouts, alwaysTranslate: [MID] });
    expect(chooseRoute(config, MID, NOW)).toMatchObject({ action: 'gone', reason: 'brownout' });
    expect(chooseRoute(config, MID, Date.parse('2026-01-10T11:29:59Z')).action).toBe('translate');
    expect(chooseRoute(config, MID, Date.parse('2026-01-10T12:30:00Z')).action).toBe('translate');
  });

  it('never flips a key at a fixed percentage, and raising the percentage only adds keys', () => {
    const keys = Array.from({ length: 500 }, (_, i) => i.toString(16).padStart(4, '0').repeat(4));
    const translatedAt = (percent: number) =>
      new Set(
        keys.filter(
          (fp) =>
            chooseRoute(route({ stage: 'canary', canaryPercent: percent }), fp, NOW).action === 'translate',
        ),
      );
    let previous = new Set<string>();
    for (const percent of [0, 5, 10, 25, 50, 75, 100]) {
      const now = translatedAt(percent);
      expect(translatedAt(percent)).toEqual(now);
      for (const fp of previous) expect(now.has(fp)).toBe(true);
      previous = now;
    }
    expect(previous.size).toBe(keys.length);
  });

  it('spreads real fingerprints evenly over the buckets', () => {
    const buckets = Array.from({ length: 2000 }, (_, i) => canaryBucket(fingerprintKey(`key-${i}`)));
    const belowQuarter = buckets.filter((b) => b < 25).length;
    expect(belowQuarter).toBeGreaterThan(400);
    expect(belowQuarter).toBeLessThan(600);
    expect(buckets.every((b) => b >= 0 && b < 100)).toBe(true);
  });
});
