import type pg from 'pg';
import type { BatchContext, PreparedCommand, ReversalTarget } from '../command.js';
import { IdempotencyConflictError, LedgerError } from '../errors.js';
import { Decimal } from '../money.js';
import { BatchState, type AccountState, type HoldState } from '../state.js';
import type { AccountType, HoldStatus } from '../types.js';
import { isUuid } from '../ids.js';

export type CommandOutcome = { ok: true; value: unknown } | { ok: false; error: unknown };

interface IdempotencyRecord {
  requestHash: string;
  result: unknown;
}

/**
 * Runs a batch of prepared commands in one transaction on `client`: locks what they touch
 * (holds, then accounts, each in id order so that concurrent batches never deadlock on
 * them), plans each command in order against the locked state, and writes every row of the
 * batch in one statement. A command that is refused (insufficient funds, a conflict...)
 * gets its error and writes nothing; the others go ahead.
 *
 * Throws only for database errors, after rolling back; the caller decides to retry.
 */
export async function executeBatch(
  client: pg.PoolClient,
  commands: ReadonlyArray<PreparedCommand<unknown>>,
): Promise<CommandOutcome[]> {
  await client.query('begin');
  try {
    const outcomes = await planAndWrite(client, commands);
    await client.query('commit');
    return outcomes;
  } catch (error) {
    await client.query('rollback').catch(() => {});
    throw error;
  }
}

async function planAndWrite(
  client: pg.PoolClient,
  commands: ReadonlyArray<PreparedCommand<unknown>>,
): Promise<CommandOutcome[]> {
  const keys = unique(commands.flatMap((c) => (c.idempotencyKey ? [c.idempotencyKey] : [])));
  const stored = new Map<string, IdempotencyRecord>();
  if (keys.length > 0) {
    const found = await client.query<{ key: string; request_hash: string; result: unknown }>(
      'select key, request_hash, result from ledger_idempotency where key = any($1::text[])',
      [keys],
    );
    for (const row of found.rows)
      stored.set(row.key, { requestHash: row.request_hash, result: row.result });
  }

  const holds = new Map<string, HoldState>();
  const holdIds = unique(commands.flatMap((c) => c.holdIds)).filter(isUuid);
  if (holdIds.length > 0) {
    const found = await client.query<HoldRowFromDb>(
      `${SELECT_HOLDS} where id = any($1::uuid[]) order by id for update`,
      [holdIds],
    );
    for (const row of found.rows) holds.set(row.id, holdFromRow(row));
  }
  const overdueHolds: HoldState[] = [];
  const expireLimit = Math.max(0, ...commands.map((c) => c.expireLimit ?? 0));
  if (expireLimit > 0) {
    const found = await client.query<HoldRowFromDb>(
      `${SELECT_HOLDS} where status = 'pending' and expires_at <= clock_timestamp()
       order by id limit $1 for update skip locked`,
      [expireLimit],
    );
    for (const row of found.rows) {
      const hold = holds.get(row.id) ?? holdFromRow(row);
      holds.set(hold.id, hold);
      overdueHolds.push(hold);
    }
  }

  const reversals = new Map<string, ReversalTarget>();
  const reverseIds = unique(commands.flatMap((c) => c.reverseEntryIds)).filter(isUuid);
  if (reverseIds.length > 0) {
    const found = await client.query<{
      entry_id: string;
      kind: string;
      account_id: string;
      amount: string;
      reversed_by: string | null;
    }>(
      `select p.entry_id, e.kind, p.account_id, p.amount,
              (select r.id from ledger_entries r where r.reverses_entry_id = e.id) as reversed_by
         from ledger_postings p join ledger_entries e on e.id = p.entry_id
        where p.entry_id = any($1::uuid[]) order by p.id`,
      [reverseIds],
    );
    for (const row of found.rows) {
      let target = reversals.get(row.entry_id);
      if (!target) {
        target = {
          entryId: row.entry_id,
          kind: row.kind,
          postings: [],
          reversedBy: row.reversed_by,
        };
        reversals.set(row.entry_id, target);
      }
      target.postings.push({ accountId: row.account_id, amount: new Decimal(row.amount) });
    }
  }

  const accountIds = unique([
    ...commands.flatMap((c) => c.accountIds),
    ...[...holds.values()].flatMap((h) => [h.debitAccountId, h.creditAccountId]),
    ...[...reversals.values()].flatMap((r) => r.postings.map((p) => p.accountId)),
  ]);
  const accounts = new Map<string, AccountState>();
  if (accountIds.length > 0) {
    const found = await client.query<AccountRowFromDb>(
      `select id, code, type, currency, no_negative, debits_posted, credits_posted,
              debits_pending, credits_pending, version
         from ledger_accounts where id = any($1::bigint[]) order by id for update`,
      [accountIds],
    );
    for (const row of found.rows) accounts.set(row.id, accountFromRow(row));
  }

  const state = new BatchState(accounts);
  for (const hold of holds.values()) state.holds.set(hold.id, hold);
  const context: BatchContext = { state, reversals, overdueHolds };
  const newKeys = new Map<string, IdempotencyRecord>();
  const outcomes: CommandOutcome[] = commands.map((command) => {
    try {
      const key = command.idempotencyKey;
      if (key) {
        const previous = stored.get(key) ?? newKeys.get(key);
        if (previous) {
          if (previous.requestHash !== command.requestHash) throw new IdempotencyConflictError(key);
          return { ok: true, value: command.replay(previous.result) };
        }
      }
      const value = command.plan(context);
      if (key)
        newKeys.set(key, { requestHash: command.requestHash ?? '', result: command.encode(value) });
      return { ok: true, value };
    } catch (error) {
      if (error instanceof LedgerError) return { ok: false, error };
      throw error;
    }
  });

  await writeBatch(client, state, newKeys);
  return outcomes;
}

