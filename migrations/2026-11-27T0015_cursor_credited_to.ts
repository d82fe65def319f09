import { sql, type Kysely } from 'kysely';

/**
 * A watcher's cursor also says up to which block its last iteration could credit deposits
 * (the block it had scanned to, less the network's confirmations, or the finalized or
 * solidified block): reconciliation reports a deposit as stuck only when the watcher had it
 * confirmed and still did not credit it, not one that reached its confirmations after the
 * watcher's last poll. Null on cursors written before this migration (the next iteration
 * fills it in; reconciliation then falls back to the block it compares at).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table watcher_cursors add column credited_to bigint`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table watcher_cursors drop column credited_to`.execute(db);
}
