import { afterAll, beforeAll, expect, test } from 'vitest';
import { InvalidCursorError, InvalidLimitError, type PostgresLedger } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, openLedger } from '../support/ledger.js';

let database: TestDatabase;
let ledger: PostgresLedger;

beforeAll(async () => {
  database = await createTestDatabase();
  ledger = await openLedger(database.pool);
});
afterAll(async () => {
  await ledger.close();
  await database.drop();
});

test("an account's lines come newest first, page by page, each with the running balance after it", async () => {
  await fund(ledger, 'q1', '10');
  for (const cost of ['0.1', '0.25', '1']) {
    const { holdId } = await ledger.createHold({
      debitAccount: 'liabilities:customers:q1',
      creditAccount: 'revenue:usage',
      amount: '2',
    });
    await ledger.postHold({ holdId, amount: cost, kind: 'usage' });
  }
  await fund(ledger, 'q1', '5');

  const first = await ledger.listAccountEntries('liabilities:customers:q1', { limit: 2 });
  expect(
    first.lines.map((l) => [l.kind, l.amount.toString(), l.runningBalance.toString()]),
  ).toEqual([
    ['adjustment', '5', '13.65'],
    ['usage', '-1', '8.65'],
  ]);
  expect(first.nextCursor).not.toBeNull();
  const second = await ledger.listAccountEntries('liabilities:customers:q1', {
    limit: 2,
    cursor: first.nextCursor,
  });
  expect(second.lines.map((l) => [l.amount.toString(), l.runningBalance.toString()])).toEqual([
    ['-0.25', '9.65'],
    ['-0.1', '9.9'],
  ]);
  const last = await ledger.listAccountEntries('liabilities:customers:q1', {
    limit: 2,
    cursor: second.nextCursor,
  });
  expect(last.lines.map((l) => [l.amount.toString(), l.runningBalance.toString()])).toEqual([
    ['10', '10'],
  ]);
  expect(last.nextCursor).toBeNull();
  // A cursor this ledger did not give out is refused, not read as "from the start".
  for (const cursor of ['abc', '-1', '0', '1.5', '99999999999999999999'])
    await expect(
      ledger.listAccountEntries('liabilities:customers:q1', { cursor }),
    ).rejects.toBeInstanceOf(InvalidCursorError);
});

test('the trial balance nets to zero in every currency', async () => {
  await ledger.postEntry({
    kind: 'deposit',
    postings: [
      { account: 'assets:custody:ethereum:ETH:0xabc', amount: '0.5', currency: 'ETH' },
      { account: 'equity:trading:ETH', amount: '-0.5' },
      { account: 'equity:trading:USD', amount: '1500.25' },
      { account: 'liabilities:customers:q2', amount: '-1500.25' },
    ],
  });
  const trial = await ledger.trialBalance();
  for (const total of trial.totals) expect(total.net.toString()).toBe('0');
  const eth = trial.totals.find((t) => t.currency === 'ETH');
  expect([eth?.debit.toString(), eth?.credit.toString()]).toEqual(['0.5', '0.5']);
  const custody = trial.accounts.find((a) => a.account === 'assets:custody:ethereum:ETH:0xabc');
  expect(custody?.balance.toString()).toBe('0.5');
});

test('a limit that is not a whole number of at least 1 is refused with InvalidLimitError, not a database error nor a silent nothing', async () => {
  await fund(ledger, 'q-limit', '3');
  for (const limit of [
    Number.NaN,
    2.5,
    0,
    -1,
    Number.POSITIVE_INFINITY,
    '2' as unknown as number,
  ]) {
    const listed = ledger.listAccountEntries('liabilities:customers:q-limit', { limit });
    await expect(listed).rejects.toBeInstanceOf(InvalidLimitError);
    await expect(listed).rejects.toMatchObject({ code: 'invalid_limit', param: 'limit' });
  }
  // Above the page maximum is still the maximum, as before.
  expect(
    (await ledger.listAccountEntries('liabilities:customers:q-limit', { limit: 10_000 })).lines,
  ).toHaveLength(1);

  const { holdId } = await ledger.createHold({
    debitAccount: 'liabilities:customers:q-limit',
    creditAccount: 'revenue:usage',
    amount: '1',
    expiresAt: new Date(Date.now() - 1000),
  });
  for (const limit of [Number.NaN, 2.5, 0, -5]) {
    await expect(ledger.expireHolds({ limit })).rejects.toBeInstanceOf(InvalidLimitError);
  }
  expect((await ledger.getHold(holdId))?.status).toBe('pending');
  expect((await ledger.expireHolds({ limit: 10 })).expiredHoldIds).toEqual([holdId]);
});
