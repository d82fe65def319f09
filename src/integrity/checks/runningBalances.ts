import type pg from 'pg';
import { Decimal } from '../../../ledger/index.js';
import { MAX_FINDINGS_PER_KIND, type Finding } from '../findings.js';

/**
 * Each posting's `balance_after` and `account_version` against the running sum and count
 * of its account's postings: what statements and running balances are built on. Reports
 * the first broken posting per account, with how many after it are off too.
 */
export async function checkRunningBalances(pool: pg.Pool): Promise<Finding[]> {
  const { rows } = await pool.query<{
    code: string;
    currency: string;
    entry_id: string;
    account_version: string;
    position: string;
    balance_after: string;
    running: string;
    broken: string;
  }>(`
    with chained as (
      select p.account_id, p.entry_id, p.account_version, p.balance_after,
             sum(p.amount) over w as running, row_number() over w as position
        from ledger_postings p
      window w as (partition by p.account_id order by p.account_version rows unbounded preceding)
    ), broken as (
      select c.*, count(*) over (partition by c.account_id) as broken
        from chained c where c.balance_after <> c.running or c.account_version <> c.position
    )
    select distinct on (a.code) a.code, a.currency, b.entry_id::text as entry_id,
           b.account_version::text as account_version, b.position::text as position,
           trim_scale(b.balance_after)::text as balance_after, trim_scale(b.running)::text as running,
           b.broken::text as broken
      from broken b join ledger_accounts a on a.id = b.account_id
     order by a.code, b.account_version
     limit ${MAX_FINDINGS_PER_KIND}`);
  return rows.map((row) => ({
    severity: 'error',
    kind: 'running_balance_mismatch',
    account: row.code,
    currency: row.currency,
    expected: row.running,
    actual: row.balance_after,
    difference: new Decimal(row.balance_after).sub(row.running).toString(),
    details: {
      entryId: row.entry_id,
      accountVersion: row.account_version,
      position: row.position,
      postingsAffected: Number(row.broken),
    },
  }));
}
