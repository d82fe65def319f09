import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';
import { runLedgerIntegrity } from '../../src/integrity/runLedgerIntegrity.js';
import { buildBook, sealEverything, type Book } from '../support/book.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';

let database: TestDatabase;
let ledger: PostgresLedger;
let book: Book;
let alice: string;

beforeAll(async () => {
  database = await createTestDatabase();
  ledger = await openLedger(database.pool);
  book = await buildBook(database.pool, ledger);
  alice = `liabilities:customers:${book.alice}`;
  await sealEverything(database.pool);
});
afterAll(async () => {
  await ledger.close();
  await database.drop();
});

const run = (options: Parameters<typeof runLedgerIntegrity>[1] = {}) =>
  runLedgerIntegrity({ pool: database.pool, ledger }, options);

const charged = () => book.usageCosts.reduce((sum, c) => sum.add(c), new Decimal(0)).toString();

async function today(): Promise<string> {
  const { rows } = await database.pool.query<{ day: string }>(
    `select to_char(now() at time zone 'UTC', 'YYYY-MM-DD') as day`,
  );
  return rows[0]!.day;
}

test('a clean book has no finding, and the run says what it checked', async () => {
  const { findings, stats } = await run();
  expect(findings).toEqual([]);
  const { rows } = await database.pool.query<{ entries: string; postings: string }>(
    `select (select count(*) from ledger_entries)::text as entries, (select count(*) from ledger_postings)::text as postings`,
  );
  expect(stats).toMatchObject({
    entries: Number(rows[0]!.entries),
    postings: Number(rows[0]!.postings),
    holdsOverdue: 0,
    holdsExpired: 0,
    usageDays: 1,
    usageUsd: charged(),
    revenueUsd: charged(),
    seals: { entriesVerified: Number(rows[0]!.entries), entriesUnsealed: 0 },
  });
  expect(stats.totals.map((t) => [t.currency, t.net])).toEqual([
    ['ETH', '0'],
    ['USD', '0'],
    ['USDT', '0'],
  ]);
  expect(stats.totals.find((t) => t.currency === 'USDT')).toMatchObject({
    debit: '601',
    credit: '601',
  });
  expect(Object.keys(stats.checks).sort()).toEqual([
    'cached-balances',
    'overdue-holds',
    'running-balances',
    'seals',
    'trial-balance',
    'usage-revenue',
  ]);
});

test('a cached balance changed behind the ledger: the account, the field and the numbers', async () => {
  const before = await ledger.getBalance(alice);
  await database.pool.query(
    `update ledger_accounts set credits_posted = credits_posted + 7.5 where code = $1`,
    [alice],
  );
  try {
    const { findings } = await run();
    expect(findings).toEqual([
      {
        severity: 'error',
        kind: 'trial_balance_nonzero',
        currency: 'USD',
        expected: '0',
        actual: '-7.5',
        difference: '-7.5',
        details: expect.objectContaining({ source: "sum of the accounts' cached totals" }),
      },
      {
        severity: 'error',
        kind: 'balance_mismatch',
        account: alice,
        currency: 'USD',
        expected: before.creditsPosted.toString(),
        actual: before.creditsPosted.add('7.5').toString(),
        difference: '7.5',
        details: expect.objectContaining({ field: 'credits_posted' }),
      },
    ]);
  } finally {
    await database.pool.query(
      `update ledger_accounts set credits_posted = credits_posted - 7.5 where code = $1`,
      [alice],
    );
  }
  expect((await run()).findings).toEqual([]);
});

test('a hold left past its deadline is counted, then expired, and the balance released', async () => {
  const { holdId } = await ledger.createHold({
    debitAccount: alice,
    creditAccount: 'revenue:usage',
    amount: '0.75',
    expiresAt: new Date(Date.now() - 60_000),
    metadata: { requestId: 'lost-call' },
  });
  expect((await ledger.getBalance(alice)).held.toString()).toBe('0.75');
  const { findings, stats } = await run();
  expect(findings).toEqual([
    {
      severity: 'warning',
      kind: 'hold_overdue',
      currency: 'USD',
      expected: '0',
      actual: '0.75',
      difference: '0.75',
      details: expect.objectContaining({
        holds: 1,
        expiredThisRun: 1,
        holdIds: [holdId],
        accounts: [alice],
      }),
    },
  ]);
  expect(stats).toMatchObject({ holdsOverdue: 1, holdsExpired: 1 });
  expect((await ledger.getHold(holdId))?.status).toBe('expired');
  expect((await ledger.getBalance(alice)).held.toString()).toBe('0');
  expect((await run()).findings).toEqual([]);
});

