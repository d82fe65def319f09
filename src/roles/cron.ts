import cron, { type ScheduledTask } from 'node-cron';
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
      run: () => runRetention(database.db, config, new Date()),
    },
  ];
  const inFlight = new Set<Promise<unknown>>();
  const tasks: ScheduledTask[] = jobs.map((job) =>
    cron.schedule(
      job.schedule,
      async () => {
        const work = runExclusive(runtime, job).finally(() => inFlight.delete(work));
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
    },
  };
}

async function runExclusive(runtime: Runtime, job: Job): Promise<void> {
  const { database, logger, metrics } = runtime;
  const client = await database.pool.connect();
  try {
    const { rows } = await client.query<{ ok: boolean }>(
      'select pg_try_advisory_lock(hashtext($1)) as ok',
      [`lingxi:cron:${job.name}`],
    );
    if (!rows[0]?.ok) {
      metrics.cronRuns.inc({ job: job.name, outcome: 'skipped' }); // another process has it
      return;
    }
    const started = performance.now();
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
      metrics.cronRuns.inc({ job: job.name, outcome: 'failed' });
      logger.error(
        { job: job.name, err: error instanceof Error ? error.message : String(error) },
        'cron job failed',
      );
    } finally {
      await client.query('select pg_advisory_unlock(hashtext($1))', [`lingxi:cron:${job.name}`]);
    }
  } finally {
    client.release();
  }
}

function summary(result: unknown): unknown {
  if (result && typeof result === 'object' && 'findings' in result) {
    const run = result as { runId: string; status: string; findings: unknown[] };
    return { runId: run.runId, status: run.status, findings: run.findings.length };
  }
  return result;
}
