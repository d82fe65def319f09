import type { ColumnType, Generated } from 'kysely';

/** Row types of the ledger's tables, as the `pg` driver returns them (numeric and int8 as strings). */
export interface LedgerTables {
  ledger_currencies: { code: string; scale: number };
  ledger_accounts: {
    id: Generated<string>;
    code: string;
    type: string;
    currency: string;
    no_negative: boolean;
    debits_posted: Generated<string>;
    credits_posted: Generated<string>;
    debits_pending: Generated<string>;
    credits_pending: Generated<string>;
    version: Generated<string>;
    created_at: Generated<Date>;
  };
  ledger_holds: {
    id: string;
    debit_account_id: string;
    credit_account_id: string;
    currency: string;
    amount: string;
    status: string;
    expires_at: Date | null;
    metadata: ColumnType<Record<string, unknown>, string, string>;
    posted_amount: string | null;
    shortfall: string | null;
    entry_id: string | null;
    created_at: Generated<Date>;
    resolved_at: Date | null;
  };
  ledger_entries: {
    id: string;
    kind: string;
    description: string;
    metadata: ColumnType<Record<string, unknown>, string, string>;
    reverses_entry_id: string | null;
    hold_id: string | null;
    effective_at: Generated<Date>;
    created_at: Generated<Date>;
    tx_id: Generated<string>;
  };
  ledger_postings: {
    id: Generated<string>;
    entry_id: string;
    line: number;
    account_id: string;
    currency: string;
    amount: string;
    account_version: string;
    balance_after: string;
  };
  ledger_idempotency: {
    key: string;
    request_hash: string;
    result: ColumnType<unknown, string, string>;
    created_at: Generated<Date>;
  };
  ledger_batch_fences: {
    batch_id: string;
    abandoned: Generated<boolean>;
    created_at: Generated<Date>;
  };
}
