import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { InsufficientFundsError, type PostgresLedger } from '../../ledger/index.js';
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

/** Separate ledgers, each with its own pool: the holds race in the database, not in one queue. */
/** Closes test ledgers and their pools, so each test gives its connections back at once. */
async function closeLedgers(ledgers: PostgresLedger[]): Promise<void> {
  await Promise.all(ledgers.map((l) => l.close()));
  await Promise.all(pools.splice(0).map((pool) => pool.end()));
}

const pools: pg.Pool[] = [];
const remember = (pool: pg.Pool) => (pools.push(pool), pool);

async function openLedgers(count: number, batchMaxSize: number): Promise<PostgresLedger[]> {
  return Promise.all(
    Array.from({ length: count }, () =>
      openLedger(remember(database.newPool(2)), { batchMaxSize, batchConcurrency: 2 }),
    ),
  );
}

/** Samples the account's available balance while the race runs; it must never dip below zero. */
function watchAvailable(account: string): { stop(): Promise<string[]> } {
  const seen: string[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const { rows } = await database.pool.query<{ available: string }>(
        `select credits_posted - debits_posted - debits_pending as available from ledger_accounts where code = $1`,
        [account],
      );
      if (rows[0]) seen.push(rows[0].available);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return seen;
    },
  };
}

describe.each([
  { mode: 'one transaction per operation', batchMaxSize: 1 },
  { mode: 'group commit', batchMaxSize: 500 },
])('no double spend ($mode)', ({ batchMaxSize }) => {
  test('200 parallel holds of 1.00 against 50.00 from 20 connections pools: exactly 50 succeed', async () => {
    const user = `race-${batchMaxSize}`;
    const account = `liabilities:customers:${user}`;
    await fund(ledger, user, '50.00');
    const ledgers = await openLedgers(20, batchMaxSize);
    const watcher = watchAvailable(account);
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, (_, i) =>
        ledgers[i % ledgers.length]!.createHold({
          debitAccount: account,
          creditAccount: 'revenue:usage',
          amount: '1.00',
        }),
      ),
    );
    const seen = await watcher.stop();
    const succeeded = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r) => r.status === 'rejected');
    expect(succeeded).toHaveLength(50);
    expect(refused).toHaveLength(150);
    for (const r of refused)
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(InsufficientFundsError);
    const balance = await ledger.getBalance(account);
    expect([balance.posted, balance.held, balance.available].map(String)).toEqual([
      '50',
      '50',
      '0',
    ]);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.filter((available) => available.startsWith('-'))).toEqual([]);
    expect(await ledger.checkBalances()).toEqual([]);
    await closeLedgers(ledgers);
  });
});

test('parallel transfers in opposite directions between the same accounts never surface a deadlock', async () => {
  await fund(ledger, 'ping', '1000');
  await fund(ledger, 'pong', '1000');
  const ledgers = await openLedgers(8, 1);
  const transfer = (l: PostgresLedger, from: string, to: string) =>
    l.postEntry({
      kind: 'transfer',
      postings: [
        { account: `liabilities:customers:${from}`, amount: '1' },
        { account: `liabilities:customers:${to}`, amount: '-1' },
      ],
    });
  const results = await Promise.allSettled(
    Array.from({ length: 400 }, (_, i) => {
      const l = ledgers[i % ledgers.length]!;
      return i % 2 === 0 ? transfer(l, 'ping', 'pong') : transfer(l, 'pong', 'ping');
    }),
  );
  expect(
    results
      .filter((r) => r.status === 'rejected')
      .map((r) => String((r as PromiseRejectedResult).reason)),
  ).toEqual([]);
  expect((await ledger.getBalance('liabilities:customers:ping')).posted.toString()).toBe('1000');
  expect((await ledger.getBalance('liabilities:customers:pong')).posted.toString()).toBe('1000');
  expect(await ledger.checkBalances()).toEqual([]);
  await closeLedgers(ledgers);
});

test('many hold-post pairs on one hot account keep running balances gap-free and exact', async () => {
  await fund(ledger, 'hot', '100');
  const ledgers = await openLedgers(4, 500);
  await Promise.all(
    Array.from({ length: 400 }, async (_, i) => {
      const l = ledgers[i % ledgers.length]!;
      const { holdId } = await l.createHold({
        debitAccount: 'liabilities:customers:hot',
        creditAccount: 'revenue:usage',
        amount: '0.2',
      });
      await l.postHold({ holdId, amount: '0.1' });
    }),
  );
  const balance = await ledger.getBalance('liabilities:customers:hot');
  expect(balance.posted.toString()).toBe('60');
  const { rows } = await database.pool.query<{ versions: string; max: string; ok: boolean }>(
    `select count(*) as versions, max(account_version) as max,
            bool_and(balance_after = (select sum(amount) from ledger_postings q where q.account_id = p.account_id and q.account_version <= p.account_version)) as ok
       from ledger_postings p join ledger_accounts a on a.id = p.account_id where a.code = 'liabilities:customers:hot'`,
  );
  expect(rows[0]).toEqual({ versions: '401', max: '401', ok: true });
  await closeLedgers(ledgers);
});

test('with several lanes, holds created and voided on one account while other batches read it all succeed, exactly', async () => {
  // Accounts this ledger has never seen make a batch read from the database; with several
  // lanes, such a read could start before another lane's write to the same account commits
  // and leave stale totals in the ledger's memory (a void then finds less held than its hold).
  // Commands that lower one account share a lane, which is what keeps this from happening.
  await fund(ledger, 'lanes-shared', '1000');
  for (let i = 0; i < 100; i += 1) await fund(ledger, `lanes-fresh-${i}`, '1');
  const lanes = await openLedger(remember(database.newPool(8)), {
    batchMaxSize: 500,
    batchConcurrency: 4,
  });
  const shared = 'liabilities:customers:lanes-shared';
  const holdAndVoid = async (account: string) => {
    const { holdId } = await lanes.createHold({
      debitAccount: account,
      creditAccount: 'revenue:usage',
      amount: '0.01',
    });
    await lanes.voidHold({ holdId });
  };
  const results = await Promise.allSettled([
    ...Array.from({ length: 50 }, async () => {
      for (let round = 0; round < 10; round += 1) await holdAndVoid(shared);
    }),
    ...Array.from({ length: 100 }, async (_, i) => {
      // Joins batches with the shared account's commands, whose reads then include it.
      await holdAndVoid(`liabilities:customers:lanes-fresh-${i}`);
      await holdAndVoid(shared);
    }),
  ]);
  const failures = results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
  expect(failures).toEqual([]);
  const balance = await ledger.getBalance(shared);
  expect([balance.posted.toString(), balance.held.toString()]).toEqual(['1000', '0']);
  expect(await ledger.checkBalances()).toEqual([]);
  await lanes.close();
  await closeLedgers([]);
});
