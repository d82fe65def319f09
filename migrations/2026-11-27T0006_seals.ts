import { sql, type Kysely } from 'kysely';

/**
 * Journal seals: a hash chain over committed entries, in commit order. Seal n covers every
 * entry written by a transaction with id in [from_tx_id, to_tx_id); `to_tx_id` was the
 * oldest transaction still running when the seal was taken, so that set can never change
 * again. `hash` commits to the entries (with their postings) and to the previous seal's hash.
 * Append-only, like the ledger.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table ledger_seals (
      seal bigint primary key check (seal > 0),
      from_tx_id xid8 not null,
      to_tx_id xid8 not null,
      entry_count bigint not null check (entry_count > 0),
      first_entry_id uuid not null,
      last_entry_id uuid not null,
      -- sha256 (hex) of the canonical lines of the entries, in (tx_id, id) order.
      entries_hash text not null check (entries_hash ~ '^[0-9a-f]{64}$'),
      -- The hash of seal n - 1; 64 zeros for seal 1.
      previous_hash text not null unique check (previous_hash ~ '^[0-9a-f]{64}$'),
      hash text not null unique check (hash ~ '^[0-9a-f]{64}$'),
      algorithm text not null,
      created_at timestamptz not null default now(),
      check (to_tx_id > from_tx_id)
    );
    create unique index ledger_seals_to_tx on ledger_seals (to_tx_id);

    create trigger ledger_seals_append_only before update or delete on ledger_seals
      for each statement execute function ledger_refuse_change();
    create trigger ledger_seals_no_truncate before truncate on ledger_seals
      for each statement execute function ledger_refuse_change();
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table ledger_seals`.execute(db);
}
