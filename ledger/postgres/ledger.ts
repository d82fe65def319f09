import { Kysely, PostgresDialect, sql, type RawBuilder } from 'kysely';
import { guardPoolClients } from './connectionErrors.js';
import type pg from 'pg';
import { accountSpecFromChart, DEFAULT_CHART, type AccountTemplate } from '../chart.js';
import type { PrepareContext, PreparedCommand } from '../command.js';
import {
  prepareCreateHold,
  type CreateHoldParameters,
  type CreateHoldResult,
} from '../commands/createHold.js';
import {
  prepareExpireHolds,
  type ExpireHoldsParameters,
  type ExpireHoldsResult,
} from '../commands/expireHolds.js';
import {
  preparePostEntry,
  type PostEntryParameters,
  type PostEntryResult,
} from '../commands/postEntry.js';
import {
  preparePostHold,
  type PostHoldParameters,
  type PostHoldResult,
} from '../commands/postHold.js';
import {
  prepareReverseEntry,
  type ReverseEntryParameters,
  type ReverseEntryResult,
} from '../commands/reverseEntry.js';
import {
  prepareVoidHold,
  type VoidHoldParameters,
  type VoidHoldResult,
} from '../commands/voidHold.js';
import {
  CurrencyMismatchError,
  InvalidCursorError,
  InvalidEntryError,
  UnknownAccountError,
  UnknownCurrencyError,
  type LedgerError,
} from '../errors.js';
import { Decimal } from '../money.js';
import { checkLimit } from '../input.js';
import { available, held, posted } from '../state.js';
import {
  normalSide,
  type AccountInfo,
  type AccountType,
  type Balance,
  type Entry,
  type Hold,
  type HoldStatus,
} from '../types.js';
import { Batcher, type BatchInfo } from './batcher.js';
import { executeBatch, settleUnknownOutcome } from './executeBatch.js';
import { lostBatchOf } from './lostWrites.js';
import { KnownState } from './knownState.js';
import { isUuid } from '../ids.js';
import type { LedgerTables } from './tables.js';

export interface PostgresLedgerOptions {
  pool: pg.Pool;
  /** Currency code to scale (fractional digits). Written to the database by `init`. */
  currencies: ReadonlyMap<string, number> | ReadonlyArray<{ code: string; scale: number }>;
  chart?: ReadonlyArray<AccountTemplate>;
  /** Most operations per transaction (1 turns batching off). Default 500. */
  batchMaxSize?: number;
  /** Transactions in flight at once. Default 1: every write touches the revenue account, so batches would only queue on its row; one lane makes them larger. */
  batchConcurrency?: number;
  /** Called after every batch (for metrics). */
  onBatch?: (info: BatchInfo) => void;
  /**
   * How long a write may wait for the database's answer on its connection before that
   * connection is closed (0: for ever). Default 15 s. A write sent and not answered in time
   * fails as a lost write (see isLostWrite); one that stalled before it was sent fails as the
   * database being unavailable, having written nothing. Also bounds settleLostWrite.
   */
  writeTimeoutMs?: number;
}

/** Ledger writes that join the caller's transaction (see PostgresLedger.within). */
export interface LedgerTransaction {
  /** One write for all; each result is the entry or the LedgerError that refused it. */
  postEntries(entries: PostEntryParameters[]): Promise<Array<PostEntryResult | LedgerError>>;
  reverseEntries(
    reversals: ReverseEntryParameters[],
  ): Promise<Array<ReverseEntryResult | LedgerError>>;
  /** As PostgresLedger's, read through the caller's transaction: its own writes included. */
  entryIdsByKey(keys: ReadonlyArray<string>): Promise<Map<string, string>>;
  getEntry(id: string): Promise<Entry | null>;
  getReversalOf(entryId: string): Promise<Entry | null>;
}

