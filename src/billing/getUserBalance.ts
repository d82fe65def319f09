import type { Kysely } from 'kysely';
import { Decimal, normalSide, type AccountType, type PostgresLedger } from '../../ledger/index.js';
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
  const code = accounts.customer(userId);
  const balance = (await ledger.listBalances(code)).find((b) => b.account === code);
  return {
    currency: 'USD',
    available: balance?.available.toString() ?? '0',
    posted: balance?.posted.toString() ?? '0',
    held: balance?.held.toString() ?? '0',
  };
}

/**
 * The same balance read through `db`: inside a transaction, as of its snapshot, so that it
 * agrees with the ledger lines read in that transaction (the account export).
 */
export async function readUserBalance(db: Kysely<Database>, userId: string): Promise<UserBalance> {
  const row = await db
    .selectFrom('ledger_accounts')
    .select(['type', 'debits_posted', 'credits_posted', 'debits_pending', 'credits_pending'])
    .where('code', '=', accounts.customer(userId))
    .executeTakeFirst();
  if (!row) return { currency: 'USD', available: '0', posted: '0', held: '0' };
  const credit = normalSide(row.type as AccountType) === 'credit';
  const debits = new Decimal(row.debits_posted);
  const credits = new Decimal(row.credits_posted);
  const posted = credit ? credits.sub(debits) : debits.sub(credits);
  const held = new Decimal(credit ? row.debits_pending : row.credits_pending);
  return {
    currency: 'USD',
    available: posted.sub(held).toString(),
    posted: posted.toString(),
    held: held.toString(),
  };
}
