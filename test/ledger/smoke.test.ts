import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import type { PostgresLedger } from '../../ledger/index.js';

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

test('a promotion credit, a hold and its posting move the balances exactly', async () => {
  await ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: 'expenses:promotions', amount: '50' },
      { account: 'liabilities:customers:1', amount: '-50' },
    ],
  });
  const { holdId } = await ledger.createHold({
    debitAccount: 'liabilities:customers:1',
    creditAccount: 'revenue:usage',
    amount: '2.5',
  });
  let balance = await ledger.getBalance('liabilities:customers:1');
  expect(balance.available.toString()).toBe('47.5');
  const posted = await ledger.postHold({ holdId, amount: '1.25' });
  expect(posted.entryId).toBeTruthy();
  balance = await ledger.getBalance('liabilities:customers:1');
  expect([
    balance.posted.toString(),
    balance.held.toString(),
    balance.available.toString(),
  ]).toEqual(['48.75', '0', '48.75']);
  expect(await ledger.checkBalances()).toEqual([]);
});
