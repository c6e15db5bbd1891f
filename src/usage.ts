import type { Logger } from 'pino';
import type { RouteId, Stage } from './config.js';
import { infoLineWriter } from './logger.js';

/** What the shim did with a deprecated call. */
export type UsageAction =
  | 'translated'
  | 'passed-through'
  | 'rejected'
  | 'gone'
  | 'failed'
  | 'rate-limited'
  | 'client-closed';

/**
 * The validate stage's report: what the translation would have answered, next to what the legacy route
 * really answered.
 */
export interface ValidationReport {
  /** The status the translation would answer, or undefined when the upstream decides it. */
  predictedStatus: number | undefined;
  predictedCode: string | undefined;
  /**
   * Who would give that answer: the `shim` itself (before any upstream call), the `successor` (a refusal of
   * the rewritten call, or with no status whatever it decides), or the legacy route's own controller behind
   * the successor's path (`same-controller`: whatever the legacy route answered).
   */
  predictedBy: 'shim' | 'successor' | 'same-controller';
  actualStatus?: number;
  agrees?: boolean;
}

/** What Nango answers before it reads a body (auth, scope, rate limit), on the legacy and successor routes alike. */
const DECIDED_BEFORE_THE_BODY: ReadonlySet<number> = new Set([401, 403, 429]);

/**
 * Whether the legacy route's real answer is what the translation would have answered, both ways: a local
 * answer must match the status exactly; a refusal the successor would give must meet the same status, or an
 * answer Nango gives before it reads the body (the successor would have given it too); a call the successor
 * would judge must not have been refused as invalid by the legacy route (400/415), which would mean the shim
 * lets through what Nango rejects; and the legacy route's own controller answers the same under either path.
 */
export function settleValidation(report: ValidationReport, actualStatus: number): ValidationReport {
  return { ...report, actualStatus, agrees: agreesWith(report, actualStatus) };
}

function agreesWith(report: ValidationReport, actualStatus: number): boolean {
  switch (report.predictedBy) {
    case 'same-controller':
      return true;
    case 'shim':
      return report.predictedStatus === actualStatus;
    case 'successor':
      if (report.predictedStatus === undefined) return actualStatus !== 400 && actualStatus !== 415;
      return report.predictedStatus === actualStatus || DECIDED_BEFORE_THE_BODY.has(actualStatus);
  }
}

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
  /** Only in the validate stage. */
  validation?: ValidationReport;
}

export interface UsageSink {
  record(event: UsageEvent): void;
}

/**
 * The first-cut sink: one JSON line per deprecated call with a fixed message, the fields in this order.
 * Written by infoLineWriter: what `logger.info({route, method, …}, msg)` would write, at a third of the cost.
 */
export function createUsageLog(logger: Logger): UsageSink {
  const write = infoLineWriter(logger, 'deprecated endpoint called');
  const json = JSON.stringify;
  return {
    record(event) {
      write(
        `,"route":${json(event.routeId)},"method":${json(event.method)},"path":${json(event.path)}` +
          `,"fingerprint":${json(event.fingerprint ?? null)},"userAgent":${json(event.userAgent ?? null)}` +
          `,"status":${json(event.status)},"durationMs":${json(event.durationMs)}` +
          `,"stage":${json(event.stage)},"action":${json(event.action)}` +
          (event.validation ? `,"validation":${json(event.validation)}` : ''),
      );
    },
  };
}

export const STATUS_CLASSES = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;
export type StatusClass = (typeof STATUS_CLASSES)[number];

/** `2xx` for 204 and so on; a constant string, so counting by class allocates nothing. */
export function statusClass(status: number): StatusClass {
  return STATUS_CLASSES[Math.floor(status / 100)] ?? '0xx';
}

/** Who a deprecated call counts for when the upstream refused its key: never the key's own fingerprint. */
export const UNAUTHENTICATED = 'unauthenticated';
/** Who the unnamed fingerprints past `metrics.maxConsumers` count for, in the metrics and the ledger. */
export const OTHER_CONSUMERS = 'other';
/** Who a call without any API key counts for. */
export const ANONYMOUS = 'anonymous';

/**
 * The consumer a call is counted for: its key's fingerprint, except that a call refused with 401/403 counts
 * as `unauthenticated` and a keyless one as `anonymous`. Random or mistyped keys are refused, so they
 * cannot add consumers to the metrics or the ledger.
 */
export function consumerOf(event: Pick<UsageEvent, 'fingerprint' | 'status'>): string {
  if (event.status === 401 || event.status === 403) return UNAUTHENTICATED;
  return event.fingerprint ?? ANONYMOUS;
}
