import { hostname } from 'node:os';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { moveErasedBalances } from '../account/eraseAccount.js';
import { releaseExpiredReservations } from '../gateway/meter.js';
import { createCronTask } from '../config/cronSchedule.js';
import { sealJournal } from '../integrity/sealJournal.js';
import { retentionNow, runRetention, type RunRetentionOptions } from '../privacy/retention.js';
import { tcpKeepAlive } from '../db/connect.js';
import type { Database } from '../db/schema.js';
import { serializeError } from '../log.js';
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
 * Starts one job's schedule: `turn(at)` runs the turn scheduled for `at`. The default is
 * node-cron, which passes each turn's scheduled time as this process's clock reads it.
 */
export type Scheduler = (
  job: { name: string; schedule: string },
  turn: (at: Date) => Promise<void>,
) => { stop(): void | Promise<void> };

export interface CronRoleOptions {
  /** What triggers the turns (tests: a trigger per role, as if their clocks differed). */
  scheduler?: Scheduler;
  /** The retention job's per-run bound (tests use a small one). */
  retention?: RunRetentionOptions;
}

/**
 * node-cron, its messages in the role's JSON log. A turn runs however late its timer fires (an
 * event loop kept busy, a paused VM) as long as the next tick is not due yet: node-cron's
 * default dropped a turn more than a second late, and a daily job (retention) then waited a
 * day. A tick node-cron does drop (a later one was due by then, or the job's previous turn
 * was still running) is counted `missed` and logged.
 */
export function nodeCronScheduler({
  logger,
  metrics,
  config,
}: Pick<Runtime, 'logger' | 'metrics' | 'config'>): Scheduler {
  return (job, turn) => {
    const log = logger.child({ job: job.name });
    // Read in the configured zone (UTC by default), not the machine's: every cron process
    // computes the same ticks wherever it runs. Created as the config check creates it
    // (createCronTask), so a schedule the config accepts starts here.
    const task = createCronTask(
      job.schedule,
      config.cron.timezone,
      (context) => turn(context.date),
      {
        name: `lingxi-${job.name}`,
        noOverlap: true,
        missedExecutionTolerance: Number.MAX_SAFE_INTEGER,
        logger: {
          info: (message) => log.info(`node-cron: ${message}`),
          // Its warnings are about missed ticks, which are logged below with the tick.
          warn: (message) => log.debug(`node-cron: ${message}`),
          error: (message, err) =>
            log.error({ err: err ?? message }, `node-cron: ${String(message)}`),
          debug: (message) => log.debug(`node-cron: ${String(message)}`),
        },
      },
    );
    const missed = (why: string) => (context: { date: Date }) => {
      metrics.cronRuns.inc({ job: job.name, outcome: 'missed' });
      log.warn({ tick: context.date.toISOString() }, `cron tick missed: ${why}`);
    };
    task.on('execution:missed', missed('a later tick was due by the time it could run'));
    task.on('execution:overlap', missed("the job's previous turn was still running"));
    try {
      void task.start();
    } catch (error) {
      void task.destroy();
      throw error;
    }
    return task;
  };
}

/**
 * The cron role: reconciliation, hold expiry, journal sealing and the retention purge on
 * node-cron schedules (config `cron`). Each job runs in one process at a time across the
 * deployment (a try-advisory-lock per job; a process that cannot take it skips that turn)
 * and never overlaps itself. Each scheduled tick runs at most once across the deployment: a
 * turn claims its (job, tick) row in `cron_ticks` before it runs, so a process whose clock is
 * late, taking the lock after another process has run that tick, skips it.
 */
