import type pg from 'pg';
import { Decimal } from '../../../ledger/index.js';
import { MAX_FINDINGS_PER_KIND, type Finding } from '../findings.js';

export interface CurrencyTotals {
  currency: string;
  debit: string;
  credit: string;
  net: string;
}

export interface TrialBalanceCheck {
  findings: Finding[];
  /** Per currency, from the postings themselves. */
  totals: CurrencyTotals[];
  entries: number;
  postings: number;
}

/**
 * Law 1 seen from the whole book: per currency, debits equal credits, both in the postings
 * and in the accounts' cached totals; and every single entry balances per currency and has
 * postings (the database enforces both on insert; this catches what went around it).
 */
export async function checkTrialBalance(pool: pg.Pool): Promise<TrialBalanceCheck> {
  const findings: Finding[] = [];
  const [fromPostings, fromAccounts, unbalanced, empty, counts] = await Promise.all([
    pool.query<CurrencyTotals>(`
      select currency,
             trim_scale(coalesce(sum(amount) filter (where amount > 0), 0))::text as debit,
             trim_scale(coalesce(-sum(amount) filter (where amount < 0), 0))::text as credit,
             trim_scale(sum(amount))::text as net
        from ledger_postings group by currency order by currency`),
    pool.query<CurrencyTotals>(`
      select currency, trim_scale(sum(debits_posted))::text as debit, trim_scale(sum(credits_posted))::text as credit,
             trim_scale(sum(debits_posted - credits_posted))::text as net
        from ledger_accounts group by currency order by currency`),
    pool.query<{ entry_id: string; currency: string; net: string; total: string }>(`
      select entry_id::text as entry_id, currency, trim_scale(sum(amount))::text as net, count(*) over ()::text as total
        from ledger_postings group by entry_id, currency having sum(amount) <> 0
       order by entry_id, currency limit ${MAX_FINDINGS_PER_KIND}`),
    pool.query<{ id: string; total: string }>(`
      select e.id::text as id, count(*) over ()::text as total from ledger_entries e
       where not exists (select 1 from ledger_postings p where p.entry_id = e.id)
       order by e.id limit ${MAX_FINDINGS_PER_KIND}`),
    pool.query<{ entries: string; postings: string }>(`
      select (select count(*) from ledger_entries)::text as entries, (select count(*) from ledger_postings)::text as postings`),
  ]);
  for (const [source, rows] of [
    ['postings', fromPostings.rows],
    ['accounts', fromAccounts.rows],
  ] as const) {
    for (const total of rows) {
      if (new Decimal(total.net).isZero()) continue;
      findings.push({
        severity: 'error',
        kind: 'trial_balance_nonzero',
        currency: total.currency,
        expected: '0',
        actual: total.net,
        difference: total.net,
        details: {
          source: source === 'postings' ? 'sum of postings' : "sum of the accounts' cached totals",
          debit: total.debit,
          credit: total.credit,
        },
      });
    }
  }
  for (const row of unbalanced.rows) {
    findings.push({
      severity: 'error',
      kind: 'entry_unbalanced',
      currency: row.currency,
      expected: '0',
      actual: row.net,
      difference: row.net,
      details: { entryId: row.entry_id, unbalancedEntries: Number(row.total) },
    });
  }
  for (const row of empty.rows) {
    findings.push({
      severity: 'error',
      kind: 'entry_without_postings',
      expected: '2',
      actual: '0',
      difference: '-2',
      details: { entryId: row.id, entriesWithoutPostings: Number(row.total) },
    });
  }
  return {
    findings,
    totals: fromPostings.rows,
    entries: Number(counts.rows[0]?.entries ?? 0),
    postings: Number(counts.rows[0]?.postings ?? 0),
  };
}
