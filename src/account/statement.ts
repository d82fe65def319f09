import { CompiledQuery, sql, type Kysely } from 'kysely';
import { Decimal } from '../../ledger/index.js';
import { accounts } from '../billing/accounts.js';
import type { Database } from '../db/schema.js';
import { STATEMENT_BOUNDS_SQL, type StatementBounds } from '../exports/statementBounds.js';

export interface StatementParameters {
  userId: string;
  /**
   * Lines booked (entry created_at) at or after, as exact ISO 8601 text (microseconds kept;
   * see parseTime). The boundary is placed in the account's history: see STATEMENT_BOUNDS_SQL.
   */
  from?: string;
  /** Lines booked before. */
  to?: string;
}

/** One ledger line of the user's balance: positive amounts grow it, negative ones spend it. */
export interface StatementLine {
  /** The line's place in the account's history (1, 2, 3...). */
  sequence: string;
  entryId: string;
  kind: string;
  description: string;
  createdAt: string;
  effectiveAt: string;
  amount: string;
  runningBalance: string;
  reversesEntryId: string | null;
  metadata: Record<string, unknown>;
}

export interface StatementSummary {
  account: string;
  currency: 'USD';
  from: string | null;
  to: string | null;
  /** The balance before the first line of the range. */
  openingBalance: string;
  /** The balance after the last line of the range. */
  closingBalance: string;
  totalIn: string;
  totalOut: string;
  lineCount: number;
}

export interface StatementPage extends StatementSummary {
  lines: StatementLine[];
  /** Pass back as `cursor` for the next (later) lines; null on the last page. */
  nextCursor: string | null;
}

interface AccountRef {
  id: string;
  sign: 1 | -1;
}

/** The account and the period's place in its history. */
interface Period extends AccountRef {
  bounds: StatementBounds;
}

/**
 * The user's statement: the ledger lines of `liabilities:customers:{id}` booked in the range,
 * oldest first, each with the running balance after it, plus opening and closing balances.
 * Lines come `limit` at a time; `cursor` is the previous page's nextCursor.
 */
export async function getStatement(
  db: Kysely<Database>,
  params: StatementParameters & { limit: number; cursor?: string },
): Promise<StatementPage> {
  // One snapshot: a line booked between the summary and the lines would otherwise be listed
  // but not counted, and the last running balance would not be the closing balance.
  return db
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (trx) => {
      const account = await findPeriod(trx, params);
      const summary = await summarise(trx, account, params);
      if (!account) return { ...summary, lines: [], nextCursor: null };
      const rows = await readLines(trx, account, params.cursor ?? '0', params.limit + 1);
      const lines = rows.slice(0, params.limit);
      return {
        ...summary,
        lines,
        nextCursor: rows.length > params.limit ? lines[lines.length - 1]!.sequence : null,
      };
    });
}

/** Opening and closing balances and totals of the range, without the lines. */
export async function getStatementSummary(
  db: Kysely<Database>,
  params: StatementParameters,
): Promise<StatementSummary> {
  return summarise(db, await findPeriod(db, params), params);
}

const PAGE = 1000;

/** Every statement line of the range, oldest first, a page (at most 1000 lines) at a time. */
export async function* statementLinePages(
  db: Kysely<Database>,
  params: StatementParameters,
): AsyncGenerator<StatementLine[]> {
  const account = await findPeriod(db, params);
  if (!account) return;
  let after = '0';
  for (;;) {
    const lines = await readLines(db, account, after, PAGE);
    if (lines.length > 0) yield lines;
    if (lines.length < PAGE) return;
    after = lines[lines.length - 1]!.sequence;
  }
}

