import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal, type PostgresLedger, type TrialBalance } from '../../ledger/index.js';
import { STATEMENT_CSV_COLUMNS, streamStatementCsv } from '../../src/exports/statementCsv.js';
import {
  TRIAL_BALANCE_CSV_COLUMNS,
  streamTrialBalanceCsv,
} from '../../src/exports/trialBalanceCsv.js';
import { buildBook, type Book } from '../support/book.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import { collect, csvObjects } from './tools.js';

let database: TestDatabase;
let ledger: PostgresLedger;
let book: Book;
let middle: string;
let trialAtMiddle: TrialBalance;

beforeAll(async () => {
  database = await createTestDatabase();
  ledger = await openLedger(database.pool);
  book = await buildBook(database.pool, ledger);
  trialAtMiddle = await ledger.trialBalance();
  const { rows } = await database.pool.query<{ now: string }>(
    `select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as now`,
  );
  middle = rows[0]!.now;
  await ledger.postEntry({
    kind: 'adjustment',
    description: 'late promotion',
    postings: [
      { account: 'expenses:promotions', amount: '2.25' },
      { account: `liabilities:customers:${book.alice}`, amount: '-2.25' },
    ],
  });
});
afterAll(async () => {
  await ledger.close();
  await database.drop();
});

function expectTrialBalanceCsv(text: string, trial: TrialBalance): void {
  const rows = csvObjects(text);
  expect(text.split('\n')[0]).toBe(TRIAL_BALANCE_CSV_COLUMNS.join(','));
  const accounts = rows.filter((r) => r['type'] !== 'total');
  expect(
    accounts.map((r) => [r['account'], r['currency'], r['debit'], r['credit'], r['balance']]),
  ).toEqual(
    trial.accounts.map((a) => [
      a.account,
      a.currency,
      a.debit.toString(),
      a.credit.toString(),
      a.balance.toString(),
    ]),
  );
  const totals = rows.filter((r) => r['type'] === 'total');
  expect(totals.map((r) => [r['currency'], r['debit'], r['credit'], r['balance']])).toEqual(
    trial.totals.map((t) => [t.currency, t.debit.toString(), t.credit.toString(), '0']),
  );
}

test('the trial balance CSV is the ledger trial balance, every currency netting to zero', async () => {
  expectTrialBalanceCsv(
    await collect(streamTrialBalanceCsv(database.pool)),
    await ledger.trialBalance(),
  );
});

test('the trial balance as of an instant sums the postings before it', async () => {
  const text = await collect(streamTrialBalanceCsv(database.pool, { to: middle, pageRows: 2 }));
  expectTrialBalanceCsv(text, trialAtMiddle);
  expect(await collect(streamTrialBalanceCsv(database.pool, { to: middle }))).toBe(text);
});

test("a user's statement: every line of the balance with the running balance after it", async () => {
  const text = await collect(streamStatementCsv(database.pool, { userId: book.alice }));
  expect(text.split('\n')[0]).toBe(STATEMENT_CSV_COLUMNS.join(','));
  const rows = csvObjects(text);
  expect(rows.map((r) => [r['kind'], r['amount']])).toEqual([
    ['deposit', '100'],
    ['usage', `-${book.usageCosts[0]}`],
    ['usage', `-${book.usageCosts[2]}`],
    ['adjustment', '5'],
    ['adjustment', '2.25'],
  ]);
  let running = new Decimal(0);
  for (const row of rows) {
    running = running.add(row['amount']!);
    expect(row['balance']).toBe(running.toString());
    expect(row['currency']).toBe('USD');
  }
  expect(rows.at(-1)!['balance']).toBe(
    (await ledger.getBalance(`liabilities:customers:${book.alice}`)).posted.toString(),
  );
  expect(rows[0]).toMatchObject({
    entry_id: book.entries.aliceUsdtDeposit,
    description: 'USDT deposit on tron',
    rate: '1',
    rate_source: 'fixed',
    chain_ref: `tron:${'a1'.repeat(32)}:0`,
  });
});

test('a statement for a range starts from the true balance, and is deterministic', async () => {
  const late = csvObjects(
    await collect(streamStatementCsv(database.pool, { userId: book.alice, from: middle })),
  );
  expect(late).toHaveLength(1);
  expect(late[0]).toMatchObject({
    kind: 'adjustment',
    amount: '2.25',
    description: 'late promotion',
  });
  expect(late[0]!['balance']).toBe(
    new Decimal('105').sub(book.usageCosts[0]!).sub(book.usageCosts[2]!).add('2.25').toString(),
  );
  const small = await collect(
    streamStatementCsv(database.pool, { userId: book.bob, to: middle, pageRows: 1 }),
  );
  expect(await collect(streamStatementCsv(database.pool, { userId: book.bob, to: middle }))).toBe(
    small,
  );
  expect(await collect(streamStatementCsv(database.pool, { userId: '999999' }))).toBe(
    `${STATEMENT_CSV_COLUMNS.join(',')}\n`,
  );
});