/** Every row of a batch in one statement: data-modifying CTEs, each fed by unnest() of arrays. */
async function writeBatch(
  client: pg.PoolClient,
  state: BatchState,
  newKeys: Map<string, IdempotencyRecord>,
): Promise<void> {
  const parts: string[] = [];
  const values: unknown[] = [];
  const param = (value: unknown, type: string): string => {
    values.push(value);
    return `$${values.length}::${type}`;
  };

  const newHolds = [...state.newHolds.values()];
  if (newHolds.length > 0) {
    parts.push(`insert into ledger_holds (id, debit_account_id, credit_account_id, currency, amount,
        expires_at, metadata, status, posted_amount, shortfall, entry_id, resolved_at)
      select id, d, c, cur, amt, exp, meta, st, pa, sf, ent, case when st = 'pending' then null else now() end
        from unnest(${param(
          newHolds.map((h) => h.id),
          'uuid[]',
        )}, ${param(
          newHolds.map((h) => h.debitAccountId),
          'bigint[]',
        )},
          ${param(
            newHolds.map((h) => h.creditAccountId),
            'bigint[]',
          )}, ${param(
            newHolds.map((h) => h.currency),
            'text[]',
          )},
          ${param(
            newHolds.map((h) => h.amount.toString()),
            'numeric[]',
          )}, ${param(
            newHolds.map((h) => h.expiresAt),
            'timestamptz[]',
          )},
          ${param(
            newHolds.map((h) => JSON.stringify(h.metadata)),
            'jsonb[]',
          )}, ${param(
            newHolds.map((h) => h.status),
            'text[]',
          )},
          ${param(
            newHolds.map((h) => h.postedAmount?.toString() ?? null),
            'numeric[]',
          )},
          ${param(
            newHolds.map((h) => h.shortfall?.toString() ?? null),
            'numeric[]',
          )},
          ${param(
            newHolds.map((h) => h.entryId),
            'uuid[]',
          )})
        as t(id, d, c, cur, amt, exp, meta, st, pa, sf, ent)`);
  }
  if (state.entries.length > 0) {
    const e = state.entries;
    parts.push(`insert into ledger_entries (id, kind, description, metadata, reverses_entry_id, hold_id, effective_at)
      select id, kind, descr, meta, rev, hold, coalesce(eff, now())
        from unnest(${param(
          e.map((x) => x.id),
          'uuid[]',
        )}, ${param(
          e.map((x) => x.kind),
          'text[]',
        )},
          ${param(
            e.map((x) => x.description),
            'text[]',
          )}, ${param(
            e.map((x) => JSON.stringify(x.metadata)),
            'jsonb[]',
          )},
          ${param(
            e.map((x) => x.reversesEntryId),
            'uuid[]',
          )}, ${param(
            e.map((x) => x.holdId),
            'uuid[]',
          )},
          ${param(
            e.map((x) => x.effectiveAt),
            'timestamptz[]',
          )})
        as t(id, kind, descr, meta, rev, hold, eff)`);
  }
  if (state.postings.length > 0) {
    const p = state.postings;
    parts.push(`insert into ledger_postings (entry_id, account_id, currency, amount, account_version, balance_after)
      select * from unnest(${param(
        p.map((x) => x.entryId),
        'uuid[]',
      )}, ${param(
        p.map((x) => x.accountId),
        'bigint[]',
      )},
        ${param(
          p.map((x) => x.currency),
          'text[]',
        )}, ${param(
          p.map((x) => x.amount.toString()),
          'numeric[]',
        )},
        ${param(
          p.map((x) => x.accountVersion.toString()),
          'bigint[]',
        )}, ${param(
          p.map((x) => x.balanceAfter.toString()),
          'numeric[]',
        )})`);
  }
  const resolved = [...state.resolvedHolds.values()];
  if (resolved.length > 0) {
    parts.push(`update ledger_holds h set status = t.st, posted_amount = t.pa, shortfall = t.sf, entry_id = t.ent, resolved_at = now()
      from unnest(${param(
        resolved.map((h) => h.id),
        'uuid[]',
      )}, ${param(
        resolved.map((h) => h.status),
        'text[]',
      )},
        ${param(
          resolved.map((h) => h.postedAmount?.toString() ?? null),
          'numeric[]',
        )},
        ${param(
          resolved.map((h) => h.shortfall?.toString() ?? null),
          'numeric[]',
        )},
        ${param(
          resolved.map((h) => h.entryId),
          'uuid[]',
        )}) as t(id, st, pa, sf, ent)
      where h.id = t.id`);
  }
  const touched = [...state.touchedAccounts].map((id) => state.account(id));
  if (touched.length > 0) {
    parts.push(`update ledger_accounts a set debits_posted = t.dp, credits_posted = t.cp,
        debits_pending = t.dpe, credits_pending = t.cpe, version = t.v
      from unnest(${param(
        touched.map((a) => a.id),
        'bigint[]',
      )}, ${param(
        touched.map((a) => a.debitsPosted.toString()),
        'numeric[]',
      )},
        ${param(
          touched.map((a) => a.creditsPosted.toString()),
          'numeric[]',
        )}, ${param(
          touched.map((a) => a.debitsPending.toString()),
          'numeric[]',
        )},
        ${param(
          touched.map((a) => a.creditsPending.toString()),
          'numeric[]',
        )}, ${param(
          touched.map((a) => a.version.toString()),
          'bigint[]',
        )})
        as t(id, dp, cp, dpe, cpe, v)
      where a.id = t.id`);
  }
  if (newKeys.size > 0) {
    const k = [...newKeys];
    parts.push(`insert into ledger_idempotency (key, request_hash, result)
      select * from unnest(${param(
        k.map(([key]) => key),
        'text[]',
      )}, ${param(
        k.map(([, r]) => r.requestHash),
        'text[]',
      )},
        ${param(
          k.map(([, r]) => JSON.stringify(r.result)),
          'jsonb[]',
        )})`);
  }
  if (parts.length === 0) return;
  const text = parts.map((part, i) => `w${i} as (${part})`).join(',\n');
  await client.query(`with ${text} select 1`, values);
}

