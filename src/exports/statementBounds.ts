/**
 * Where a statement's period begins and ends in its account's history, as account versions:
 * the lines of `[from, to)` are those with `account_version` in `(after, through]`.
 *
 * A line's `account_version` is the order in which the account's row lock let its writers
 * in, and its entry's `created_at` is when the writing transaction started: two writers
 * within a millisecond of an instant can take the lock in the other order (the one that
 * started first applies its line second). Filtering on `created_at` while listing in version
 * order then gives a period whose lines do not add up to its closing balance, and whose
 * closing balance is not the next period's opening balance. So the boundary at an instant t
 * is placed in the history: right after the last line (highest version) whose entry was
 * booked before t. Every line booked before t is in the earlier period; a line booked at or
 * after t that the account applied before such a line is in the earlier period too (its
 * timestamp then reads at or after `to`). Periods that meet at t share that boundary, so
 * one's closing balance is the next one's opening balance, and every line is in exactly one.
 *
 * Parameters: `$1` the account id, `$2` from, `$3` to (timestamptz text, or null for no
 * bound). Columns: `after` (0 when there is no `from`), `through` (null when there is no `to`).
 * A max() over a join, not `order by account_version desc limit 1`: the planner then reads
 * whichever is smaller, the account's lines or the entries before the instant, where the
 * index walk back from the newest line took 1.4 s for a period at the start of a
 * 200,000-line history (64 ms this way).
 */
export const STATEMENT_BOUNDS_SQL = `
  select (case when $2::timestamptz is null then 0 else coalesce((
            select max(p.account_version) from ledger_postings p join ledger_entries e on e.id = p.entry_id
             where p.account_id = $1::bigint and e.created_at < $2::timestamptz), 0) end)::text as after,
         (case when $3::timestamptz is null then null else coalesce((
            select max(p.account_version) from ledger_postings p join ledger_entries e on e.id = p.entry_id
             where p.account_id = $1::bigint and e.created_at < $3::timestamptz), 0) end)::text as through`;

/** A statement period as account versions: lines with `after < account_version <= through`. */
export interface StatementBounds {
  after: string;
  /** null: no upper bound. */
  through: string | null;
}