export interface AccountEntryLine {
  entryId: string;
  kind: string;
  description: string;
  metadata: Record<string, unknown>;
  reversesEntryId: string | null;
  effectiveAt: Date;
  createdAt: Date;
  /** Signed on the account's normal side: positive grows the balance. */
  amount: Decimal;
  /** The account's posted balance (normal side) after this line. */
  runningBalance: Decimal;
  /** Position of the line in the account's history (1, 2, 3...). */
  sequence: string;
}

export interface AccountEntriesPage {
  lines: AccountEntryLine[];
  /** Pass back as `cursor` for the next (older) page; null on the last page. */
  nextCursor: string | null;
}

export interface TrialBalance {
  accounts: Array<{
    account: string;
    type: AccountType;
    currency: string;
    debit: Decimal;
    credit: Decimal;
    balance: Decimal;
  }>;
  totals: Array<{ currency: string; debit: Decimal; credit: Decimal; net: Decimal }>;
}

export interface BalanceMismatch {
  account: string;
  currency: string;
  field: 'debits_posted' | 'credits_posted' | 'debits_pending' | 'credits_pending' | 'version';
  cached: string;
  recomputed: string;
}

/**
 * The ledger on PostgreSQL. Writes go through a group-commit batcher; reads are plain
 * queries. Every method validates its input first and throws a typed LedgerError for bad
 * input, having written nothing.
 */
export class PostgresLedger {
  readonly db: Kysely<LedgerTables>;
  private readonly pool: pg.Pool;
  private readonly currencies: Map<string, number>;
  private readonly chart: ReadonlyArray<AccountTemplate>;
  private readonly batcher: Batcher;
  private readonly accountsByCode = new Map<string, AccountInfo>();
  private readonly accountsById = new Map<string, AccountInfo>();
  private readonly known = new KnownState();
  private readonly prepareContext: PrepareContext;
  private readonly writeTimeoutMs: number;

  constructor(options: PostgresLedgerOptions) {
    this.pool = options.pool;
    guardPoolClients(options.pool);
    this.db = new Kysely<LedgerTables>({ dialect: new PostgresDialect({ pool: options.pool }) });
    this.currencies = new Map(
      options.currencies instanceof Map
        ? options.currencies
        : (options.currencies as ReadonlyArray<{ code: string; scale: number }>).map((c) => [
            c.code,
            c.scale,
          ]),
    );
    this.chart = options.chart ?? DEFAULT_CHART;
    this.writeTimeoutMs = options.writeTimeoutMs ?? 15_000;
    this.batcher = new Batcher(options.pool, {
      known: this.known,
      writeTimeoutMs: this.writeTimeoutMs,
      maxSize: options.batchMaxSize ?? 500,
      concurrency: options.batchConcurrency ?? 1,
      ...(options.onBatch ? { onBatch: options.onBatch } : {}),
    });
    this.prepareContext = {
      resolveAccount: (code, opts) => this.resolveAccount(code, opts),
      scaleOf: (currency) => this.scaleOf(currency),
      knownAccount: (code) => this.accountsByCode.get(code),
      holdCurrency: async (holdId) => {
        const remembered = this.known.holdCurrency(holdId);
        if (remembered !== undefined) return remembered;
        if (!isUuid(holdId)) return null;
        const row = await this.db
          .selectFrom('ledger_holds')
          .select('currency')
          .where('id', '=', sql<string>`${holdId}::uuid`)
          .executeTakeFirst();
        return row?.currency ?? null;
      },
    };
  }

  /**
   * Writes the currency table (new codes, widened scales) and takes the books' scales. Call
   * once at start. A scale is never narrowed: amounts booked with more digits stay in the
   * books, and a narrower scale would refuse to move them exactly (a config that widened USDT
   * to 18 for BSC, then dropped the override, keeps 18).
   */
  async init(): Promise<void> {
    const codes = [...this.currencies.keys()];
    await sql`insert into ledger_currencies (code, scale)
      select * from unnest(${codes}::text[], ${codes.map((c) => this.currencies.get(c))}::int[])
      on conflict (code) do update set scale = greatest(ledger_currencies.scale, excluded.scale)
      where excluded.scale > ledger_currencies.scale`.execute(this.db);
    const known = await this.db.selectFrom('ledger_currencies').selectAll().execute();
    for (const row of known) this.currencies.set(row.code, row.scale);
  }

