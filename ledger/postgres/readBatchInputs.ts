import type pg from 'pg';
import type { PreparedCommand, ReversalTarget } from '../command.js';
import { isUuid } from '../ids.js';
import { Decimal } from '../money.js';
import { preparedStatement } from './preparedStatement.js';
import type { AccountState, HoldState } from '../state.js';
import type { AccountType, HoldStatus } from '../types.js';

export interface IdempotencyRecord {
  requestHash: string;
  result: unknown;
}

/** Everything a batch plans against. */
export interface BatchInputs {
  accounts: Map<string, AccountState>;
  holds: Map<string, HoldState>;
  overdueHolds: HoldState[];
  reversals: Map<string, ReversalTarget>;
  idempotency: Map<string, IdempotencyRecord>;
}

/**
 * Reads what a batch's commands need: stored idempotency keys, the holds they name (and,
 * for an expiry, the overdue ones), the entries they reverse, and every account any of
 * those touch. Without `lock` it is one statement (one round trip); with `lock` it runs in
 * the caller's transaction and locks holds, then accounts, each in id order.
 */
export async function readBatchInputs(
  client: pg.PoolClient,
  commands: ReadonlyArray<PreparedCommand<unknown>>,
  options: { lock: boolean },
): Promise<BatchInputs> {
  const request = {
    keys: unique(commands.flatMap((c) => (c.idempotencyKey ? [c.idempotencyKey] : []))),
    holdIds: unique(commands.flatMap((c) => c.holdIds)).filter(isUuid),
    reverseIds: unique(commands.flatMap((c) => c.reverseEntryIds)).filter(isUuid),
    accountIds: unique(commands.flatMap((c) => c.accountIds)),
    expireLimit: Math.max(0, ...commands.map((c) => c.expireLimit ?? 0)),
  };
  return options.lock ? readLocked(client, request) : readAtOnce(client, request);
}

interface ReadRequest {
  keys: string[];
  holdIds: string[];
  reverseIds: string[];
  accountIds: string[];
  expireLimit: number;
}

const HOLD_COLUMNS = `id, debit_account_id::text as debit_account_id, credit_account_id::text as credit_account_id,
  currency, amount::text as amount, status, metadata, posted_amount::text as posted_amount, shortfall::text as shortfall,
  entry_id, expires_at, (expires_at is not null and expires_at <= clock_timestamp()) as overdue`;
const ACCOUNT_COLUMNS = `id::text as id, code, type, currency, no_negative, debits_posted::text as debits_posted,
  credits_posted::text as credits_posted, debits_pending::text as debits_pending,
  credits_pending::text as credits_pending, version::text as version`;
const OVERDUE_HOLDS = `status = 'pending' and expires_at <= clock_timestamp()`;
const REVERSAL_COLUMNS = `p.entry_id, e.kind, p.account_id::text as account_id, p.amount::text as amount,
  (select r.id from ledger_entries r where r.reverses_entry_id = e.id) as reversed_by`;

async function readAtOnce(client: pg.PoolClient, request: ReadRequest): Promise<BatchInputs> {
  const { rows } = await client.query<{
    holds: HoldRow[];
    overdue: HoldRow[];
    reversals: ReversalRow[];
    accounts: AccountRow[];
    keys: KeyRow[];
  }>(
    preparedStatement(
      `with h as (select ${HOLD_COLUMNS} from ledger_holds where id = any($1::uuid[])),
          o as (select ${HOLD_COLUMNS} from ledger_holds where $2::int > 0 and ${OVERDUE_HOLDS} order by expires_at limit $2),
          r as (select ${REVERSAL_COLUMNS} from ledger_postings p join ledger_entries e on e.id = p.entry_id
                 where p.entry_id = any($3::uuid[]) order by p.entry_id, p.line),
          a as (select ${ACCOUNT_COLUMNS} from ledger_accounts
                 where id = any($4::bigint[])
                    or id in (select debit_account_id::bigint from h union all select credit_account_id::bigint from h
                              union all select debit_account_id::bigint from o union all select credit_account_id::bigint from o
                              union all select account_id::bigint from r))
     select (select coalesce(json_agg(h), '[]') from h) as holds,
            (select coalesce(json_agg(o), '[]') from o) as overdue,
            (select coalesce(json_agg(r), '[]') from r) as reversals,
            (select coalesce(json_agg(a), '[]') from a) as accounts,
            (select coalesce(json_agg(k), '[]') from (select key, request_hash, result from ledger_idempotency
                                                       where key = any($5::text[])) k) as keys`,
      [request.holdIds, request.expireLimit, request.reverseIds, request.accountIds, request.keys],
    ),
  );
  const row = rows[0]!;
  return assemble(row.holds, row.overdue, row.reversals, row.accounts, row.keys);
}

