import type { ColumnType, Generated } from 'kysely';

type Timestamp = ColumnType<Date, Date | string, Date | string>;

/** Row types of the watchers' tables (migrations/2026-11-27T0005_deposits.ts and later), as `pg` returns them. */
export interface WatcherTables {
  users: { id: Generated<string>; status: Generated<string> };
  deposit_addresses: {
    user_id: string;
    family: 'evm' | 'tron';
    derivation_index: number;
    derivation_path: string;
    address: string;
    created_at: Generated<Date>;
  };
  deposits: {
    id: Generated<string>;
    network: string;
    tx_hash: string;
    log_index: number;
    user_id: string | null;
    address: string;
    from_address: string;
    contract: string | null;
    asset: string | null;
    currency: string | null;
    decimals: number | null;
    amount_base_units: string;
    amount: string | null;
    block_number: string;
    block_hash: string;
    block_time: Timestamp | null;
    status: string;
    confirmations: number;
    confirmations_required: string;
    ignore_reason: string | null;
    needs_recheck: Generated<boolean>;
    rate: string | null;
    rate_source: string | null;
    rate_details: ColumnType<Record<string, string> | null, string | null, string | null>;
    amount_usd: string | null;
    entry_id: string | null;
    reversal_entry_id: string | null;
    /** Times the transfer came back to the chain after a reorg removed it (migration 0013). */
    reincluded: Generated<number>;
    first_seen_at: Generated<Date>;
    credited_at: Timestamp | null;
    updated_at: Generated<Date>;
  };
  outgoing_transfers: {
    id: Generated<string>;
    network: string;
    tx_hash: string;
    log_index: number;
    from_address: string;
    to_address: string;
    contract: string | null;
    asset: string | null;
    currency: string | null;
    amount_base_units: string;
    amount: string | null;
    fee_base_units: string | null;
    block_number: string;
    block_hash: string;
    block_time: Timestamp | null;
    /** sweep: ours to a treasury; topup: a treasury to ours (migration 0016); unexpected: ours to anyone else. */
    kind: 'sweep' | 'topup' | 'unexpected';
    status: string;
    needs_recheck: Generated<boolean>;
    entry_id: string | null;
    /** The transaction's network fee entry, on each of its rows (migration 0013). */
    fee_entry_id: string | null;
    reincluded: Generated<number>;
    first_seen_at: Generated<Date>;
    updated_at: Generated<Date>;
  };
  watcher_cursors: {
    network: string;
    block_number: string;
    block_hash: string;
    /** The highest block whose deposits the last iteration could credit (migration 0015). */
    credited_to: string | null;
    updated_at: Generated<Date>;
  };
  watcher_checkpoints: { network: string; block_number: string; block_hash: string };
}
