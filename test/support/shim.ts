import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import type { Logger } from 'pino';
import {
  type App,
  type ConfigHolder,
  createApp,
  type RequestLimiter,
  type TrafficObserver,
} from '../../src/app.js';
import { parseConfig, readUpstreamCa } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { readOpenApiDocument } from '../../src/openapi.js';
import { createShimServer, type ShimServer } from '../../src/server.js';
import { createUsageLog, type UsageSink } from '../../src/usage.js';

export const DEFAULTS = JSON.parse(
  readFileSync(new URL('../../config/default.json', import.meta.url), 'utf8'),
);
export const OPENAPI = readOpenApiDocument(
  new URL('../../config/openapi/connection-metadata.json', import.meta.url),
);

/** What a test adds to the shim, built from the shim's own configuration holder and logger. */
export interface ShimHooks {
  usage?: UsageSink[];
  observer?: TrafficObserver;
  limiter?: RequestLimiter;
}
export type ShimExtension = (context: { configs: ConfigHolder; logger: Logger }) => ShimHooks;

export interface RunningShim {
  url: string;
  app: App;
  shim: ShimServer;
  configs: { current: ReturnType<typeof parseConfig> };
  logger: Logger;
  /** Every log line the shim wrote, parsed. */
  logs(): Array<Record<string, unknown>>;
  /** Everything the shim wrote to its log, as text. */
  logText(): string;
  close(): Promise<void>;
}

/** Builds the shim in process and listens on 127.0.0.1 port 0 (the port is read back, never picked). */
export async function startShim(
  upstreamUrl: string,
  overrides: Record<string, unknown> = {},
  extraSinks: UsageSink[] = [],
  extend: ShimExtension = () => ({}),
): Promise<RunningShim> {
  const configs = {
    current: parseConfig([DEFAULTS, { log: { level: 'debug' } }, overrides], {
      SHIM_UPSTREAM_URL: upstreamUrl,
    }),
  };
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => {
    text += chunk.toString('utf8');
  });
  const logger = createLogger(configs.current.config.log.level, stream);
  const hooks = extend({ configs, logger });
  const app = createApp({
    configs,
    logger,
    openapi: OPENAPI,
    usage: [createUsageLog(logger), ...extraSinks, ...(hooks.usage ?? [])],
    observer: hooks.observer,
    limiter: hooks.limiter,
    // What loadConfig does with upstream.caFile: its certificates, checked.
    upstreamCa: readUpstreamCa(configs.current.config),
  });
  const shim = createShimServer(app, configs.current.config, logger);
  await new Promise<void>((resolve) => shim.server.listen(0, '127.0.0.1', resolve));
  const { port } = shim.server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    app,
    shim,
    configs,
    logger,
    logText: () => text,
    logs: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    async close() {
      shim.server.closeAllConnections();
      await new Promise<void>((resolve) => shim.server.close(() => resolve()));
      app.close();
    },
  };
}
