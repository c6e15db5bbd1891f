import { createHash } from 'node:crypto';
import { type FSWatcher, readFileSync, realpathSync, watch } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { ConfigHolder } from './app.js';
import { type ActiveConfig, ConfigError, keepRestartOnly, type LoadedConfig } from './config.js';

/** Editors and kubelet write in several steps: the folder must be quiet this long before the file is read. */
const SETTLE_MS = 100;
/** A file still missing this long after a change is no longer a swap in progress: it is reported, once. */
const MISSING_REPORT_MS = 2_000;

export interface ConfigReloader {
  /** Loads, validates and swaps in the configuration; false (old one kept) when it is refused. */
  reload(reason: string): boolean;
  /**
   * Reloads when the file's content changes, however it was replaced: written in place, renamed over, or
   * a symlink swapped (a Kubernetes ConfigMap volume). Returns a stop function.
   */
  watchFile(file: string): () => void;
}

/** A configuration as loadConfig reads it (LoadedConfig), or as parseConfig does, without certificates. */
type Loaded = ActiveConfig & Partial<Pick<LoadedConfig, 'upstreamCa'>>;

export interface ReloaderOptions {
  configs: ConfigHolder;
  load: () => Loaded;
  logger: Logger;
  /**
   * The certificates the upstream's pools were built with (loadConfig's `upstreamCa`). `upstream` applies only
   * after a restart: a new file at the same path is named in `pendingRestart` as `upstream.caFile`.
   */
  upstreamCa?: string | undefined;
  /** Called after a new configuration is active (e.g. to change the log level). */
  onApplied?: (active: ActiveConfig) => void;
}

type Seen = { kind: 'content'; hash: string } | { kind: 'missing' } | { kind: 'unreadable'; code: string };

/** What the file holds now, following symlinks; a dangling link (mid-swap) is missing. */
function seeFile(path: string): Seen {
  try {
    return { kind: 'content', hash: createHash('sha256').update(readFileSync(path)).digest('hex') };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    return code === 'ENOENT' ? { kind: 'missing' } : { kind: 'unreadable', code };
  }
}

function sameSeen(a: Seen, b: Seen): boolean {
  if (a.kind === 'content' && b.kind === 'content') return a.hash === b.hash;
  if (a.kind === 'unreadable' && b.kind === 'unreadable') return a.code === b.code;
  return a.kind === b.kind;
}

/**
 * `pendingRestart` with `upstream.caFile` named when the file's text read now is not the text the pools trust:
 * a rotated CA bundle written over the same path changes no key of the configuration, and an operator who sent
 * SIGHUP for it would otherwise see nothing, while the shim went on trusting the old certificates.
 */
function withCaPending(next: ActiveConfig, loadedCa: string | undefined, runningCa: string | undefined) {
  if (loadedCa === runningCa || next.pendingRestart.includes('upstream.caFile')) return next;
  return { ...next, pendingRestart: [...next.pendingRestart, 'upstream.caFile'] };
}

