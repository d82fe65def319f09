import { sql, type Kysely } from 'kysely';

/**
 * A spend-limit reservation names the ledger hold of its call, so that a reservation released
 * because it expired (its call's settlement committed but the release after it never ran: the
 * database went away for longer than the retry window, or the process died in between) is
 * charged what that hold actually posted, not 0; the key's spend then stays true. Reservations
 * from before this migration have no hold: released at expiry as before, for 0.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table api_key_reservations add column hold_id uuid;`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table api_key_reservations drop column hold_id;`.execute(db);
}
