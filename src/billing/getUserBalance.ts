import type { Kysely } from 'kysely';
import {
  balanceFromRow,
  UnknownAccountError,
  type Balance,
  type PostgresLedger,
} from '../../ledger/index.js';
import type { Database } from '../db/schema.js';
import { accounts } from './accounts.js';

export interface UserBalance {
  currency: 'USD';
  available: string;
  posted: string;
  held: string;
}

/** A user's prepaid USD balance in the contract's shape (zeros before the first top-up). */
export async function getUserBalance(ledger: PostgresLedger, userId: string): Promise<UserBalance> {
  const balance = await ledger.getBalance(accounts.customer(userId)).catch((error: unknown) => {
    if (error instanceof UnknownAccountError) return null;
    throw error;
  });
  return toUserBalance(balance);
}

/**
 * The same balance read through `db`: inside a transaction, as of its snapshot, so that it
 * agrees with the ledger lines read in that transaction (the account export).
 */
export async function readUserBalance(db: Kysely<Database>, userId: string): Promise<UserBalance> {
  const row = await db
    .selectFrom('ledger_accounts')
    .select([
      'code',
      'type',
      'currency',
      'no_negative',
      'debits_posted',
      'credits_posted',
      'debits_pending',
      'credits_pending',
    ])
    .where('code', '=', accounts.customer(userId))
    .executeTakeFirst();
  return toUserBalance(row ? balanceFromRow(row) : null);
}

function toUserBalance(balance: Balance | null): UserBalance {
  return {
    currency: 'USD',
    available: balance?.available.toString() ?? '0',
    posted: balance?.posted.toString() ?? '0',
    held: balance?.held.toString() ?? '0',
  };
}
