import { afterAll, beforeAll, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, openLedger } from '../support/ledger.js';

/**
 * A ledger plans from the totals it remembers from its own earlier batches. Another writer
 * (the watcher crediting a deposit inside its own transaction, another http process) can
 * have topped an account up since: a shortfall (part of a charge booked to the customer's
 * receivable because their balance cannot cover it) must be decided on the database's
 * totals, never on remembered ones, or the customer is charged too little and owes a debt
 * they do not have.
 */
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

const customer = (user: string) => `liabilities:customers:${user}`;
const receivable = (user: string) => `assets:receivables:customers:${user}`;

/** One call as the gateway makes it: afterwards this ledger remembers every account involved. */
async function call(user: string, held: string, cost: string) {
  const { holdId } = await ledger.createHold({
    debitAccount: customer(user),
    creditAccount: 'revenue:usage',
    amount: held,
  });
  return ledger.postHold({
    holdId,
    amount: cost,
    allowOverHold: true,
    shortfallAccount: receivable(user),
  });
}

test('a call costing more than its hold is charged in full when a deposit credited meanwhile covers it', async () => {
  await fund(ledger, 'st1', '1.5');
  await call('st1', '0.5', '0.5');
  const { holdId } = await ledger.createHold({
    debitAccount: customer('st1'),
    creditAccount: 'revenue:usage',
    amount: '1',
  });
  // A deposit credited the way the watcher does it: inside its own transaction.
  const client = await database.pool.connect();
  try {
    await client.query('begin');
    const [result] = await ledger.within(client).postEntries([
      {
        kind: 'deposit',
        postings: [
          { account: 'expenses:promotions', amount: '100' },
          { account: customer('st1'), amount: '-100' },
        ],
      },
    ]);
    expect(result).not.toBeInstanceOf(Error);
    await client.query('commit');
  } finally {
    client.release();
  }

  const posted = await ledger.postHold({
    holdId,
    amount: '5',
    allowOverHold: true,
    shortfallAccount: receivable('st1'),
  });
  expect(posted.shortfall.toString()).toBe('0');
  expect((await ledger.getBalance(customer('st1'))).posted.toString()).toBe('96');
  expect((await ledger.getBalance(receivable('st1'))).posted.toString()).toBe('0');
});

test('a call costing more than its hold is charged in full when another process topped the account up', async () => {
  const other = await openLedger(database.newPool(2));
  await fund(ledger, 'st2', '1.5');
  await call('st2', '0.5', '0.5');
  const { holdId } = await ledger.createHold({
    debitAccount: customer('st2'),
    creditAccount: 'revenue:usage',
    amount: '1',
  });
  await fund(other, 'st2', '100');
  await other.close();
  const posted = await ledger.postHold({
    holdId,
    amount: '5',
    allowOverHold: true,
    shortfallAccount: receivable('st2'),
  });
  expect(posted.shortfall.toString()).toBe('0');
  expect((await ledger.getBalance(customer('st2'))).posted.toString()).toBe('96');
});

test('a shortfall that is real is still booked, for exactly what the balance cannot cover', async () => {
  await fund(ledger, 'st3', '1.5');
  await call('st3', '0.5', '0.5');
  const posted = await call('st3', '0.5', '3');
  expect(posted.shortfall.toString()).toBe('2');
  expect((await ledger.getBalance(customer('st3'))).posted.toString()).toBe('0');
  expect((await ledger.getBalance(receivable('st3'))).posted.toString()).toBe('2');
});

test('a reversal books a shortfall only for what the balance the database holds cannot cover', async () => {
  const other = await openLedger(database.newPool(2));
  const { entryId } = await ledger.postEntry({
    kind: 'deposit',
    postings: [
      { account: 'expenses:promotions', amount: '10' },
      { account: customer('st4'), amount: '-10' },
    ],
  });
  await call('st4', '8', '8'); // 2 left, as this ledger remembers it
  await fund(other, 'st4', '50');
  await other.close();
  const reversal = await ledger.reverseEntry({
    entryId,
    shortfallAccounts: { [customer('st4')]: receivable('st4') },
  });
  expect(reversal.shortfalls).toEqual({});
  expect((await ledger.getBalance(customer('st4'))).posted.toString()).toBe('42');
});