export function createConfigReloader({
  configs,
  load,
  logger,
  onApplied,
  upstreamCa,
}: ReloaderOptions): ConfigReloader {
  // The last config loaded, whole: it differs from the one in effect while a restart is pending. Not its
  // version, which leaves secrets out: a new admin token alone would look unchanged and never be named.
  let loadedContent = JSON.stringify(configs.current.config);
  let loadedCa = upstreamCa;

  function reload(reason: string): boolean {
    let loaded: Loaded;
    try {
      loaded = load();
    } catch (error) {
      const problems = error instanceof ConfigError ? error.problems : [(error as Error).message];
      logger.error({ reason, problems, version: configs.current.version }, 'config reload refused');
      // An operator who just sent SIGHUP is watching for this line: it does not wait for the log buffer.
      logger.flush();
      return false;
    }
    const content = JSON.stringify(loaded.config);
    if (content === loadedContent && loaded.upstreamCa === loadedCa) {
      logger.debug({ reason, version: loaded.version }, 'config unchanged');
      return true;
    }
    loadedContent = content;
    loadedCa = loaded.upstreamCa;
    const previous = configs.current;
    // Restart-only keys keep the values in effect, so every reader (and /admin/config) sees what applies.
    const next = withCaPending(keepRestartOnly(loaded, previous.config), loadedCa, upstreamCa);
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

  /**
   * Watches the file's folder, not the file: an editor's rename-over replaces the file a watch would follow,
   * and a ConfigMap update renames `..data`, so no event names the file itself. Any event there (and in the
   * folder of the file the path resolves to, for a link edited in place) leads, once the folder is quiet, to
   * one read; the config reloads only when the content differs from what was last seen. No polling: on a
   * file system without change events (some network mounts) SIGHUP still reloads.
   */
  function watchFile(file: string): () => void {
    const path = resolve(file);
    const folder = dirname(path);
    let seen = seeFile(path);
    let timer: NodeJS.Timeout | undefined;
    let missingTimer: NodeJS.Timeout | undefined;
    let missingReported = false;
    let targetFolder: string | undefined;
    let targetWatcher: FSWatcher | undefined;
    let stopped = false;

    function settleThenCheck(): void {
      clearTimeout(timer);
      timer = setTimeout(check, SETTLE_MS);
      timer.unref();
    }

    function watchFolder(dir: string): FSWatcher {
      const watcher = watch(dir, settleThenCheck);
      // A watched folder that is removed (an old ConfigMap version) must not crash the process.
      watcher.on('error', (error) => {
        logger.debug({ folder: dir, reason: error.message }, 'config folder watch ended');
        watcher.close();
        if (watcher === targetWatcher) targetFolder = undefined;
      });
      watcher.unref();
      return watcher;
    }

    /** Follows the link to where the content lives now; a ConfigMap swap moves it to a new folder. */
    function followTarget(): void {
      let target: string;
      try {
        target = dirname(realpathSync(path));
      } catch {
        return;
      }
      if (target === folder || target === targetFolder) return;
      targetWatcher?.close();
      targetWatcher = undefined;
      targetFolder = target;
      try {
        targetWatcher = watchFolder(target);
      } catch (error) {
        logger.warn(
          { file: path, target, reason: (error as Error).message },
          'config file target cannot be watched; use SIGHUP after editing it',
        );
      }
    }

    function check(): void {
      if (stopped) return;
      const now = seeFile(path);
      if (now.kind === 'missing') {
        // Mid-swap the file (or the link's target) is briefly absent: the config in effect stays and the
        // next event brings the new file. Only a file still absent later is worth a line.
        if (!missingReported && missingTimer === undefined) {
          missingTimer = setTimeout(() => {
            missingTimer = undefined;
            if (stopped || seeFile(path).kind !== 'missing') return;
            missingReported = true;
            logger.warn({ file: path, afterMs: MISSING_REPORT_MS }, 'config file still missing');
          }, MISSING_REPORT_MS);
          missingTimer.unref();
        }
        logger.debug({ file: path }, 'config file missing');
        return;
      }
      missingReported = false;
      followTarget();
      if (sameSeen(now, seen)) return;
      seen = now;
      reload('file changed');
    }

    let watcher: FSWatcher | undefined;
    try {
      watcher = watchFolder(folder);
      followTarget();
    } catch (error) {
      logger.warn(
        { file: path, reason: (error as Error).message },
        'config file cannot be watched; use SIGHUP',
      );
    }
    // The file was loaded before the watch began (start-up opens the ledger and the Redis connection in
    // between): an edit made then raised no event, so the content seen now is compared with what is in
    // effect once. Unchanged, this logs nothing above debug; a file missing mid-swap waits for its event.
    if (seen.kind === 'content') reload('file changed');
    return () => {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(missingTimer);
      watcher?.close();
      targetWatcher?.close();
    };
  }

  return { reload, watchFile };
}
