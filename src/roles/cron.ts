import cron, { type ScheduledTask } from 'node-cron';
import pg from 'pg';
import { moveErasedBalances } from '../account/eraseAccount.js';
import { releaseExpiredReservations } from '../gateway/meter.js';
import { sealJournal } from '../integrity/sealJournal.js';
import { runRetention } from '../privacy/retention.js';
import { runReconciliation } from '../reconcile/runReconciliation.js';
import type { Runtime } from '../runtime.js';

export interface CronRole {
  jobs: string[];
  stop(): Promise<void>;
}

interface Job {
  name: string;
  schedule: string;
  run(): Promise<unknown>;
}

/**
 * The cron role: reconciliation, hold expiry, journal sealing and the retention purge on
 * node-cron schedules (config `cron`). Each job runs in one process at a time across the
 * deployment (a try-advisory-lock per job; a process that cannot take it skips that turn)
 * and never overlaps itself.
 */
export function startCronRole(runtime: Runtime): CronRole {
  const { config, database, ledger, logger } = runtime;
  const jobs: Job[] = [
    {
      name: 'reconcile',
      schedule: config.cron.reconcile,
      run: () => runReconciliation(runtime, { trigger: 'cron' }),
    },
    {
      name: 'expire-holds',
      schedule: config.cron.expireHolds,
      run: async () => {
        let expired = 0;
        for (let round = 0; round < 100; round += 1) {
          const { expiredHoldIds } = await ledger.expireHolds({ limit: 1000 });
          expired += expiredHoldIds.length;
          if (expiredHoldIds.length < 1000) break;
        }
        // The spend-limit reservations of calls that never settled go with their holds.
        const releasedReservations = await releaseExpiredReservations(database.db);
        const prunedBatchFences = await ledger.pruneBatchFences();
        return { expired, releasedReservations, prunedBatchFences };
      },
    },
    { name: 'seal', schedule: config.cron.seal, run: () => sealJournal(database.pool) },
    {
      name: 'retention',
      schedule: config.cron.retention,
      run: async () => ({
        ...(await runRetention(database.db, config, new Date())),
        erasedBalancesMoved: await moveErasedBalances(database.db, ledger),
      }),
    },
  ];
  const locks = new JobLocks(database.url, config.database.connectTimeoutMs);
  const inFlight = new Set<Promise<unknown>>();
  const tasks: ScheduledTask[] = jobs.map((job) =>
    cron.schedule(
      job.schedule,
      async () => {
        const work = runExclusive(runtime, locks, job).finally(() => inFlight.delete(work));
        inFlight.add(work);
        await work;
      },
      { name: `lingxi-${job.name}`, noOverlap: true },
    ),
  );
  logger.info({ jobs: jobs.map((j) => `${j.name} (${j.schedule})`) }, 'cron jobs scheduled');
  return {
    jobs: jobs.map((j) => j.name),
    async stop() {
      for (const task of tasks) await task.stop();
      await Promise.allSettled([...inFlight]);
      await locks.close();
    },
  };
}

/**
 * The connection that holds the jobs' advisory locks: one per cron role, outside the pool.
 * Held from the pool, a lock took a connection for as long as its job ran, and jobs that fell
 * due together (reconciliation, hold expiry and sealing every tenth minute) could take every
 * connection of a small pool and then wait for one themselves until they failed. A lock dies
 * with its connection; a broken one is replaced at the next turn.
 */
class JobLocks {
  private client: Promise<pg.Client> | null = null;
  /** Jobs share the connection: their lock queries go one after another. */
  private queue: Promise<unknown> = Promise.resolve();
  /**
   * Keys this process holds. A session's advisory locks are re-entrant: asked again on the
   * same connection, PostgreSQL would grant a held lock, and a job could run on top of itself.
   */
  private readonly held = new Set<string>();

  constructor(
    private readonly url: string,
    private readonly connectTimeoutMs: number,
  ) {}

  /** Takes the job's lock if no other process holds it; returns the release, or null. */
  async tryLock(key: string): Promise<(() => Promise<void>) | null> {
    if (this.held.has(key)) return null;
    this.held.add(key);
    try {
      const release = await this.lockOnce(key);
      if (release === null) this.held.delete(key);
      return (
        release &&
        (async () => {
          try {
            await release();
          } finally {
            this.held.delete(key);
          }
        })
      );
    } catch (error) {
      this.held.delete(key);
      throw error;
    }
  }