  scaleOf(currency: string): number {
    const scale = this.currencies.get(currency);
    if (scale === undefined) throw new UnknownCurrencyError(currency);
    return scale;
  }

  /**
   * Finds an account by code; creates it when the chart allows and `create` is set. With
   * `strictCurrency`, one the chart would create in another currency than `currency` is not
   * created (CurrencyMismatchError).
   */
  async resolveAccount(
    code: string,
    options: { currency?: string; create?: boolean; strictCurrency?: boolean } = {},
  ): Promise<AccountInfo> {
    if (typeof code !== 'string') throw new UnknownAccountError(String(code));
    const cached = this.accountsByCode.get(code);
    if (cached) return cached;
    let row = await this.db
      .selectFrom('ledger_accounts')
      .select(['id', 'code', 'type', 'currency', 'no_negative'])
      .where('code', '=', code)
      .executeTakeFirst();
    if (!row) {
      if (!options.create) throw new UnknownAccountError(code);
      const spec = accountSpecFromChart(this.chart, code, options.currency);
      if (options.strictCurrency && options.currency && spec.currency !== options.currency)
        throw new CurrencyMismatchError(code, spec.currency, options.currency);
      this.scaleOf(spec.currency);
      await this.db
        .insertInto('ledger_accounts')
        .values({ code, type: spec.type, currency: spec.currency, no_negative: spec.noNegative })
        .onConflict((oc) => oc.column('code').doNothing())
        .execute();
      row = await this.db
        .selectFrom('ledger_accounts')
        .select(['id', 'code', 'type', 'currency', 'no_negative'])
        .where('code', '=', code)
        .executeTakeFirstOrThrow();
    }
    const info: AccountInfo = {
      id: row.id,
      code: row.code,
      type: row.type as AccountType,
      currency: row.currency,
      noNegative: row.no_negative,
    };
    if (options.currency && options.currency !== info.currency && options.create === false) {
      throw new CurrencyMismatchError(code, info.currency, options.currency);
    }
    this.accountsByCode.set(code, info);
    this.accountsById.set(info.id, info);
    return info;
  }

  /** Records a balanced journal entry. See {@link preparePostEntry}. */
  async postEntry(params: PostEntryParameters): Promise<PostEntryResult> {
    // How much a repayment takes is decided on the receivable's balance, which only a
    // transaction that locks it keeps true until the write (two repayments planned at once
    // could both take what is owed).
    if (params.repayReceivable)
      throw new InvalidEntryError(
        'repayReceivable needs the receivable locked: post it with ledger.within(client) in a transaction',
        { param: 'repayReceivable' },
      );
    return this.submit(await preparePostEntry(this.prepareContext, params));
  }

  /** Reserves an amount on an account until posted, voided or expired. */
  async createHold(params: CreateHoldParameters): Promise<CreateHoldResult> {
    return this.submit(await prepareCreateHold(this.prepareContext, params));
  }

  /** Settles a hold for the actual amount and releases the rest. */
  async postHold(params: PostHoldParameters): Promise<PostHoldResult> {
    return this.submit(await preparePostHold(this.prepareContext, params));
  }

  /** Releases a hold without posting anything. */
  async voidHold(params: VoidHoldParameters): Promise<VoidHoldResult> {
    return this.submit(prepareVoidHold(params));
  }

  /** Expires pending holds past their deadline. */
  async expireHolds(params: ExpireHoldsParameters = {}): Promise<ExpireHoldsResult> {
    return this.submit(prepareExpireHolds(params));
  }

  /** Records the mirror of an entry, linked to it. */
  async reverseEntry(params: ReverseEntryParameters): Promise<ReverseEntryResult> {
    return this.submit(await prepareReverseEntry(this.prepareContext, params));
  }

