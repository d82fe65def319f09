import { sql, type Kysely } from 'kysely';

/**
 * A transfer a reorg removed (orphaned, or credited and then reversed) can be mined again on
 * the new chain: the watcher then credits or books it afresh. `reincluded` counts those
 * returns; it is part of the idempotency keys of the new entries (`...:reincluded-{n}` when
 * above 0), so a returned transfer neither replays its reversed entry nor conflicts with it.
 * Rows that never left the chain keep 0 and their keys stay as they were.
 *
 * `fee_entry_id` is the network fee entry of an outgoing transfer's transaction (one per
 * transaction, on each of its rows), so a reorg that removes the transaction reverses the fee
 * too. Backfilled from the fee's idempotency key, `network-fee:{network}:{tx_hash}`.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table deposits add column reincluded integer not null default 0 check (reincluded >= 0);
    alter table outgoing_transfers add column reincluded integer not null default 0 check (reincluded >= 0);
    alter table outgoing_transfers add column fee_entry_id uuid;
    update outgoing_transfers o
       set fee_entry_id = (k.result->>'entryId')::uuid
      from ledger_idempotency k
     where k.key = 'network-fee:' || o.network || ':' || o.tx_hash;
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    alter table outgoing_transfers drop column fee_entry_id;
    alter table outgoing_transfers drop column reincluded;
    alter table deposits drop column reincluded;
  `.execute(db);
}
