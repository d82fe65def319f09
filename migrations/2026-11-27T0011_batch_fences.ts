import { sql, type Kysely } from 'kysely';

/**
 * One row per ledger batch that writes, committed with it. When the connection of a batch
 * fails before its answer arrives, the ledger cannot know from the error whether the batch
 * committed; it then inserts the batch's row itself, marked abandoned: if that insert finds the
 * batch's own row (waiting for it when the batch is still running), the batch committed; if it
 * does not, the batch can no longer commit (its own insert would now conflict) and is planned
 * again. Exactly once, whatever the timing, with no need to find or stop the old backend.
 * Rows are only needed for seconds; the expire-holds job deletes those older than an hour
 * (batch ids are UUIDv7, so by a range of the primary key).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table ledger_batch_fences (
      batch_id uuid primary key,
      abandoned boolean not null default false,
      created_at timestamptz not null default now()
    );
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table ledger_batch_fences;`.execute(db);
}
