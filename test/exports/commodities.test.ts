import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { beancountAccount } from '../../src/exports/beancountAccounts.js';
import { streamJournal, type JournalFormat } from '../../src/exports/streamJournal.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger, TEST_CURRENCIES } from '../support/ledger.js';
import {
  beancountSums,
  collect,
  hledgerBalances,
  scratchDir,
  tool,
  show,
  trialBalances,
} from './tools.js';

// Currencies at the edges of what the config allows: a token without decimals (scale 0), and a
// currency whose scale was narrowed after amounts with more digits were booked (a config that
// widened USDT to 18 for BSC, then dropped the override, under a release that narrowed it).

let database: TestDatabase;
let ledger: PostgresLedger;
let dir: string;

beforeAll(async () => {
  database = await createTestDatabase();
  dir = scratchDir();
  const widened = await openLedger(database.pool, {
    currencies: [
      ...TEST_CURRENCIES.filter((c) => c.code !== 'USDT'),
      { code: 'USDT', scale: 18 },
      { code: 'GEM', scale: 0 },
    ],
  });
  await widened.postEntry({
    kind: 'deposit',
    description: 'GEM deposit (a token without decimals)',
    postings: [
      { account: 'assets:custody:ethereum:GEM:0xa11ce', amount: '7', currency: 'GEM' },
      { account: 'equity:trading:GEM', amount: '-7' },
    ],
  });
  await widened.postEntry({
    kind: 'deposit',
    description: 'USDT deposit on bsc (18 decimals)',
    postings: [
      {
        account: 'assets:custody:bsc:USDT:0xb0b',
        amount: '12.000000000000000001',
        currency: 'USDT',
      },
      { account: 'equity:trading:USDT', amount: '-12.000000000000000001' },
    ],
  });
  await widened.close();
  // Books whose USDT scale was narrowed back to 6 by an older release (the ledger now keeps
  // the wider scale itself), read by a config without the override.
  await database.pool.query(`update ledger_currencies set scale = 6 where code = 'USDT'`);
  ledger = await openLedger(database.pool, {
    currencies: [...TEST_CURRENCIES, { code: 'GEM', scale: 0 }],
  });
});
afterAll(async () => {
  await ledger.close();
  await database.drop();
});

async function exportFile(format: JournalFormat): Promise<string> {
  const file = join(dir, `journal.${format}`);
  writeFileSync(file, await collect(streamJournal(database.pool, { format })));
  return file;
}

test('hledger: a currency without decimals is declared as hledger reads it, and the check passes', async () => {
  const file = await exportFile('hledger');
  await tool('hledger', ['-f', file, 'check', '--strict']);
  const balances = show(await hledgerBalances(file));
  expect(balances).toMatchObject({
    'assets:custody:ethereum:GEM:0xa11ce|GEM': '7',
    'equity:trading:GEM|GEM': '-7',
  });
});

test("hledger: every amount keeps its digits when a currency's scale was narrowed later", async () => {
  const file = await exportFile('hledger');
  await tool('hledger', ['-f', file, 'check', '--strict']);
  expect(show(await hledgerBalances(file))).toEqual(await trialBalances(ledger));
});

test('beancount: the same book passes bean-check with sums to the last digit', async () => {
  const file = await exportFile('beancount');
  await tool('bean-check', [file]);
  const sums = await beancountSums(file);
  expect(sums.errors).toEqual([]);
  expect(show(sums.totals)).toEqual(await trialBalances(ledger, beancountAccount));
});