async function readLocked(client: pg.PoolClient, request: ReadRequest): Promise<BatchInputs> {
  const keys = request.keys.length
    ? (
        await client.query<KeyRow>(
          'select key, request_hash, result from ledger_idempotency where key = any($1::text[])',
          [request.keys],
        )
      ).rows
    : [];
  const holds = request.holdIds.length
    ? (
        await client.query<HoldRow>(
          `select ${HOLD_COLUMNS} from ledger_holds where id = any($1::uuid[]) order by id for update`,
          [request.holdIds],
        )
      ).rows
    : [];
  const overdue = request.expireLimit
    ? (
        await client.query<HoldRow>(
          `select ${HOLD_COLUMNS} from ledger_holds where ${OVERDUE_HOLDS} order by id limit $1 for update skip locked`,
          [request.expireLimit],
        )
      ).rows
    : [];
  const reversals = request.reverseIds.length
    ? (
        await client.query<ReversalRow>(
          `select ${REVERSAL_COLUMNS} from ledger_postings p join ledger_entries e on e.id = p.entry_id where p.entry_id = any($1::uuid[]) order by p.entry_id, p.line`,
          [request.reverseIds],
        )
      ).rows
    : [];
  const accountIds = unique([
    ...request.accountIds,
    ...[...holds, ...overdue].flatMap((h) => [h.debit_account_id, h.credit_account_id]),
    ...reversals.map((r) => r.account_id),
  ]);
  const accounts = accountIds.length
    ? (
        await client.query<AccountRow>(
          `select ${ACCOUNT_COLUMNS} from ledger_accounts where id = any($1::bigint[]) order by id for update`,
          [accountIds],
        )
      ).rows
    : [];
  return assemble(holds, overdue, reversals, accounts, keys);
}

function assemble(
  holdRows: HoldRow[],
  overdueRows: HoldRow[],
  reversalRows: ReversalRow[],
  accountRows: AccountRow[],
  keyRows: KeyRow[],
): BatchInputs {
  const holds = new Map<string, HoldState>();
  for (const row of holdRows) holds.set(row.id, holdFromRow(row));
  const overdueHolds = overdueRows.map((row) => {
    const hold = holds.get(row.id) ?? holdFromRow(row);
    holds.set(hold.id, hold);
    return hold;
  });
  const reversals = new Map<string, ReversalTarget>();
  for (const row of reversalRows) {
    let target = reversals.get(row.entry_id);
    if (!target) {
      target = { entryId: row.entry_id, kind: row.kind, postings: [], reversedBy: row.reversed_by };
      reversals.set(row.entry_id, target);
    }
    target.postings.push({ accountId: row.account_id, amount: new Decimal(row.amount) });
  }
  const accounts = new Map(accountRows.map((row) => [row.id, accountFromRow(row)]));
  const idempotency = new Map(
    keyRows.map((row) => [row.key, { requestHash: row.request_hash, result: row.result }]),
  );
  return { accounts, holds, overdueHolds, reversals, idempotency };
}

interface HoldRow {
  id: string;
  debit_account_id: string;
  credit_account_id: string;
  currency: string;
  amount: string;
  status: HoldStatus;
  metadata: Record<string, unknown>;
  posted_amount: string | null;
  shortfall: string | null;
  entry_id: string | null;
  expires_at: string | Date | null;
  overdue: boolean;
}

interface ReversalRow {
  entry_id: string;
  kind: string;
  account_id: string;
  amount: string;
  reversed_by: string | null;
}

interface AccountRow {
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

interface KeyRow {
  key: string;
  request_hash: string;
  result: unknown;
}

function holdFromRow(row: HoldRow): HoldState {
  return {
    id: row.id,
    debitAccountId: row.debit_account_id,
    creditAccountId: row.credit_account_id,
    currency: row.currency,
    amount: new Decimal(row.amount),
    status: row.status,
    expiresAt: row.expires_at === null ? null : new Date(row.expires_at),
    postedAmount: row.posted_amount === null ? null : new Decimal(row.posted_amount),
    shortfall: row.shortfall === null ? null : new Decimal(row.shortfall),
    entryId: row.entry_id,
    metadata: row.metadata,
    overdue: row.overdue,
  };
}

function accountFromRow(row: AccountRow): AccountState {
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
