import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { sendLocalAnswer } from './answer.js';
import { fingerprintOf } from './api-key.js';
import type { ActiveConfig } from './config.js';
import { errorAnswer } from './errors.js';
import { createForwarder, type Forwarder, type UpstreamFailure } from './forward.js';
import { translate, upstreamFailureAnswer } from './migrate.js';
import { createMigrations, matchMigration } from './migrations/index.js';
import type { Migration } from './migrations/migration.js';
import { compileOperations, type OpenApiDocument } from './openapi.js';
import type { UsageAction, UsageSink } from './usage.js';

/** Where the active configuration lives; a reload swaps `current` whole, never edits it. */
export interface ConfigHolder {
  current: ActiveConfig;
}

export interface AppOptions {
  configs: ConfigHolder;
  logger: Logger;
  openapi: OpenApiDocument;
  usage: UsageSink[];
}

export interface App {
  /** The public listener's request handler. */
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  /** The public listener's `upgrade` handler: WebSockets pass through. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  readonly migrations: readonly Migration[];
  close(): void;
}

function pathOf(url: string): string {
  const mark = url.indexOf('?');
  return mark === -1 ? url : url.slice(0, mark);
}

/**
 * Assembles the public side: a request no migration owns goes straight to http-proxy-3 (no router, no body
 * parser, no per-request allocation of ours); a deprecated call goes through its migration.
 */
export function createApp({ configs, logger, openapi, usage }: AppOptions): App {
  const migrations = createMigrations({ operations: compileOperations(openapi) });

  function onPassThroughError(
    failure: UpstreamFailure,
    error: Error,
    req: IncomingMessage,
    res: ServerResponse | Duplex,
  ) {
    logger.warn(
      { method: req.method, path: pathOf(req.url ?? '/'), failure, reason: error.message },
      'upstream request failed',
    );
    if ('writeHead' in res) sendLocalAnswer(res, upstreamFailureAnswer(failure));
    else res.destroy();
  }

  const forwarder: Forwarder = createForwarder(configs.current.config, onPassThroughError);

  function recordUsage(
    migration: Migration,
    req: IncomingMessage,
    res: ServerResponse,
    started: number,
    stage: ActiveConfig['config']['routes'][keyof ActiveConfig['config']['routes']]['stage'],
    action: UsageAction,
  ) {
    const event = {
      routeId: migration.routeId,
      method: req.method ?? 'GET',
      path: pathOf(req.url ?? '/'),
      fingerprint: fingerprintOf(req.headers.authorization),
      userAgent: req.headers['user-agent'],
      status: res.statusCode,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      stage,
      action,
      at: Date.now(),
    };
    for (const sink of usage) sink.record(event);
  }

  async function handleOwned(
    req: IncomingMessage,
    res: ServerResponse,
    migration: Migration,
    params: Record<string, string>,
  ): Promise<void> {
    const started = performance.now();
    // A request finishes under the configuration it started with, whatever a reload does meanwhile.
    const { config } = configs.current;
    const route = config.routes[migration.routeId];
    let action: UsageAction = 'passed-through';
    res.once('close', () => recordUsage(migration, req, res, started, route.stage, action));
    if (route.stage === 'gone') {
      action = 'gone';
      sendLocalAnswer(
        res,
        errorAnswer('gone', {
          message: `This endpoint was removed. Use ${migration.successor} instead.`,
        }),
      );
      return;
    }
    if (route.stage === 'passthrough' || route.stage === 'validate') {
      forwarder.web(req, res);
      return;
    }
    const outcome = await translate(req, res, migration, params, {
      forwarder,
      bodyLimitBytes: config.server.bodyLimitBytes,
    });
    action = outcome;
  }

  return {
    migrations,
    handleRequest(req, res) {
      const url = req.url ?? '/';
      const found = matchMigration(migrations, req.method ?? 'GET', pathOf(url));
      if (!found) {
        forwarder.web(req, res);
        return;
      }
      handleOwned(req, res, found.migration, found.params).catch((error: unknown) => {
        logger.error({ err: error, route: found.migration.routeId }, 'migration failed');
        sendLocalAnswer(res, errorAnswer('internal', { message: 'The shim failed to handle this request.' }));
      });
    },
    handleUpgrade(req, socket, head) {
      forwarder.ws(req, socket, head);
    },
    close() {
      forwarder.close();
    },
  };
}
