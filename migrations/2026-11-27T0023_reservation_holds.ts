import { sql, type Kysely } from 'kysely';

/**
 * A spend-limit reservation names its call's hold. A reservation past its deadline is released
 * only once that hold is no longer pending (posted, voided or expired): the settlement that
 * posts the hold commits the call's usage row in the same transaction, so whoever sees the hold
 * resolved also sees what the call was charged. Before this, an expiry that ran while a
 * settlement was committing released the reservation for 0 and the key's spend lost the charge.
 * Reservations from before this migration name no hold: released at expiry as before.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table api_key_reservations add column hold_id uuid;`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table api_key_reservations drop column hold_id;`.execute(db);
}
