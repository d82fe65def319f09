import type pg from 'pg';
import {
  ChainDivergedError,
  type DepositWatcher,
  type IterationReport,
  type WatcherLogger,
} from './depositWatcher.js';

export interface RunWatcherOptions {
  pool: pg.Pool;
  signal: AbortSignal;
  logger: WatcherLogger;
  /** Called after every successful iteration (metrics, tests). */
  onIteration?: (report: IterationReport) => void;
  /** Called after every failed iteration (metrics, tests). */
  onFailure?: (error: unknown) => void;
  /** Longest wait between failed iterations (default 30 s). */
  maxBackoffMs?: number;
}

/**
 * Runs a watcher until `signal` aborts. Only one watcher per network is active: it holds a
 * session advisory lock; others wait as hot standbys and take over when it goes away. A
 * failed iteration (RPC down, database error) is retried with backoff from the same cursor.
 */
export async function runWatcher(
  watcher: DepositWatcher,
  options: RunWatcherOptions,
): Promise<void> {
  const network = watcher.network.name;
  const { logger, signal } = options;
  const pollMs = watcher.network.pollIntervalMs;
  while (!signal.aborted) {
    const lock = await acquireLock(options.pool, network, pollMs, signal, logger);
    if (!lock) return;
    logger.info({ network }, 'watcher active');
    let failures = 0;
    try {
      while (!signal.aborted && !lock.lost) {
        try {
          const report = await watcher.runOnce();
          failures = 0;
          options.onIteration?.(report);
          if (!report.caughtUp) continue;
          await sleep(pollMs, signal);
        } catch (error) {
          failures += 1;
          options.onFailure?.(error);
          const waitMs = Math.min(
            options.maxBackoffMs ?? 30_000,
            pollMs * 2 ** Math.min(failures - 1, 6),
          );
          if (error instanceof ChainDivergedError) {
            // Not a passing failure: it repeats until an operator acts (docs/operating.md).
            const { cursor, oldestCheckpoint, endpointHash } = error.details;
            logger.error(
              {
                network,
                cursor: String(cursor),
                oldestCheckpoint: oldestCheckpoint && {
                  number: String(oldestCheckpoint.number),
                  hash: oldestCheckpoint.hash,
                },
                endpointHash,
                failures,
                retryInMs: waitMs,
              },
              'no checkpoint kept matches the chain: crediting on this network stopped until an operator acts',
            );
          } else
            logger.warn(
              { network, err: errorSummary(error), failures, retryInMs: waitMs },
              'watcher iteration failed; retrying from the same cursor',
            );
          await sleep(waitMs, signal);
        }
      }
    } finally {
      await lock.release();
    }
    if (!signal.aborted)
      logger.warn({ network }, 'lost the watcher lock; waiting to take over again');
  }
}

interface HeldLock {
  lost: boolean;
  release(): Promise<void>;
}

async function acquireLock(
  pool: pg.Pool,
  network: string,
  pollMs: number,
  signal: AbortSignal,
  logger: RunWatcherOptions['logger'],
): Promise<HeldLock | null> {
  let announced = false;
  while (!signal.aborted) {
    let client: pg.PoolClient | null = null;
    try {
      client = await pool.connect();
      const { rows } = await client.query<{ ok: boolean }>(
        'select pg_try_advisory_lock(hashtext($1)) as ok',
        [`lingxi:watcher:${network}`],
      );
      if (rows[0]?.ok) {
        const held: HeldLock = {
          lost: false,
          async release() {
            await client!
              .query('select pg_advisory_unlock(hashtext($1))', [`lingxi:watcher:${network}`])
              .catch(() => {});
            client!.release(held.lost);
          },
        };
        client.on('error', () => {
          held.lost = true;
        });
        return held;
      }
      client.release();
      client = null;
      if (!announced)
        logger.info({ network }, 'another watcher is active for this network; standing by');
      announced = true;
    } catch (error) {
      client?.release(true);
      logger.warn(
        { network, err: errorSummary(error) },
        'cannot reach the database for the watcher lock; retrying',
      );
    }
    await sleep(pollMs, signal);
  }
  return null;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** A one-line reason: never a whole RPC error (its cause can carry an endpoint URL with a key). */
function errorSummary(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message.split('\n')[0]}` : String(error);
}
