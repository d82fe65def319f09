import type pg from 'pg';
import type { BatchState } from '../state.js';
import type { IdempotencyRecord } from './readBatchInputs.js';
import { attachmentInserts } from '../attachments.js';
import { Decimal } from '../money.js';
import type { AccountTotals } from './knownState.js';
import { preparedStatement } from './preparedStatement.js';

/** A batch's write, built: the statement and what the database returns when it runs. */
export interface BatchWrite {
  statement: { name: string; text: string; values: unknown[] } | null;
}

/**
 * Writes every row of a planned batch in one statement (see buildBatchWrite). Outside a
 * transaction this statement is the batch's commit.
 */
export async function writeBatch(
  client: pg.PoolClient,
  write: BatchWrite,
): Promise<AccountTotals[]> {
  if (write.statement === null) return [];
  const { rows } = await client.query<{ accounts: Array<Record<string, string>>; holds: string }>(
    write.statement,
  );
  return rows[0]!.accounts.map((row) => ({
    id: row['id']!,
    version: BigInt(row['version']!),
    debitsPosted: new Decimal(row['debitsPosted']!),
    creditsPosted: new Decimal(row['creditsPosted']!),
    debitsPending: new Decimal(row['debitsPending']!),
    creditsPending: new Decimal(row['creditsPending']!),
  }));
}

/**
 * Builds the one statement that writes every row of a planned batch: data-modifying CTEs, each fed by
 * unnest() of arrays, and the batch's fence row (`batchId`, see the ledger_batch_fences
 * migration) when it has one. Account totals move by the batch's deltas through
 * `ledger_apply_account_deltas` (in id order); a no-overdraft account that would end below
 * zero, or a resolved hold that is no longer pending, fails the whole statement (a check
 * violation or serialization_failure) and nothing of the batch is written: the batcher then
 * plans it again on fresh totals.
 *
 * Built before anything is sent, so that a row that cannot be encoded (an attachment holding a
 * BigInt, say) fails its batch as a plain error, never as a write whose outcome is unknown.
 */