test('counting without expiring leaves the hold pending', async () => {
  const { holdId } = await ledger.createHold({
    debitAccount: alice,
    creditAccount: 'revenue:usage',
    amount: '0.25',
    expiresAt: new Date(Date.now() - 1000),
  });
  const { findings, stats } = await run({ expireHolds: false, checks: ['overdue-holds'] });
  expect(findings).toMatchObject([
    { kind: 'hold_overdue', actual: '0.25', details: { holds: 1, expiredThisRun: 0 } },
  ]);
  expect(stats.holdsExpired).toBe(0);
  expect((await ledger.getHold(holdId))?.status).toBe('pending');
  await run({ checks: ['overdue-holds'] });
  expect((await ledger.getHold(holdId))?.status).toBe('expired');
});

describe('usage against revenue', () => {
  test('a usage row with no revenue posting: the day and the row, to the last digit', async () => {
    const { rows } = await database.pool.query<{ id: string }>(
      `insert into usage_records (request_id, user_id, endpoint, model, cost_usd, started_at, finished_at,
         latency_ms, http_status, outcome)
       values ('req-unbooked', $1, 'chat.completions', 'gpt-4o-mini', 1.000000000000000007, now(), now(), 5, 200, 'ok')
       returning id::text`,
      [book.alice],
    );
    try {
      const { findings, stats } = await run();
      const usage = new Decimal(charged()).add('1.000000000000000007').toString();
      expect(findings).toEqual([
        {
          severity: 'error',
          kind: 'usage_revenue_mismatch',
          account: 'revenue:usage',
          currency: 'USD',
          expected: usage,
          actual: charged(),
          difference: '-1.000000000000000007',
          details: { day: await today(), usageCalls: 4, revenueEntries: 3 },
        },
        {
          severity: 'error',
          kind: 'usage_without_revenue',
          account: 'revenue:usage',
          currency: 'USD',
          expected: '1.000000000000000007',
          actual: '0',
          difference: '-1.000000000000000007',
          details: expect.objectContaining({
            usageRecordId: rows[0]!.id,
            requestId: 'req-unbooked',
            entryId: null,
          }),
        },
      ]);
      expect(stats).toMatchObject({ usageUsd: usage, revenueUsd: charged() });
    } finally {
      await database.pool.query(`delete from usage_records where request_id = 'req-unbooked'`);
    }
    expect((await run()).findings).toEqual([]);
  });

  test('revenue posted with no usage row is found too', async () => {
    const { entryId } = await ledger.postEntry({
      kind: 'usage',
      description: 'charged by hand',
      postings: [
        { account: alice, amount: '0.3' },
        { account: 'revenue:usage', amount: '-0.3' },
      ],
    });
    await sealEverything(database.pool);
    const { findings } = await run();
    expect(findings).toEqual([
      expect.objectContaining({
        kind: 'usage_revenue_mismatch',
        expected: charged(),
        actual: new Decimal(charged()).add('0.3').toString(),
        difference: '0.3',
      }),
      expect.objectContaining({
        kind: 'revenue_without_usage',
        expected: '0',
        actual: '0.3',
        details: expect.objectContaining({ entryId }),
      }),
    ]);
  });
});

test('a posting changed behind the ledger is seen by every check that should see it', async () => {
  const { rows } = await database.pool.query<{ amount: string }>(
    `select amount::text from ledger_postings where entry_id = $1 and line = 1`,
    [book.entries.promotion],
  );
  const posting = { ...rows[0]!, entryId: book.entries.promotion };
  const tamper = (amount: string) =>
    database.pool.query(`
      drop trigger ledger_postings_append_only on ledger_postings;
      update ledger_postings set amount = ${amount} where entry_id = '${posting.entryId}' and line = 1;
      create trigger ledger_postings_append_only before update or delete on ledger_postings
        for each statement execute function ledger_refuse_change();`);
  await tamper('50');
  try {
    const { findings } = await run({
      checks: ['trial-balance', 'cached-balances', 'running-balances', 'seals'],
    });
    const kinds = findings.map((f) => [f.kind, f.account ?? f.currency, f.difference]);
    expect(kinds).toEqual([
      ['trial_balance_nonzero', 'USD', '45'],
      ['entry_unbalanced', 'USD', '45'],
      ['balance_mismatch', 'expenses:promotions', '-45'],
      ['running_balance_mismatch', 'expenses:promotions', '-45'],
      ['seal_mismatch', undefined, null],
    ]);
  } finally {
    await tamper(posting.amount);
  }
  expect(
    (await run({ checks: ['trial-balance', 'cached-balances', 'running-balances', 'seals'] }))
      .findings,
  ).toEqual([]);
});
