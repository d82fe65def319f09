import { sql, type Kysely } from 'kysely';

/**
 * Deposit address indexes are no longer taken from sequences: a family's next index is one past
 * the highest assigned, under a lock of the family held to commit (see assignDepositAddress),
 * so an assignment that fails or dies before its commit leaves no gap. The sequences go.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`drop sequence deposit_index_evm; drop sequence deposit_index_tron;`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    create sequence deposit_index_evm minvalue 0 start 0;
    create sequence deposit_index_tron minvalue 0 start 0;
    select setval('deposit_index_evm', max(derivation_index) + 1, false)
      from deposit_addresses where family = 'evm' having count(*) > 0;
    select setval('deposit_index_tron', max(derivation_index) + 1, false)
      from deposit_addresses where family = 'tron' having count(*) > 0;
  `.execute(db);
}
