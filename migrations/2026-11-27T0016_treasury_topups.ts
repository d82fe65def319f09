import { sql, type Kysely } from 'kysely';

/**
 * An outgoing transfer can be a `topup`: one of the network's treasury addresses sending to
 * one of our deposit addresses (gas for a sweep, or funds returned). It is an internal move,
 * booked custody to custody (the reverse of a sweep), never credited to the customer as a
 * deposit. It lives beside sweeps because it is booked, reorged and reconciled like them.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table outgoing_transfers drop constraint outgoing_transfers_kind_check;
    alter table outgoing_transfers add constraint outgoing_transfers_kind_check
      check (kind in ('sweep', 'unexpected', 'topup'));`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    alter table outgoing_transfers drop constraint outgoing_transfers_kind_check;
    alter table outgoing_transfers add constraint outgoing_transfers_kind_check
      check (kind in ('sweep', 'unexpected'));`.execute(db);
}