  /**
   * Ledger writes inside a transaction the caller has open on `client`: they lock what they
   * touch, and commit or roll back with the caller's own rows (a deposit credited together
   * with its deposit row and the watcher's cursor). Each call is one write; a refused
   * command throws its LedgerError and writes nothing, leaving the transaction usable.
   */
  within(client: pg.PoolClient): LedgerTransaction {
    // Kysely takes a connection from its pool for each query and gives it back: hand it this
    // transaction's connection every time, and never let it go.
    const connection = { query: client.query.bind(client), release: () => {} };
    const reads = new Kysely<LedgerTables>({
      dialect: new PostgresDialect({
        pool: { connect: async () => connection, end: async () => {} } as unknown as pg.Pool,
      }),
    });
    const run = async <Result>(
      commands: Array<PreparedCommand<Result>>,
    ): Promise<Array<Result | LedgerError>> => {
      if (commands.length === 0) return [];
      const outcomes = await executeBatch(
        client,
        commands as Array<PreparedCommand<unknown>>,
        'caller-transaction',
      );
      return outcomes.map((o) => (o.ok ? (o.value as Result) : (o.error as LedgerError)));
    };
    return {
      postEntries: async (entries) =>
        run(await Promise.all(entries.map((p) => preparePostEntry(this.prepareContext, p)))),
      reverseEntries: async (reversals) =>
        run(await Promise.all(reversals.map((p) => prepareReverseEntry(this.prepareContext, p)))),
      entryIdsByKey: (keys) => readEntryIdsByKey(reads, keys),
      getEntry: (id) => readEntry(reads, id),
      getReversalOf: (entryId) => readReversalOf(reads, entryId),
    };
  }

  /**
   * Deletes the fence rows of batches older than `olderThanSeconds` (default an hour; a fence
   * is read at most seconds after its batch, when that batch's answer was lost). Batch ids are
   * UUIDv7, ordered by their time, so this is a range of the primary key; a row also has to be
   * that old by the database's clock (a process whose clock runs behind writes ids that look
   * old). Returns how many.
   */
  async pruneBatchFences(olderThanSeconds = 3600): Promise<number> {
    const { rowCount } = await this.pool.query(
      `delete from ledger_batch_fences
        where batch_id < (lpad(to_hex((extract(epoch from now()) * 1000)::bigint - $1::bigint * 1000), 12, '0')
                          || '00000000000000000000')::uuid
          -- The id's time is the writing process's clock: one running behind would make a
          -- fence written just now look old. Its row's own time is the database's.
          and created_at < now() - $1::bigint * interval '1 second'`,
      [olderThanSeconds],
    );
    return rowCount ?? 0;
  }

  /**
   * Whether `error`, thrown by a write of this ledger, says that the write's answer was lost
   * and the ledger could not find out in time whether it committed (the database stayed out of
   * reach, or the write's connection gave no answer within writeTimeoutMs): see
   * settleLostWrite. Any other error of a write means nothing of it was written.
   */
  isLostWrite(error: unknown): boolean {
    return lostBatchOf(error) !== null;
  }

  /**
   * For a write that failed with a lost answer (isLostWrite): finds out whether it committed,
   * and makes sure that it never commits later if it has not (its batch's fence row, see
   * ledger_batch_fences; a batch still running on a connection the ledger lost then fails).
   * 'committed': what the write did is in the books (a hold it created, with the id the caller
   * gave it, exists); 'fenced': nothing of it is, nor ever will be. Null for any other error:
   * nothing was written. One try: throws while the database cannot be reached, or gives no
   * answer within writeTimeoutMs (call it again; a repeat answers the same). Fence rows are
   * pruned after an hour: call it before.
   */
  async settleLostWrite(error: unknown): Promise<'committed' | 'fenced' | null> {
    const batchId = lostBatchOf(error);
    if (batchId === null) return null;
    return settleUnknownOutcome(this.pool, batchId, 0, this.writeTimeoutMs);
  }

