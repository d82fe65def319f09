import { sql, type Kysely } from 'kysely';

/**
 * A deposit is one transfer to one of our addresses: a row per (network, transaction, log
 * index, address). A transaction that a reorg removes can be mined again on the new branch
 * paying another address (a contract call whose recipient depends on the chain's state): that
 * is another user's deposit, recorded as a row of its own, while the first row keeps its user
 * and what happened to it (orphaned, or credited and reversed) in that user's history.
 * Previously the one row per (network, transaction, log index) was moved to the other user.
 * Only one row of a transfer is ever live: the watcher retires the others (orphaned or
 * reversed) before it credits a new one, and keys each credit by `reincluded`, counted over
 * all rows of the transfer.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table deposits drop constraint deposits_network_tx_hash_log_index_key;
    alter table deposits add constraint deposits_network_tx_hash_log_index_address_key
      unique (network, tx_hash, log_index, address);
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    alter table deposits drop constraint deposits_network_tx_hash_log_index_address_key;
    alter table deposits add constraint deposits_network_tx_hash_log_index_key
      unique (network, tx_hash, log_index);
  `.execute(db);
}
