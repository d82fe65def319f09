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
  // One pass over the postings, grouped per entry and currency, answers the per-currency
  // totals, the unbalanced entries and how many entries have postings at all.
  const [book, fromAccounts] = await Promise.all([
    pool.query<{
      totals: CurrencyTotals[] | null;
      unbalanced: Array<{ entry_id: string; currency: string; net: string }> | null;
      unbalanced_count: string;
      with_postings: string;
      entries: string;
      postings: string;
    }>(`
      with per_entry as materialized (
        select entry_id, currency, coalesce(sum(amount) filter (where amount > 0), 0) as debit,
               coalesce(-sum(amount) filter (where amount < 0), 0) as credit, count(*) as postings
          from ledger_postings group by entry_id, currency
      )
      select (select jsonb_agg(jsonb_build_object('currency', currency, 'debit', trim_scale(debit)::text,
                'credit', trim_scale(credit)::text, 'net', trim_scale(debit - credit)::text) order by currency)
                from (select currency, sum(debit) as debit, sum(credit) as credit from per_entry group by currency) t) as totals,
             (select jsonb_agg(jsonb_build_object('entry_id', entry_id::text, 'currency', currency,
                'net', trim_scale(debit - credit)::text) order by entry_id, currency)
                from (select * from per_entry where debit <> credit order by entry_id, currency
                       limit ${MAX_FINDINGS_PER_KIND}) u) as unbalanced,
             (select count(*) from per_entry where debit <> credit)::text as unbalanced_count,
             (select count(*) from (select entry_id from per_entry group by entry_id) x)::text as with_postings,
             (select count(*) from ledger_entries)::text as entries,
             (select coalesce(sum(postings), 0) from per_entry)::text as postings`),
    pool.query<CurrencyTotals>(`
      select currency, trim_scale(sum(debits_posted))::text as debit, trim_scale(sum(credits_posted))::text as credit,
             trim_scale(sum(debits_posted - credits_posted))::text as net
        from ledger_accounts group by currency order by currency`),
  ]);
  const summary = book.rows[0]!;
  const fromPostings = { rows: summary.totals ?? [] };
  const unbalancedTotal = Number(summary.unbalanced_count);
  const unbalanced = {
    rows: (summary.unbalanced ?? []).map((row) => ({ ...row, total: String(unbalancedTotal) })),
  };
  // Every posting's entry exists (a foreign key), so fewer entries with postings than
  // entries means some have none; only then are they looked for.
  const empty =
    Number(summary.with_postings) < Number(summary.entries)
      ? await pool.query<{ id: string; total: string }>(`
          select e.id::text as id, count(*) over ()::text as total from ledger_entries e
           where not exists (select 1 from ledger_postings p where p.entry_id = e.id)
           order by e.id limit ${MAX_FINDINGS_PER_KIND}`)
      : { rows: [] };
  const counts = { rows: [{ entries: summary.entries, postings: summary.postings }] };
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
