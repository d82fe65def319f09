import { sql, type Kysely } from 'kysely';

/**
 * One row per (cron job, scheduled tick) that a cron process ran: the tick is claimed
 * (`insert ... on conflict do nothing`) before the job runs, so a tick runs at most once
 * across processes, even when their clocks differ by more than the job takes (a late process
 * used to take the job's lock after the first had finished and run the same tick again).
 * `tick` is the schedule's time, not a clock reading; the cron role prunes rows a day older
 * than the tick it claims.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table cron_ticks (
      job text not null,
      tick timestamptz not null,
      runner text not null,
      started_at timestamptz not null default now(),
      finished_at timestamptz,
      outcome text check (outcome in ('ok', 'failed')),
      primary key (job, tick)
    );
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table cron_ticks;`.execute(db);
}