  /** Waits for queued writes, then stops taking new ones' connections. */
  async close(): Promise<void> {
    await this.batcher.drain();
  }

  /** The balance of one account; UnknownAccountError if it does not exist. */
  async getBalance(code: string): Promise<Balance> {
    const row = await this.db
      .selectFrom('ledger_accounts')
      .selectAll()
      .where('code', '=', code)
      .executeTakeFirst();
    if (!row) throw new UnknownAccountError(code);
    return balanceFromRow(row);
  }

  /** Balances of every account whose code starts with `prefix`. */
  async listBalances(prefix = ''): Promise<Balance[]> {
    const rows = await this.db
      .selectFrom('ledger_accounts')
      .selectAll()
      .where('code', 'like', `${escapeLike(prefix)}%`)
      .orderBy('code')
      .execute();
    return rows.map(balanceFromRow);
  }

  /**
   * The lines of an account, newest first, with the running balance after each.
   * `cursor` is the `nextCursor` of the previous page.
   */
  async listAccountEntries(
    code: string,
    options: { limit?: number; cursor?: string | null } = {},
  ): Promise<AccountEntriesPage> {
    const account = await this.resolveAccount(code);
    const limit = checkLimit(options.limit, 50, 500);
    const before = options.cursor ?? null;
    if (before !== null && !/^[1-9]\d{0,17}$/.test(before)) throw new InvalidCursorError();
    let query = this.db
      .selectFrom('ledger_postings as p')
      .innerJoin('ledger_entries as e', 'e.id', 'p.entry_id')
      .select([
        'p.entry_id',
        'p.amount',
        'p.balance_after',
        'p.account_version',
        'e.kind',
        'e.description',
        'e.metadata',
        'e.reverses_entry_id',
        'e.effective_at',
        'e.created_at',
      ])
      .where('p.account_id', '=', account.id)
      .orderBy('p.account_version', 'desc')
      .limit(limit + 1);
    if (before) query = query.where('p.account_version', '<', before);
    const rows = await query.execute();
    const sign = normalSide(account.type) === 'credit' ? -1 : 1;
    const lines = rows.slice(0, limit).map((row) => ({
      entryId: row.entry_id,
      kind: row.kind,
      description: row.description,
      metadata: row.metadata,
      reversesEntryId: row.reverses_entry_id,
      effectiveAt: row.effective_at,
      createdAt: row.created_at,
      amount: new Decimal(row.amount).mul(sign),
      runningBalance: new Decimal(row.balance_after).mul(sign),
      sequence: row.account_version,
    }));
    const nextCursor = rows.length > limit ? lines[lines.length - 1]!.sequence : null;
    return { lines, nextCursor };
  }

  /** Debits and credits per account and the totals per currency (each net is zero). */
  async trialBalance(): Promise<TrialBalance> {
    const rows = await this.db
      .selectFrom('ledger_accounts')
      .select(['code', 'type', 'currency', 'debits_posted', 'credits_posted'])
      .orderBy('currency')
      .orderBy('code')
      .execute();
    const accounts = rows.map((row) => {
      const debit = new Decimal(row.debits_posted);
      const credit = new Decimal(row.credits_posted);
      return {
        account: row.code,
        type: row.type as AccountType,
        currency: row.currency,
        debit,
        credit,
        balance: debit.sub(credit),
      };
    });
    const totals = new Map<
      string,
      { currency: string; debit: Decimal; credit: Decimal; net: Decimal }
    >();
    for (const account of accounts) {
      const total = totals.get(account.currency) ?? {
        currency: account.currency,
        debit: new Decimal(0),
        credit: new Decimal(0),
        net: new Decimal(0),
      };
      total.debit = total.debit.add(account.debit);
      total.credit = total.credit.add(account.credit);
      total.net = total.debit.sub(total.credit);
      totals.set(account.currency, total);
    }
    return { accounts, totals: [...totals.values()] };
  }

