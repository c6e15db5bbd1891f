import type { Logger } from 'pino';
import type { RouteId, Stage } from './config.js';

/** What the shim did with a deprecated call. */
export type UsageAction = 'translated' | 'passed-through' | 'rejected' | 'gone' | 'failed';

/** One deprecated call, as every usage sink sees it. Carries the key's fingerprint, never the key. */
export interface UsageEvent {
  routeId: RouteId;
  method: string;
  path: string;
  fingerprint: string | undefined;
  userAgent: string | undefined;
  status: number;
  durationMs: number;
  stage: Stage;
  action: UsageAction;
  at: number;
}

export interface UsageSink {
  record(event: UsageEvent): void;
}

/** The first-cut sink: one JSON line per deprecated call with a fixed message. */
export function createUsageLog(logger: Logger): UsageSink {
  return {
    record(event) {
      logger.info(
        {
          route: event.routeId,
          method: event.method,
          path: event.path,
          fingerprint: event.fingerprint ?? null,
          userAgent: event.userAgent ?? null,
          status: event.status,
          durationMs: event.durationMs,
          stage: event.stage,
          action: event.action,
        },
        'deprecated endpoint called',
      );
    },
  };
}