export function buildBatchWrite(
  state: BatchState,
  newKeys: Map<string, IdempotencyRecord>,
  batchId: string | null,
): BatchWrite {
  const parts: string[] = [];
  const values: unknown[] = [];
  const param = (value: unknown, type: string): string => {
    values.push(Array.isArray(value) ? arrayLiteral(value, type) : value);
    return `$${values.length}::${type}`;
  };
  const column = <T>(rows: T[], type: string, pick: (row: T) => unknown) =>
    param(rows.map(pick), type);

  const touched = [...state.touchedAccounts]
    .map((id) => ({ now: state.account(id), was: state.initial.get(id)! }))
    .sort((a, b) => (BigInt(a.now.id) < BigInt(b.now.id) ? -1 : 1));
  if (touched.length > 0) {
    parts.push(`w_accounts as (select * from ledger_apply_account_deltas(
      ${column(touched, 'bigint[]', (a) => a.now.id)},
      ${column(touched, 'numeric[]', (a) => a.now.debitsPosted.sub(a.was.debitsPosted).toString())},
      ${column(touched, 'numeric[]', (a) => a.now.creditsPosted.sub(a.was.creditsPosted).toString())},
      ${column(touched, 'numeric[]', (a) => a.now.debitsPending.sub(a.was.debitsPending).toString())},
      ${column(touched, 'numeric[]', (a) => a.now.creditsPending.sub(a.was.creditsPending).toString())},
      ${column(touched, 'bigint[]', (a) => (a.now.version - a.was.version).toString())}))`);
  }

  const newHolds = [...state.newHolds.values()];
  if (newHolds.length > 0) {
    parts.push(`w_new_holds as (insert into ledger_holds (id, debit_account_id, credit_account_id, currency, amount,
        expires_at, metadata, status, posted_amount, shortfall, entry_id, resolved_at)
      select id, d, c, cur, amt, exp, meta, st, pa, sf, ent, case when st = 'pending' then null else now() end
        from unnest(${column(newHolds, 'uuid[]', (h) => h.id)}, ${column(newHolds, 'bigint[]', (h) => h.debitAccountId)},
          ${column(newHolds, 'bigint[]', (h) => h.creditAccountId)}, ${column(newHolds, 'text[]', (h) => h.currency)},
          ${column(newHolds, 'numeric[]', (h) => h.amount.toString())}, ${column(newHolds, 'timestamptz[]', (h) => h.expiresAt)},
          ${column(newHolds, 'jsonb[]', (h) => JSON.stringify(h.metadata))}, ${column(newHolds, 'text[]', (h) => h.status)},
          ${column(newHolds, 'numeric[]', (h) => h.postedAmount?.toString() ?? null)},
          ${column(newHolds, 'numeric[]', (h) => h.shortfall?.toString() ?? null)},
          ${column(newHolds, 'uuid[]', (h) => h.entryId)})
        as t(id, d, c, cur, amt, exp, meta, st, pa, sf, ent))`);
  }

  if (state.entries.length > 0) {
    const e = state.entries;
    parts.push(`w_entries as (insert into ledger_entries (id, kind, description, metadata, reverses_entry_id, hold_id, effective_at)
      select id, kind, descr, meta, rev, hold, coalesce(eff, now())
        from unnest(${column(e, 'uuid[]', (x) => x.id)}, ${column(e, 'text[]', (x) => x.kind)},
          ${column(e, 'text[]', (x) => x.description)}, ${column(e, 'jsonb[]', (x) => JSON.stringify(x.metadata))},
          ${column(e, 'uuid[]', (x) => x.reversesEntryId)}, ${column(e, 'uuid[]', (x) => x.holdId)},
          ${column(e, 'timestamptz[]', (x) => x.effectiveAt)})
        as t(id, kind, descr, meta, rev, hold, eff))`);
  }

  if (state.postings.length > 0) {
    const p = state.postings;
    parts.push(`w_postings as (insert into ledger_postings (entry_id, line, account_id, currency, amount, account_version, balance_after)
      select t.entry_id, t.line, t.account_id, t.currency, t.amount, u.version - t.later_count, u.balance - t.later_sum
        from unnest(${column(p, 'uuid[]', (x) => x.entryId)}, ${column(p, 'int[]', (x) => x.line)},
          ${column(p, 'bigint[]', (x) => x.accountId)},
          ${column(p, 'text[]', (x) => x.currency)}, ${column(p, 'numeric[]', (x) => x.amount.toString())},
          ${column(p, 'bigint[]', (x) => x.laterCount)}, ${column(p, 'numeric[]', (x) => x.laterSum.toString())})
          as t(entry_id, line, account_id, currency, amount, later_count, later_sum)
        join w_accounts u on u.account_id = t.account_id)`);
  }

  const resolved = [...state.resolvedHolds.values()];
  if (resolved.length > 0) {
    parts.push(`w_resolved as (update ledger_holds h
        set status = t.st, posted_amount = t.pa, shortfall = t.sf, entry_id = t.ent, resolved_at = now()
      from unnest(${column(resolved, 'uuid[]', (h) => h.id)}, ${column(resolved, 'text[]', (h) => h.status)},
        ${column(resolved, 'numeric[]', (h) => h.postedAmount?.toString() ?? null)},
        ${column(resolved, 'numeric[]', (h) => h.shortfall?.toString() ?? null)},
        ${column(resolved, 'uuid[]', (h) => h.entryId)}) as t(id, st, pa, sf, ent)
      where h.id = t.id and h.status = 'pending'
        -- Posted only before its deadline by the database's clock (the plan may have used this
        -- machine's, for a hold it remembered): past it, the batch is planned again on a read.
        and (t.st <> 'posted' or h.expires_at is null or h.expires_at > clock_timestamp())
      returning h.id)`);
  }

  if (newKeys.size > 0) {
    const k = [...newKeys];
    parts.push(`w_keys as (insert into ledger_idempotency (key, request_hash, result)
      select * from unnest(${column(k, 'text[]', ([key]) => key)}, ${column(k, 'text[]', ([, r]) => r.requestHash)},
        ${column(k, 'jsonb[]', ([, r]) => JSON.stringify(r.result))}))`);
  }

  attachmentInserts(state.attachments, param).forEach((insert, i) =>
    parts.push(`w_attached_${i} as (${insert})`),
  );

  if (parts.length === 0) return { statement: null };
  // Last, so that a batch still waiting on a row lock has not written it yet.
  if (batchId !== null)
    parts.push(
      `w_fence as (insert into ledger_batch_fences (batch_id) values (${param(batchId, 'uuid')}))`,
    );
  const holdCheck =
    resolved.length > 0
      ? `(select case when count(*) <> ${param(resolved.length, 'int')} then ledger_conflict('a hold') else count(*) end from w_resolved)`
      : '0';
  const accounts =
    touched.length > 0
      ? `(select json_agg(json_build_object('id', account_id::text, 'version', version::text,
           'debitsPosted', debits_posted::text, 'creditsPosted', credits_posted::text,
           'debitsPending', debits_pending::text, 'creditsPending', credits_pending::text)) from w_accounts)`
      : `'[]'::json`;
  return {
    statement: preparedStatement(
      `with ${parts.join(',\n')} select ${accounts} as accounts, ${holdCheck} as holds`,
      values,
    ),
  };
}

/** What an element of each array type this file writes may look like to be sent as is. */
const PLAIN_ELEMENT: Record<string, RegExp> = {
  'uuid[]': /^[0-9a-fA-F-]{32,36}$/,
  'bigint[]': /^-?\d{1,19}$/,
  'int[]': /^-?\d{1,10}$/,
  'numeric[]': /^-?\d+(\.\d+)?$/,
};

/**
 * An array parameter as PostgreSQL's array text (`{1,2,NULL}`), built directly for the number
 * and uuid columns of a batch (pg's own encoder quotes and escapes every element, a
 * noticeable part of a batch's time in Node); anything else, or an element that does not look
 * like its type, is left to pg to encode.
 */
export function arrayLiteral(elements: unknown[], type: string): unknown {
  const plain = PLAIN_ELEMENT[type];
  if (!plain) return elements;
  const parts: string[] = new Array<string>(elements.length);
  for (let i = 0; i < elements.length; i += 1) {
    const element = elements[i];
    if (element === null || element === undefined) parts[i] = 'NULL';
    else {
      const text = typeof element === 'string' ? element : String(element);
      if (!plain.test(text)) return elements;
      parts[i] = text;
    }
  }
  return `{${parts.join(',')}}`;
}
