import { type FSWatcher, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { ConfigHolder } from './app.js';
import { type ActiveConfig, ConfigError, keepRestartOnly } from './config.js';

export interface ConfigReloader {
  /** Loads, validates and swaps in the configuration; false (old one kept) when it is refused. */
  reload(reason: string): boolean;
  /** Reloads when the file changes (editors replace files: the folder is watched). Returns a stop function. */
  watchFile(file: string): () => void;
}

export interface ReloaderOptions {
  configs: ConfigHolder;
  load: () => ActiveConfig;
  logger: Logger;
  /** Called after a new configuration is active (e.g. to change the log level). */
  onApplied?: (active: ActiveConfig) => void;
}

export function createConfigReloader({ configs, load, logger, onApplied }: ReloaderOptions): ConfigReloader {
  // The version of the last config loaded, which differs from the one in effect while a restart is pending.
  let loadedVersion = configs.current.version;

  function reload(reason: string): boolean {
    let loaded: ActiveConfig;
    try {
      loaded = load();
    } catch (error) {
      const problems = error instanceof ConfigError ? error.problems : [(error as Error).message];
      logger.error({ reason, problems, version: configs.current.version }, 'config reload refused');
      // An operator who just sent SIGHUP is watching for this line: it does not wait for the log buffer.
      logger.flush();
      return false;
    }
    if (loaded.version === loadedVersion) {
      logger.debug({ reason, version: loaded.version }, 'config unchanged');
      return true;
    }
    loadedVersion = loaded.version;
    const previous = configs.current;
    // Restart-only keys keep the values in effect, so every reader (and /admin/config) sees what applies.
    const next = keepRestartOnly(loaded, previous.config);
    // One assignment: a request reads `configs.current` once, so it sees the old or the new, never a mix.
    configs.current = next;
    onApplied?.(next);
    logger.info({ reason, version: next.version, previous: previous.version }, 'config active');
    if (next.pendingRestart.length > 0) {
      logger.warn({ keys: next.pendingRestart }, 'config sections changed that apply only after a restart');
    }
    logger.flush();
    return true;
  }

  function watchFile(file: string): () => void {
    const path = resolve(file);
    const name = basename(path);
    let timer: NodeJS.Timeout | undefined;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dirname(path), (_event, changed) => {
        if (changed !== null && changed !== name) return;
        // Editors write in several steps: settle first, then read once.
        clearTimeout(timer);
        timer = setTimeout(() => reload('file changed'), 100);
        timer.unref();
      });
      watcher.unref();
    } catch (error) {
      logger.warn(
        { file: path, reason: (error as Error).message },
        'config file cannot be watched; use SIGHUP',
      );
    }
    return () => {
      clearTimeout(timer);
      watcher?.close();
    };
  }

  return { reload, watchFile };
}
