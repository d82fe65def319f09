import type pg from 'pg';
import {
  PostgresLedger,
  type PostEntryParameters,
  type PostgresLedgerOptions,
} from '../../ledger/index.js';

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

/** Row counts of every ledger table: a refused operation must leave them unchanged. */
export async function ledgerRowCounts(pool: pg.Pool): Promise<Record<string, number>> {
  const { rows } = await pool.query<Record<string, string>>(`
    select (select count(*) from ledger_entries) as entries,
           (select count(*) from ledger_postings) as postings,
           (select count(*) from ledger_holds) as holds,
           (select count(*) from ledger_idempotency) as idempotency,
           (select count(*) from ledger_accounts) as accounts,
           (select coalesce(sum(version), 0) from ledger_accounts) as versions`);
  return Object.fromEntries(Object.entries(rows[0]!).map(([k, v]) => [k, Number(v)]));
}

/** Gives a customer a starting balance through a promotion entry. */
export async function fund(ledger: PostgresLedger, userId: string, amount: string): Promise<void> {
  await ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: 'expenses:promotions', amount },
      { account: `liabilities:customers:${userId}`, amount: `-${amount}` },
    ],
  });
}

/** The i-th of a series of 0.25 charges to a customer, keyed `<userId>-<i>` (for replays). */
export function keyedCharge(userId: string, i: number): PostEntryParameters {
  return {
    kind: 'usage',
    idempotencyKey: `${userId}-${i}`,
    metadata: { series: userId },
    postings: [
      { account: `liabilities:customers:${userId}`, amount: '0.25' },
      { account: 'revenue:usage', amount: '-0.25' },
    ],
  };
}
