import type pg from 'pg';
import type { PostgresLedger } from '../../../ledger/index.js';
import type { Finding } from '../findings.js';

export interface OverdueHoldsCheck {
  findings: Finding[];
  overdue: number;
  expired: number;
}

/** Most expiry rounds per run (each up to `EXPIRE_BATCH` holds): a bound, not a target. */
const MAX_EXPIRE_ROUNDS = 100;
const EXPIRE_BATCH = 1_000;

/**
 * Pending holds past their deadline: counted per currency with the amount they still
 * withhold from customers, then (unless `expire` is false) expired through the ledger,
 * which releases what they held. A hold left overdue means a caller never settled it
 * (a crash mid-call), so it is a warning, not a broken book.
 */
export async function checkOverdueHolds(
  pool: pg.Pool,
  ledger: PostgresLedger,
  options: { expire: boolean },
): Promise<OverdueHoldsCheck> {
  const { rows } = await pool.query<{
    currency: string;
    holds: string;
    amount: string;
    hold_ids: string[];
    accounts: string[];
    oldest: string;
  }>(`
    select h.currency, count(*)::text as holds, trim_scale(sum(h.amount))::text as amount,
           (array_agg(h.id::text order by h.expires_at, h.id))[1:20] as hold_ids,
           (array_agg(distinct a.code))[1:20] as accounts,
           to_char(min(h.expires_at) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as oldest
      from ledger_holds h join ledger_accounts a on a.id = h.debit_account_id
     where h.status = 'pending' and h.expires_at <= clock_timestamp()
     group by h.currency order by h.currency`);
  let expired = 0;
  if (options.expire && rows.length > 0) {
    for (let round = 0; round < MAX_EXPIRE_ROUNDS; round += 1) {
      const { expiredHoldIds } = await ledger.expireHolds({ limit: EXPIRE_BATCH });
      expired += expiredHoldIds.length;
      if (expiredHoldIds.length < EXPIRE_BATCH) break;
    }
  }
  const overdue = rows.reduce((sum, row) => sum + Number(row.holds), 0);
  const findings: Finding[] = rows.map((row) => ({
    severity: 'warning',
    kind: 'hold_overdue',
    currency: row.currency,
    expected: '0',
    actual: row.amount,
    difference: row.amount,
    details: {
      holds: Number(row.holds),
      // Across currencies: the expiry runs once for all of them.
      expiredThisRun: expired,
      oldestDeadline: row.oldest,
      holdIds: row.hold_ids,
      accounts: row.accounts,
    },
  }));
  return { findings, overdue, expired };
}
