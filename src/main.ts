// First, before the rest of the module graph is evaluated: a SIGHUP during start-up must not end the process.
import './hangup.js';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createAdminApp, reachableFromOtherHosts } from './admin.js';
import { createApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { takeHangups } from './hangup.js';
import { createLedger, type LedgerStore } from './ledger.js';
import { createFileLedgerStore } from './ledger-file-store.js';
import { createRedisLedgerStore } from './ledger-redis-store.js';
import { createLogger } from './logger.js';
import { createMetrics } from './metrics.js';
import { readOpenApiDocument } from './openapi.js';
import { createRateLimiter } from './rate-limit.js';
import type { RedisConnection } from './redis.js';
import { createConfigReloader } from './reload.js';
import { createShimServer } from './server.js';
import { createUsageLog } from './usage.js';

const OPENAPI_FILE = new URL('../config/openapi/connection-metadata.json', import.meta.url);
/**
 * How long the steps after the grace period (the ledger's last write, closing Redis) may take before the
 * process exits anyway: Redis has its own 2 s bound, a file write on a stuck disk has none, and an
 * orchestrator would otherwise wait for its own SIGKILL.
 */
const CLEANUP_DEADLINE_MS = 5_000;

/**
 * A listener that cannot bind (a port in use, an address this host does not have) emits 'error': unhandled,
 * Node printed a stack trace on stderr and the buffered log lines, 'config active' among them, were lost with
 * the process. It ends the process in one fatal line instead.
 */
function exitOnListenFailure(
  logger: Logger,
  message: string,
  { host, port }: { host: string; port: number },
) {
  return function listenFailed(error: NodeJS.ErrnoException): void {
    logger.fatal({ host, port, code: error.code }, message);
    logger.flush();
    setImmediate(() => process.exit(1));
  };
}

async function start(): Promise<void> {
  let active: ReturnType<typeof loadConfig>;
  try {
    active = loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(
        `${JSON.stringify({ level: 'fatal', msg: 'invalid configuration', problems: error.problems })}\n`,
      );
      process.exit(1);
    }
    throw error;
  }
  const { config } = active;
  const logger = createLogger(config.log.level);
  const configs = { current: active };
  // With a Redis URL the ledger and the rate-limit budgets are shared by every instance on it.
  // Loaded only when used: the Redis client is a few megabytes of resident memory an instance without
  // Redis does not need.
  let redis: RedisConnection | undefined;
  if (config.redisUrl) {
    const { createRedisConnection } = await import('./redis.js');
    redis = createRedisConnection({ url: config.redisUrl, logger });
  }
  const metrics = createMetrics({ configs });
  let store: LedgerStore;
  try {
    store = redis
      ? createRedisLedgerStore(redis)
      : createFileLedgerStore({ dataDir: config.dataDir, logger });
  } catch (error) {
    logger.fatal({ dataDir: config.dataDir, reason: (error as Error).message }, 'ledger cannot be opened');
    logger.flush();
    setImmediate(() => process.exit(1));
    return;
  }
  const ledger = createLedger({ store, configs, logger, onDropped: metrics.countLedgerDropped });
  const limiter = createRateLimiter({ configs, logger, redis });
  const app = createApp({
    configs,
    logger,
    openapi: readOpenApiDocument(OPENAPI_FILE),
    usage: [createUsageLog(logger), metrics.usage, ledger],
    observer: metrics.observer,
    limiter,
    upstreamCa: active.upstreamCa,
  });
  const shim = createShimServer(app, config, logger);
  const admin = http.createServer(
    createAdminApp({ configs, logger, metrics, ledger, isDraining: () => shim.draining }),
  );
  const reloader = createConfigReloader({
    configs,
    load: () => loadConfig(process.env),
    logger,
    upstreamCa: active.upstreamCa,
    onApplied: (next) => {
      logger.level = next.config.log.level;
    },
  });
  logger.info({ reason: 'start', version: active.version }, 'config active');
  const stopWatching = process.env.SHIM_CONFIG ? reloader.watchFile(process.env.SHIM_CONFIG) : () => {};
  takeHangups(() => reloader.reload('SIGHUP'));

  shim.server.on('error', exitOnListenFailure(logger, 'shim listener failed', config.server));
  shim.server.listen(config.server.port, config.server.host, () => {
    const address = shim.server.address() as AddressInfo;
    logger.info(
      {
        host: address.address,
        port: address.port,
        upstream: new URL(config.upstream.url).origin,
        version: active.version,
      },
      'shim listening',
    );
    // Scripts and supervisors wait for this line: it does not wait for the log buffer's interval.
    logger.flush();
  });
  admin.on('error', exitOnListenFailure(logger, 'admin listener failed', config.admin));
  admin.listen(config.admin.port, config.admin.host, () => {
    const address = admin.address() as AddressInfo;
    logger.info(
      { host: address.address, port: address.port, tokenRequired: config.admin.token !== null },
      'admin listening',
    );
    if (config.admin.token === null && reachableFromOtherHosts(address.address)) {
      // An empty SHIM_ADMIN_TOKEN counts as unset: a secret that failed to mount lands here, not in a refusal.
      logger.warn(
        { host: address.address, port: address.port },
        'admin port open to other hosts without a token',
      );
    }
    logger.flush();
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, inFlight: shim.inFlight() }, 'shutting down');
    logger.flush();
    stopWatching();
    const clean = await shim.drain(config.server.shutdownGraceMs);
    setTimeout(() => {
      logger.error({ afterMs: CLEANUP_DEADLINE_MS }, 'shutdown cleanup did not finish, exiting');
      logger.flush();
      process.exit(1);
    }, CLEANUP_DEADLINE_MS).unref();
    app.close();
    // After the drain every answered call is in the ledger: write it out before anything closes.
    await ledger.close();
    limiter.close();
    await redis?.close();
    admin.closeAllConnections();
    admin.close();
    logger.info({ clean }, clean ? 'shutdown complete' : 'shutdown forced after grace period');
    logger.flush();
    // Exit code 0 when every in-flight request finished within the grace period, 1 when some were cut.
    setImmediate(() => process.exit(clean ? 0 : 1));
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

/**
 * What start-up did not expect, in one line: the error's kind and message, never the error object, whose
 * properties may carry a configured value (`new URL()` attaches its `input`, a password and all), and which
 * Node would print whole for an unhandled rejection.
 */
function startFailure(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { level: 'fatal', msg: 'start-up failed' };
  const { code } = error as NodeJS.ErrnoException;
  return { level: 'fatal', msg: 'start-up failed', error: error.name, code, reason: error.message };
}

start().catch((error: unknown) => {
  process.stderr.write(`${JSON.stringify(startFailure(error))}\n`);
  process.exit(1);
});
