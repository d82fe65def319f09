import type pg from 'pg';
import { Decimal } from '../../ledger/index.js';
import { csvTable } from './csv.js';
import { timeColumn, type TimeBasis } from './journalFilter.js';
import { withSnapshot } from './snapshot.js';

export const TRIAL_BALANCE_CSV_COLUMNS = [
  'account',
  'type',
  'currency',
  'debit',
  'credit',
  'balance',
] as const;

const table = csvTable(TRIAL_BALANCE_CSV_COLUMNS, ['debit', 'credit', 'balance']);

export interface StreamTrialBalanceParameters {
  /**
   * As of this instant (ISO 8601, exclusive), summed from the postings of entries before it
   * on the `basis` time. Without it: the accounts' current totals.
   */
  to?: string;
  basis?: TimeBasis;
  pageRows?: number;
}

/**
 * The trial balance as CSV: one line per account (by currency, then code) with debits,
 * credits and balance (debits minus credits), then one `total` line per currency whose
 * balance is the net, zero in a sound book. Streamed from one snapshot.
 */
export function streamTrialBalanceCsv(
  pool: pg.Pool,
  params: StreamTrialBalanceParameters = {},
): AsyncGenerator<string> {
  return withSnapshot(pool, async function* (reader) {
    // The header goes out with the first page (see journalCsv): a failing query still
    // answers an error rather than a 200 cut short.
    let header = table.header;
    const query =
      params.to === undefined
        ? `select code, type, currency, trim_scale(debits_posted)::text as debit, trim_scale(credits_posted)::text as credit
             from ledger_accounts order by currency, code`
        : `select a.code, a.type, a.currency,
                  trim_scale(coalesce(sum(p.amount) filter (where p.amount > 0), 0))::text as debit,
                  trim_scale(coalesce(-sum(p.amount) filter (where p.amount < 0), 0))::text as credit
             from ledger_accounts a
             left join (ledger_postings p join ledger_entries e on e.id = p.entry_id and e.${timeColumn(params.basis)} < $1::timestamptz)
                    on p.account_id = a.id
            where a.created_at < $1::timestamptz or p.account_id is not null
            group by a.id order by a.currency, a.code`;
    const totals = new Map<string, { debit: Decimal; credit: Decimal }>();
    for await (const rows of reader.pages<{
      code: string;
      type: string;
      currency: string;
      debit: string;
      credit: string;
    }>(query, params.to === undefined ? [] : [params.to], params.pageRows)) {
      let chunk = header;
      header = '';
      for (const row of rows) {
        const debit = new Decimal(row.debit);
        const credit = new Decimal(row.credit);
        const total = totals.get(row.currency) ?? { debit: new Decimal(0), credit: new Decimal(0) };
        total.debit = total.debit.add(debit);
        total.credit = total.credit.add(credit);
        totals.set(row.currency, total);
        chunk += table.line([
          row.code,
          row.type,
          row.currency,
          row.debit,
          row.credit,
          debit.sub(credit).toString(),
        ]);
      }
      yield chunk;
    }
    let footer = header;
    for (const [currency, total] of [...totals].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      footer += table.line([
        '',
        'total',
        currency,
        total.debit.toString(),
        total.credit.toString(),
        total.debit.sub(total.credit).toString(),
      ]);
    }
    yield footer;
  });
}