  private async lockOnce(key: string): Promise<(() => Promise<void>) | null> {
    const connecting = this.connection();
    let client: pg.Client;
    try {
      client = await connecting;
    } catch (error) {
      if (this.client === connecting) this.client = null;
      throw error;
    }
    try {
      const { rows } = await this.query<{ ok: boolean }>(
        client,
        'select pg_try_advisory_lock(hashtext($1)) as ok',
        key,
      );
      if (!rows[0]?.ok) return null;
    } catch (error) {
      this.discard(connecting);
      throw error;
    }
    return async () => {
      // A lock whose connection broke died with it: nothing to release.
      if (this.client !== connecting) return;
      try {
        await this.query(client, 'select pg_advisory_unlock(hashtext($1))', key);
      } catch {
        this.discard(connecting);
      }
    };
  }

  async close(): Promise<void> {
    const connecting = this.client;
    this.client = null;
    const client = await connecting?.catch(() => null);
    await client?.end().catch(() => {});
  }

  private connection(): Promise<pg.Client> {
    if (this.client) return this.client;
    const client = new pg.Client({
      connectionString: this.url,
      connectionTimeoutMillis: this.connectTimeoutMs,
      // A lock query answers at once; one that hangs (a link gone silent) must not block
      // the job's turns for ever. The connection is then replaced.
      ...(this.connectTimeoutMs > 0 ? { query_timeout: this.connectTimeoutMs } : {}),
    });
    const connecting = client.connect().then(
      () => client,
      async (error: unknown) => {
        await client.end().catch(() => {});
        throw error;
      },
    );
    // A connection that breaks must not crash the process; its locks are gone with it.
    client.on('error', () => this.discard(connecting));
    this.client = connecting;
    return connecting;
  }

  private query<R extends pg.QueryResultRow>(
    client: pg.Client,
    text: string,
    key: string,
  ): Promise<pg.QueryResult<R>> {
    const result = this.queue.then(() => client.query<R>(text, [key]));
    this.queue = result.catch(() => {});
    return result;
  }

  private discard(connecting: Promise<pg.Client>): void {
    if (this.client !== connecting) return;
    this.client = null;
    void connecting.then((client) => client.end()).catch(() => {});
  }
}

/**
 * One turn of a job, if this process gets its lock. Never rejects: whatever fails (the
 * database gone before the job began, or the job itself) is counted and logged as a failed
 * turn, and the next turn tries again.
 */
async function runExclusive(runtime: Runtime, locks: JobLocks, job: Job): Promise<void> {
  const { logger, metrics } = runtime;
  const started = performance.now();
  const failed = (error: unknown) => {
    metrics.cronRuns.inc({ job: job.name, outcome: 'failed' });
    logger.error(
      {
        job: job.name,
        durationMs: Math.round(performance.now() - started),
        err: error instanceof Error ? error.message : String(error),
      },
      'cron job failed',
    );
  };
  let release: (() => Promise<void>) | null;
  try {
    release = await locks.tryLock(`lingxi:cron:${job.name}`);
  } catch (error) {
    failed(error);
    return;
  }
  if (release === null) {
    metrics.cronRuns.inc({ job: job.name, outcome: 'skipped' }); // another process has it
    return;
  }
  try {
    const result = await job.run();
    metrics.cronRuns.inc({ job: job.name, outcome: 'ok' });
    metrics.cronLastSuccess.set({ job: job.name }, Date.now() / 1000);
    logger.info(
      {
        job: job.name,
        durationMs: Math.round(performance.now() - started),
        result: summary(result),
      },
      'cron job done',
    );
  } catch (error) {
    failed(error);
  } finally {
    await release();
  }
}

function summary(result: unknown): unknown {
  if (result && typeof result === 'object' && 'findings' in result) {
    const run = result as { runId: string; status: string; findings: unknown[] };
    return { runId: run.runId, status: run.status, findings: run.findings.length };
  }
  return result;
}
