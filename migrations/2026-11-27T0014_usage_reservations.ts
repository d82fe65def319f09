import { sql, type Kysely } from 'kysely';

/**
 * A usage row names the spend-limit reservation of its call. The row is committed with the
 * ledger change that charges the call, so a reservation released because it expired (its
 * call's settlement committed but the release after it never ran: the database went away
 * for longer than the retry window, or the process died in between) is charged what its
 * usage rows say, not 0; the key's spend then stays true. Reservations from before this
 * migration have no rows naming them: released at expiry as before, for 0.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table usage_records add column reservation_id uuid;
    create index usage_records_reservation on usage_records (reservation_id)
      where reservation_id is not null;
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table usage_records drop column reservation_id;`.execute(db);
}
