import type { PostgresLedger } from '../../ledger/index.js';
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
