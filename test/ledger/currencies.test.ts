import { afterAll, beforeAll, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger, TEST_CURRENCIES } from '../support/ledger.js';

let database: TestDatabase;
const opened: PostgresLedger[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  for (const ledger of opened) await ledger.close();
  await database.drop();
});

const withUsdtScale = async (scale: number) => {
  const ledger = await openLedger(database.pool, {
    currencies: [...TEST_CURRENCIES.filter((c) => c.code !== 'USDT'), { code: 'USDT', scale }],
  });
  opened.push(ledger);
  return ledger;
};

const usdtScaleInBooks = async () =>
  (
    await database.pool.query<{ scale: number }>(
      `select scale from ledger_currencies where code = 'USDT'`,
    )
  ).rows[0]!.scale;

test("a currency's scale is widened by the config, never narrowed: amounts booked with every digit still move exactly", async () => {
  // A config widens USDT to 18 digits (BSC's USDT has 18 decimals); a deposit is booked.
  const widened = await withUsdtScale(18);
  await widened.postEntry({
    kind: 'deposit',
    postings: [
      {
        account: 'assets:custody:bsc:USDT:0xb0b',
        amount: '12.000000000000000001',
        currency: 'USDT',
      },
      { account: 'equity:trading:USDT', amount: '-12.000000000000000001' },
    ],
  });
  expect(await usdtScaleInBooks()).toBe(18);

  // The next start reads a config without the override (the built-in 6): the books keep 18,
  // and the sweep of that exact amount is not refused for its digits.
  const restarted = await withUsdtScale(6);
  expect(restarted.scaleOf('USDT')).toBe(18);
  expect(await usdtScaleInBooks()).toBe(18);
  await restarted.postEntry({
    kind: 'sweep',
    postings: [
      {
        account: 'assets:custody:bsc:USDT:treasury',
        amount: '12.000000000000000001',
        currency: 'USDT',
      },
      { account: 'assets:custody:bsc:USDT:0xb0b', amount: '-12.000000000000000001' },
    ],
  });
  expect((await restarted.getBalance('assets:custody:bsc:USDT:0xb0b')).posted.toString()).toBe('0');

  // Widening further still works.
  const wider = await withUsdtScale(24);
  expect(wider.scaleOf('USDT')).toBe(24);
  expect(await usdtScaleInBooks()).toBe(24);
});
