import type pg from 'pg';
import { PostgresLedger, type PostgresLedgerOptions } from '../../ledger/index.js';

export const TEST_CURRENCIES = [
  { code: 'USD', scale: 18 },
  { code: 'USDT', scale: 6 },
  { code: 'ETH', scale: 18 },
];

/** A ledger over `pool`, with the currency table written. */
export async function openLedger(
  pool: pg.Pool,
  options: Partial<PostgresLedgerOptions> = {},
): Promise<PostgresLedger> {
  const ledger = new PostgresLedger({ pool, currencies: TEST_CURRENCIES, ...options });
  await ledger.init();
  return ledger;
}