  /**
   * Recomputes every account's cached totals from its postings and pending holds and
   * returns each difference (law 3). An empty list means the cache is exact. It reads the whole
   * book: `options.pool` runs it on connections other than the ledger's (one whose queries have
   * no time bound, for a book that takes minutes).
   */
  async checkBalances(options: { pool?: pg.Pool } = {}): Promise<BalanceMismatch[]> {
    const query = sql<{
      code: string;
      currency: string;
      debits_posted: string;
      credits_posted: string;
      debits_pending: string;
      credits_pending: string;
      version: string;
      sum_debits: string;
      sum_credits: string;
      pending_debits: string;
      pending_credits: string;
      postings: string;
    }>`
      with p as (
        select account_id,
               coalesce(sum(amount) filter (where amount > 0), 0) as sum_debits,
               coalesce(-sum(amount) filter (where amount < 0), 0) as sum_credits,
               count(*) as postings
          from ledger_postings group by account_id
      ), hd as (
        select debit_account_id as account_id, sum(amount) as pending
          from ledger_holds where status = 'pending' group by debit_account_id
      ), hc as (
        select credit_account_id as account_id, sum(amount) as pending
          from ledger_holds where status = 'pending' group by credit_account_id
      )
      select a.code, a.currency, a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending, a.version,
             coalesce(p.sum_debits, 0) as sum_debits, coalesce(p.sum_credits, 0) as sum_credits,
             coalesce(hd.pending, 0) as pending_debits, coalesce(hc.pending, 0) as pending_credits,
             coalesce(p.postings, 0) as postings
        from ledger_accounts a
        left join p on p.account_id = a.id
        left join hd on hd.account_id = a.id
        left join hc on hc.account_id = a.id
       where a.debits_posted <> coalesce(p.sum_debits, 0) or a.credits_posted <> coalesce(p.sum_credits, 0)
          or a.debits_pending <> coalesce(hd.pending, 0) or a.credits_pending <> coalesce(hc.pending, 0)
          or a.version <> coalesce(p.postings, 0)
       order by a.code`;
    const { rows } = options.pool
      ? await options.pool.query<QueryRow<typeof query>>(query.compile(this.db).sql)
      : await query.execute(this.db);
    const mismatches: BalanceMismatch[] = [];
    for (const row of rows) {
      const pairs: Array<[BalanceMismatch['field'], string, string]> = [
        ['debits_posted', row.debits_posted, row.sum_debits],
        ['credits_posted', row.credits_posted, row.sum_credits],
        ['debits_pending', row.debits_pending, row.pending_debits],
        ['credits_pending', row.credits_pending, row.pending_credits],
        ['version', row.version, row.postings],
      ];
      for (const [field, cached, recomputed] of pairs) {
        if (!new Decimal(cached).eq(recomputed)) {
          mismatches.push({
            account: row.code,
            currency: row.currency,
            field,
            cached,
            recomputed: new Decimal(recomputed).toString(),
          });
        }
      }
    }
    return mismatches;
  }

  async getHold(id: string): Promise<Hold | null> {
    const row = await this.db
      .selectFrom('ledger_holds as h')
      .innerJoin('ledger_accounts as d', 'd.id', 'h.debit_account_id')
      .innerJoin('ledger_accounts as c', 'c.id', 'h.credit_account_id')
      .selectAll('h')
      .select(['d.code as debit_code', 'c.code as credit_code'])
      .where(
        'h.id',
        '=',
        sql<string>`${isUuid(id) ? id : '00000000-0000-0000-0000-000000000000'}::uuid`,
      )
      .executeTakeFirst();
    if (!row) return null;
    return {
      id: row.id,
      debitAccount: row.debit_code,
      creditAccount: row.credit_code,
      currency: row.currency,
      amount: new Decimal(row.amount),
      status: row.status as HoldStatus,
      expiresAt: row.expires_at,
      postedAmount: row.posted_amount === null ? null : new Decimal(row.posted_amount),
      entryId: row.entry_id,
      metadata: row.metadata,
      createdAt: row.created_at,
      resolvedAt: row.resolved_at,
    };
  }

