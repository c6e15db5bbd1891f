import type { AddressInfo } from 'node:net';
import { createApp } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { readOpenApiDocument } from './openapi.js';
import { createConfigReloader } from './reload.js';
import { createShimServer } from './server.js';
import { createUsageLog } from './usage.js';

const OPENAPI_FILE = new URL('../config/openapi/connection-metadata.json', import.meta.url);

function start(): void {
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
  const app = createApp({
    configs,
    logger,
    openapi: readOpenApiDocument(OPENAPI_FILE),
    usage: [createUsageLog(logger)],
  });
  const shim = createShimServer(app, config, logger);
  const reloader = createConfigReloader({
    configs,
    load: () => loadConfig(process.env),
    logger,
    onApplied: (next) => {
      logger.level = next.config.log.level;
    },
  });
  logger.info({ reason: 'start', version: active.version }, 'config active');
  process.on('SIGHUP', () => reloader.reload('SIGHUP'));
  const stopWatching = process.env.SHIM_CONFIG ? reloader.watchFile(process.env.SHIM_CONFIG) : () => {};

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
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, inFlight: shim.inFlight() }, 'shutting down');
    stopWatching();
    const clean = await shim.drain(config.server.shutdownGraceMs);
    app.close();
    logger.info({ clean }, clean ? 'shutdown complete' : 'shutdown forced after grace period');
    logger.flush();
    // Exit code 0 when every in-flight request finished within the grace period, 1 when some were cut.
    setImmediate(() => process.exit(clean ? 0 : 1));
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

start();
