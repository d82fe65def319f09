import { sql, type Kysely } from 'kysely';

/**
 * Crypto top-ups: each user's deposit addresses (derived from xpubs; no private key here),
 * every transfer the watchers saw to or from our addresses, and each watcher's cursor with
 * recent checkpoints for finding the fork point of a reorg.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create sequence deposit_index_evm minvalue 0 start 0;
    create sequence deposit_index_tron minvalue 0 start 0;

    create table deposit_addresses (
      user_id bigint not null references users (id),
      family text not null check (family in ('evm', 'tron')),
      derivation_index integer not null check (derivation_index >= 0),
      derivation_path text not null,
      -- Canonical form: EVM lower-case 0x hex, Tron base58.
      address text not null,
      created_at timestamptz not null default now(),
      primary key (family, derivation_index),
      unique (family, address),
      unique (user_id, family)
    );

    create table deposits (
      id bigint generated always as identity primary key,
      network text not null,
      tx_hash text not null,
      -- Position of the Transfer log in its block (EVM) or receipt (Tron); -1 for a native transfer.
      log_index integer not null,
      user_id bigint references users (id),
      address text not null,
      from_address text not null,
      -- The token contract; null for the native coin.
      contract text,
      asset text,
      currency text,
      decimals integer,
      amount_base_units numeric not null check (amount_base_units >= 0),
      amount numeric,
      block_number bigint not null,
      block_hash text not null,
      block_time timestamptz,
      status text not null check (status in ('seen', 'confirming', 'credited', 'orphaned', 'reversed', 'ignored')),
      confirmations integer not null default 0,
      confirmations_required text not null,
      ignore_reason text,
      -- Set after a reorg until a rescan sees the transfer again on the new chain.
      needs_recheck boolean not null default false,
      rate numeric,
      rate_source text,
      rate_details jsonb,
      amount_usd numeric,
      entry_id uuid,
      reversal_entry_id uuid,
      first_seen_at timestamptz not null default now(),
      credited_at timestamptz,
      updated_at timestamptz not null default now(),
      unique (network, tx_hash, log_index)
    );
    create index deposits_user on deposits (user_id, first_seen_at desc);
    create index deposits_open on deposits (network, block_number) where status in ('seen', 'confirming');
    create index deposits_recheck on deposits (network, block_number) where needs_recheck;

    -- Transfers out of our addresses: sweeps to the treasury (booked) and anything else (a finding).
    create table outgoing_transfers (
      id bigint generated always as identity primary key,
      network text not null,
      tx_hash text not null,
      log_index integer not null,
      from_address text not null,
      to_address text not null,
      contract text,
      asset text,
      currency text,
      amount_base_units numeric not null,
      amount numeric,
      fee_base_units numeric,
      block_number bigint not null,
      block_hash text not null,
      block_time timestamptz,
      kind text not null check (kind in ('sweep', 'unexpected')),
      -- booked: the ledger has it; unbooked: not to our treasury, left for reconciliation to report.
      status text not null check (status in ('seen', 'booked', 'unbooked', 'orphaned', 'failed')),
      needs_recheck boolean not null default false,
      entry_id uuid,
      first_seen_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      unique (network, tx_hash, log_index)
    );
    create index outgoing_open on outgoing_transfers (network, block_number) where status = 'seen';

    create table watcher_cursors (
      network text primary key,
      block_number bigint not null,
      block_hash text not null,
      updated_at timestamptz not null default now()
    );

    create table watcher_checkpoints (
      network text not null,
      block_number bigint not null,
      block_hash text not null,
      primary key (network, block_number)
    );
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    drop table watcher_checkpoints; drop table watcher_cursors; drop table outgoing_transfers;
    drop table deposits; drop table deposit_addresses; drop sequence deposit_index_evm; drop sequence deposit_index_tron;
  `.execute(db);
}