export function startCronRole(runtime: Runtime, options: CronRoleOptions = {}): CronRole {
  const { config, database, ledger, logger, metrics } = runtime;
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
    { name: 'seal', schedule: config.cron.seal, run: () => sealJournal(database.unbounded.pool) },
    {
      name: 'retention',
      schedule: config.cron.retention,
      run: async () => {
        // The earlier of this process's clock and the database's: a clock that runs ahead must
        // not scrub or roll up rows before their time.
        const retention = await runRetention(
          database.unbounded.db,
          config,
          await retentionNow(database.db),
          options.retention,
        );
        metrics.retentionIncomplete.set(retention.complete ? 0 : 1);
        for (const stop of retention.stopped)
          metrics.retentionStopped.inc({ table: stop.table, step: stop.step });
        if (!retention.complete) {
          const stops = retention.stopped.map(
            (stop) => `${stop.table} ${stop.step}: ${stop.rows} rows, at most ${stop.bound} a run`,
          );
          logger.warn(
            {
              job: 'retention',
              table: [...new Set(retention.stopped.map((stop) => stop.table))].join(', '),
              stopped: retention.stopped,
              result: retention,
            },
            `retention purge stopped at its per-run bound (${stops.join('; ')}): the rest is left to the next run (if every run stops so, run it more often: cron.retention)`,
          );
        }
        const erased = await moveErasedBalances(database.db, ledger, { logger });
        if (erased.failed > 0) {
          logger.warn({ job: 'retention', result: retention }, 'retention purge done');
          throw new Error(
            `${erased.failed} erased user(s)' balance could not be moved to unclaimed ` +
              `(${erased.moved} moved; see the "erased balance not moved" log lines)`,
          );
        }
        return {
          ...retention,
          erasedBalancesMoved: erased.moved,
          erasedBalancesFailed: erased.failed,
        };
      },
    },
  ];
  // At 0 from the start: an alert on its increase sees the first run that stops.
  for (const step of ['scrub', 'roll-up'] as const)
    metrics.retentionStopped.inc({ table: 'usage_records', step }, 0);
  const locks = new JobLocks(
    database.url,
    config.database.connectTimeoutMs,
    config.database.keepAliveMs,
  );
  const inFlight = new Set<Promise<unknown>>();
  const scheduler = options.scheduler ?? nodeCronScheduler(runtime);
  const tasks = jobs.map((job) =>
    scheduler(job, async (at) => {
      const tick = scheduledTick(job.schedule, at);
      const work = runExclusive(runtime, locks, job, tick).finally(() => inFlight.delete(work));
      inFlight.add(work);
      await work;
    }),
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
 * with its connection; a broken one is replaced at the next turn. The connection lives from
 * turn to turn, so it may have died without a word since the last one (a failover behind a
 * virtual IP, a NAT that forgot it): TCP keepalive finds that while it is idle, and a lock
 * query that fails on a connection opened before is tried once more on a new one, rather than
 * failing the turn (a daily job then waited a day).
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
    private readonly keepAliveMs: number,
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

  private async lockOnce(key: string, retry = true): Promise<(() => Promise<void>) | null> {
    const reused = this.client !== null;
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
        connecting,
        client,
        'select pg_try_advisory_lock(hashtext($1)) as ok',
        key,
      );
      if (!rows[0]?.ok) return null;
    } catch (error) {
      this.discard(connecting);
      // Opened at an earlier turn, it may have died since: once more, on a new connection.
      // (Had the lost query taken the lock, the new one is refused it: the turn is skipped.)
      if (reused && retry) return this.lockOnce(key, false);
      throw error;
    }
    return async () => {
      // A lock whose connection broke died with it: nothing to release.
      if (this.client !== connecting) return;
      try {
        await this.query(connecting, client, 'select pg_advisory_unlock(hashtext($1))', key);
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
      // As the pool's (database.keepAliveMs): a link that died while idle is found and closed.
      ...tcpKeepAlive(this.keepAliveMs),
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
    connecting: Promise<pg.Client>,
    client: pg.Client,
    text: string,
    key: string,
  ): Promise<pg.QueryResult<R>> {
    // A query queued behind one that failed and closed the connection fails at once, rather
    // than waiting for its own timeout on a connection known to be gone.
    const result = this.queue.then(() => {
      if (this.client !== connecting) throw new Error('the lock connection was closed');
      return client.query<R>(text, [key]);
    });
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
 * The tick a turn belongs to: its scheduled time on the schedule's grain (the second for a
 * six-field schedule, else the minute), so that processes agree on it whatever their clocks
 * and however late their timers fire.
 */
export function scheduledTick(schedule: string, at: Date): Date {
  const grainMs = schedule.trim().split(/\s+/).length === 6 ? 1000 : 60_000;
  return new Date(Math.floor(at.getTime() / grainMs) * grainMs);
}

const RUNNER = `${hostname()}:${process.pid}`;

/**
 * Claims the job's tick; false when a process (this one or another) has claimed it already.
 * Rows a day older than the tick go with the claim.
 */
async function claimTick(db: Kysely<Database>, job: string, tick: Date): Promise<boolean> {
  const { rows } = await sql<{ claimed: number }>`
    with claimed as (
      insert into cron_ticks (job, tick, runner) values (${job}, ${tick}, ${RUNNER})
      on conflict (job, tick) do nothing
      returning 1
    ), pruned as (
      delete from cron_ticks where job = ${job} and tick < ${tick}::timestamptz - interval '1 day'
    )
    select count(*)::int as claimed from claimed`.execute(db);
  return rows[0]!.claimed === 1;
}

async function finishTick(
  db: Kysely<Database>,
  job: string,
  tick: Date,
  outcome: 'ok' | 'failed',
): Promise<void> {
  await db
    .updateTable('cron_ticks')
    .set({ outcome, finished_at: sql<Date>`now()` })
    .where('job', '=', job)
    .where('tick', '=', tick)
    .execute();
}

/**
 * One turn of a job, if this process gets its lock and the tick has not run yet. Never
 * rejects: whatever fails (the database gone before the job began, or the job itself) is
 * counted and logged as a failed turn, and the next turn tries again.
 */
async function runExclusive(
  runtime: Runtime,
  locks: JobLocks,
  job: Job,
  tick: Date,
): Promise<void> {
  const { database, metrics } = runtime;
  // A failed turn's error whole (type, message, stack, causes), its URLs cut to the host.
  const logger = runtime.logger.child({}, { serializers: { err: serializeError } });
  const started = performance.now();
  const failed = (error: unknown) => {
    metrics.cronRuns.inc({ job: job.name, outcome: 'failed' });
    logger.error(
      {
        job: job.name,
        tick: tick.toISOString(),
        durationMs: Math.round(performance.now() - started),
        err: error,
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
    let claimed: boolean;
    try {
      claimed = await claimTick(database.db, job.name, tick);
    } catch (error) {
      failed(error);
      return;
    }
    if (!claimed) {
      // A process whose clock is ahead of ours ran this tick already.
      metrics.cronRuns.inc({ job: job.name, outcome: 'skipped' });
      logger.debug({ job: job.name, tick: tick.toISOString() }, 'cron tick already run');
      return;
    }
    let result: unknown;
    try {
      result = await job.run();
    } catch (error) {
      failed(error);
      await finishTick(database.db, job.name, tick, 'failed').catch(() => {});
      return;
    }
    metrics.cronRuns.inc({ job: job.name, outcome: 'ok' });
    metrics.cronLastSuccess.set({ job: job.name }, Date.now() / 1000);
    logger.info(
      {
        job: job.name,
        tick: tick.toISOString(),
        durationMs: Math.round(performance.now() - started),
        result: summary(result),
      },
      'cron job done',
    );
    // The tick is claimed whatever this says; the outcome is for the operator.
    await finishTick(database.db, job.name, tick, 'ok').catch((error: unknown) =>
      logger.warn({ job: job.name, err: error }, 'cron tick outcome not recorded'),
    );
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
