import type pg from 'pg';
import { accountCodes } from '../../ledger/index.js';
import { csvTable } from './csv.js';
import { ISO_UTC } from './journalEntries.js';
import { STATEMENT_BOUNDS_SQL, type StatementBounds } from './statementBounds.js';
import { withSnapshot } from './snapshot.js';

export const STATEMENT_CSV_COLUMNS = [
  'timestamp',
  'entry_id',
  'kind',
  'description',
  'amount',
  'balance',
  'currency',
  'rate',
  'rate_source',
  'chain_ref',
] as const;

const table = csvTable(STATEMENT_CSV_COLUMNS, ['amount', 'balance', 'rate']);

export interface StreamStatementCsvParameters {
  userId: string;
  /**
   * ISO 8601, inclusive, on the entry's created_at; the boundary is placed in the account's
   * history (see {@link STATEMENT_BOUNDS_SQL}), so adjacent periods meet exactly.
   */
  from?: string;
  /** ISO 8601, exclusive. */
  to?: string;
  pageRows?: number;
}

/**
 * A user's statement as CSV: every line of their USD balance (`liabilities:customers:{id}`)
 * in the order it was applied, `amount` signed from the user's side (a deposit or credit is
 * positive, a charge negative) and `balance` the running balance after it (posted; holds
 * are not lines). The balance comes from the ledger, so a statement for a range starts
 * from the true balance, and one period's last balance is the next period's opening one. A user without an account gets the header only. Streamed from one
 * snapshot; reusable for `GET /api/me/statement?format=csv`. Text cells that a spreadsheet
 * would run as a formula start with `'` (see {@link csvTable}).
 *
 * @example ctx.body = Readable.from(streamStatementCsv(pool, { userId: '42' }))
 */
export function streamStatementCsv(
  pool: pg.Pool,
  params: StreamStatementCsvParameters,
): AsyncGenerator<string> {
  return withSnapshot(pool, async function* (reader) {
    // The header goes out with the first page (see journalCsv): a failing query still
    // answers an error rather than a 200 cut short.
    let header = table.header;
    const [account] = await reader.query<{ id: string; sign: number }>(
      `select id::text as id, case when type in ('asset', 'expense') then 1 else -1 end as sign
         from ledger_accounts where code = $1`,
      [accountCodes.customer(params.userId)],
    );
    if (account === undefined) {
      yield header;
      return;
    }
    const [bounds] = await reader.query<StatementBounds>(STATEMENT_BOUNDS_SQL, [
      account.id,
      params.from ?? null,
      params.to ?? null,
    ]);
    const query = `
      select to_char(e.created_at at time zone 'UTC', ${ISO_UTC}) as timestamp, e.id::text as entry_id, e.kind,
             e.description, trim_scale(p.amount * $2::int)::text as amount,
             trim_scale(p.balance_after * $2::int)::text as balance, p.currency,
             coalesce(e.metadata ->> 'rate', '') as rate, coalesce(e.metadata ->> 'rateSource', '') as rate_source,
             case when jsonb_typeof(e.metadata -> 'chain') = 'object' and e.metadata #>> '{chain,network}' is not null
                       and e.metadata #>> '{chain,txHash}' is not null
                  then concat_ws(':', e.metadata #>> '{chain,network}', e.metadata #>> '{chain,txHash}', e.metadata #>> '{chain,logIndex}')
                  else '' end as chain_ref
        from ledger_postings p
        join ledger_entries e on e.id = p.entry_id
       where p.account_id = $1::bigint and p.account_version > $3::bigint
         and ($4::bigint is null or p.account_version <= $4::bigint)
       order by p.account_version`;
    const values = [account.id, account.sign, bounds!.after, bounds!.through];
    for await (const rows of reader.pages<Record<(typeof STATEMENT_CSV_COLUMNS)[number], string>>(
      query,
      values,
      params.pageRows,
    )) {
      yield (
        header +
        rows.map((row) => table.line(STATEMENT_CSV_COLUMNS.map((column) => row[column]))).join('')
      );
      header = '';
    }
    if (header !== '') yield header;
  });
}