  async getEntry(id: string): Promise<Entry | null> {
    return readEntry(this.db, id);
  }

  /**
   * The entries written under idempotency keys, by key; a key never used, or whose command
   * wrote no entry, is absent.
   */
  async entryIdsByKey(keys: ReadonlyArray<string>): Promise<Map<string, string>> {
    return readEntryIdsByKey(this.db, keys);
  }

  /** The entry that reversed `entryId` (an entry is reversed at most once), or null. */
  async getReversalOf(entryId: string): Promise<Entry | null> {
    return readReversalOf(this.db, entryId);
  }

  private submit<Result>(command: PreparedCommand<Result>): Promise<Result> {
    return this.batcher.submit(command);
  }
}

/** An entry with its postings, or null (PostgresLedger.getEntry, on any connection). */
async function readEntry(db: Kysely<LedgerTables>, id: string): Promise<Entry | null> {
  if (!isUuid(id)) return null;
  const entry = await db
    .selectFrom('ledger_entries')
    .selectAll()
    .where('id', '=', id)
    .executeTakeFirst();
  if (!entry) return null;
  const postings = await db
    .selectFrom('ledger_postings as p')
    .innerJoin('ledger_accounts as a', 'a.id', 'p.account_id')
    .select(['a.code', 'p.currency', 'p.amount'])
    .where('p.entry_id', '=', id)
    .orderBy('p.line')
    .execute();
  return {
    id: entry.id,
    kind: entry.kind,
    description: entry.description,
    metadata: entry.metadata,
    reversesEntryId: entry.reverses_entry_id,
    holdId: entry.hold_id,
    effectiveAt: entry.effective_at,
    createdAt: entry.created_at,
    postings: postings.map((p) => ({
      account: p.code,
      currency: p.currency,
      amount: new Decimal(p.amount),
    })),
  };
}

/** PostgresLedger.entryIdsByKey, on any connection. */
async function readEntryIdsByKey(
  db: Kysely<LedgerTables>,
  keys: ReadonlyArray<string>,
): Promise<Map<string, string>> {
  if (keys.length === 0) return new Map();
  const rows = await db
    .selectFrom('ledger_idempotency')
    .select(['key', sql<string | null>`result->>'entryId'`.as('entry_id')])
    .where('key', 'in', [...keys])
    .execute();
  return new Map(rows.flatMap((r) => (r.entry_id ? [[r.key, r.entry_id] as const] : [])));
}

/** PostgresLedger.getReversalOf, on any connection. */
async function readReversalOf(db: Kysely<LedgerTables>, entryId: string): Promise<Entry | null> {
  if (!isUuid(entryId)) return null;
  const row = await db
    .selectFrom('ledger_entries')
    .select('id')
    .where('reverses_entry_id', '=', entryId)
    .executeTakeFirst();
  return row ? readEntry(db, row.id) : null;
}

/** The balance an account row of `ledger_accounts` holds (its cached totals). */
export function balanceFromRow(row: {
  code: string;
  type: string;
  currency: string;
  no_negative: boolean;
  debits_posted: string;
  credits_posted: string;
  debits_pending: string;
  credits_pending: string;
}): Balance {
  const state = {
    id: '',
    code: row.code,
    type: row.type as AccountType,
    currency: row.currency,
    noNegative: row.no_negative,
    debitsPosted: new Decimal(row.debits_posted),
    creditsPosted: new Decimal(row.credits_posted),
    debitsPending: new Decimal(row.debits_pending),
    creditsPending: new Decimal(row.credits_pending),
  };
  return {
    account: row.code,
    currency: row.currency,
    posted: posted(state),
    held: held(state),
    available: available(state),
    debitsPosted: state.debitsPosted,
    creditsPosted: state.creditsPosted,
    debitsPending: state.debitsPending,
    creditsPending: state.creditsPending,
  };
}

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

/** The row type of a raw query. */
type QueryRow<Q> = Q extends RawBuilder<infer Row> ? Row & pg.QueryResultRow : never;