const SELECT_HOLDS = `select id, debit_account_id, credit_account_id, currency, amount, status, expires_at,
  metadata, posted_amount, shortfall, entry_id, (expires_at is not null and expires_at <= clock_timestamp()) as overdue
  from ledger_holds`;

interface HoldRowFromDb {
  id: string;
  debit_account_id: string;
  credit_account_id: string;
  currency: string;
  amount: string;
  status: HoldStatus;
  expires_at: Date | null;
  metadata: Record<string, unknown>;
  posted_amount: string | null;
  shortfall: string | null;
  entry_id: string | null;
  overdue: boolean;
}

function holdFromRow(row: HoldRowFromDb): HoldState {
  return {
    id: row.id,
    debitAccountId: row.debit_account_id,
    creditAccountId: row.credit_account_id,
    currency: row.currency,
    amount: new Decimal(row.amount),
    status: row.status,
    expiresAt: row.expires_at,
    postedAmount: row.posted_amount === null ? null : new Decimal(row.posted_amount),
    shortfall: row.shortfall === null ? null : new Decimal(row.shortfall),
    entryId: row.entry_id,
    metadata: row.metadata,
    overdue: row.overdue,
  };
}

interface AccountRowFromDb {
  id: string;
  code: string;
  type: AccountType;
  currency: string;
  no_negative: boolean;
  debits_posted: string;
  credits_posted: string;
  debits_pending: string;
  credits_pending: string;
  version: string;
}

function accountFromRow(row: AccountRowFromDb): AccountState {
  return {
    id: row.id,
    code: row.code,
    type: row.type,
    currency: row.currency,
    noNegative: row.no_negative,
    debitsPosted: new Decimal(row.debits_posted),
    creditsPosted: new Decimal(row.credits_posted),
    debitsPending: new Decimal(row.debits_pending),
    creditsPending: new Decimal(row.credits_pending),
    version: BigInt(row.version),
  };
}

function unique<T>(items: T[]): T[] {
  return [...new Set(items)];
}