async function findPeriod(
  db: Kysely<Database>,
  params: StatementParameters,
): Promise<Period | null> {
  const row = await db
    .selectFrom('ledger_accounts')
    .select(['id', 'type'])
    .where('code', '=', accounts.customer(params.userId))
    .executeTakeFirst();
  if (!row) return null;
  const { rows } = await db.executeQuery<StatementBounds>(
    CompiledQuery.raw(STATEMENT_BOUNDS_SQL, [row.id, params.from ?? null, params.to ?? null]),
  );
  return {
    id: row.id,
    sign: row.type === 'asset' || row.type === 'expense' ? 1 : -1,
    bounds: rows[0]!,
  };
}

/** Lines of the period after `afterSequence` (a cursor), in the account's order. */
async function readLines(
  db: Kysely<Database>,
  account: Period,
  afterSequence: string,
  limit: number,
): Promise<StatementLine[]> {
  const { after, through } = account.bounds;
  const from = BigInt(afterSequence) > BigInt(after) ? afterSequence : after;
  let query = db
    .selectFrom('ledger_postings as p')
    .innerJoin('ledger_entries as e', 'e.id', 'p.entry_id')
    .select([
      'p.account_version',
      'p.amount',
      'p.balance_after',
      'e.id',
      'e.kind',
      'e.description',
      'e.metadata',
      'e.reverses_entry_id',
      'e.created_at',
      'e.effective_at',
    ])
    .where('p.account_id', '=', account.id)
    .where('p.account_version', '>', from)
    .orderBy('p.account_version', 'asc')
    .limit(limit);
  if (through !== null) query = query.where('p.account_version', '<=', through);
  const rows = await query.execute();
  return rows.map((row) => ({
    sequence: row.account_version,
    entryId: row.id,
    kind: row.kind,
    description: row.description,
    createdAt: row.created_at.toISOString(),
    effectiveAt: row.effective_at.toISOString(),
    amount: new Decimal(row.amount).mul(account.sign).toString(),
    runningBalance: new Decimal(row.balance_after).mul(account.sign).toString(),
    reversesEntryId: row.reverses_entry_id,
    metadata: row.metadata,
  }));
}

async function summarise(
  db: Kysely<Database>,
  account: Period | null,
  params: StatementParameters,
): Promise<StatementSummary> {
  const base = {
    account: accounts.customer(params.userId),
    currency: 'USD' as const,
    from: params.from ?? null,
    to: params.to ?? null,
  };
  if (!account)
    return {
      ...base,
      openingBalance: '0',
      closingBalance: '0',
      totalIn: '0',
      totalOut: '0',
      lineCount: 0,
    };
  const { after, through } = account.bounds;
  const { rows } = await sql<{
    lines: string;
    last_after: string | null;
    debits: string | null;
    credits: string | null;
    before: string | null;
  }>`
    with r as (
      select p.account_version, p.amount, p.balance_after from ledger_postings p
       where p.account_id = ${account.id} and p.account_version > ${after}::bigint
         and (${through}::bigint is null or p.account_version <= ${through}::bigint)
    )
    select (select count(*) from r) as lines,
           (select balance_after from r order by account_version desc limit 1) as last_after,
           (select sum(amount) filter (where amount > 0) from r) as debits,
           (select -sum(amount) filter (where amount < 0) from r) as credits,
           (select p.balance_after from ledger_postings p
             where p.account_id = ${account.id} and p.account_version = ${after}::bigint) as before`.execute(
    db,
  );
  const row = rows[0]!;
  const signed = (value: string | null) => new Decimal(value ?? 0).mul(account.sign);
  const opening = signed(row.before);
  const closing = row.last_after !== null ? signed(row.last_after) : opening;
  // On a credit-normal account credits grow the balance.
  const [grow, shrink] =
    account.sign === -1 ? [row.credits, row.debits] : [row.debits, row.credits];
  return {
    ...base,
    openingBalance: opening.toString(),
    closingBalance: closing.toString(),
    totalIn: new Decimal(grow ?? 0).toString(),
    totalOut: new Decimal(shrink ?? 0).toString(),
    lineCount: Number(row.lines),
  };
}
