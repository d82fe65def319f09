import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { isDatabaseUnavailable } from '../../src/db/unavailable.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { counter, entriesTaggedWith, waitFor } from '../support/poll.js';
import { fund, openLedger } from '../support/ledger.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';

/**
 * The link to the database dies without a reset (a network partition, a failover behind a
 * virtual IP): nothing answers, nothing is closed, and the kernel would only give up after
 * about 15 minutes. The ledger bounds each write (writeTimeoutMs, 500 ms here): the write's
 * callers get a lost write at once, settleLostWrite tells whether it committed (and makes sure
 * it never does if it has not), and the ledger's single write lane goes on with the next
 * writes on new connections. The ledger reaches PostgreSQL through a TCP proxy the test
 * blackholes; the test reads the books straight from the database.
 */

const WRITE_TIMEOUT_MS = 500;

let database: TestDatabase;
let proxy: TcpProxy;
let pool: pg.Pool;
let ledger: PostgresLedger;

beforeAll(async () => {
  database = await createTestDatabase();
  const url = new URL(database.url);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
  url.host = proxy.address;
  pool = new pg.Pool({ connectionString: url.toString(), max: 4, connectionTimeoutMillis: 2000 });
  pool.on('error', () => {});
  ledger = await openLedger(pool, { writeTimeoutMs: WRITE_TIMEOUT_MS });
});
afterAll(async () => {
  proxy?.blackhole(false);
  proxy?.cut();
  await ledger?.close();
  await pool?.end();
  await proxy?.close();
  await database?.drop();
});

const count = (sql: string, params: unknown[] = []) => counter(database.pool)(sql, params);
const entriesTagged = entriesTaggedWith(count);

const waitingOnLock = `select count(*) from pg_stat_activity
  where datname = current_database() and wait_event_type = 'Lock'`;

/** Backends of this database running a ledger batch's write now (their client may be gone). */
const batchWritesRunning = `select count(*) from pg_stat_activity
  where datname = current_database() and state = 'active' and query like 'with w\\_accounts %'`;

/** Available balances of customers, straight from the database. */
async function available(...users: string[]): Promise<string[]> {
  const { rows } = await database.pool.query<{ code: string; available: string }>(
    `select code, trim_scale(credits_posted - debits_posted - debits_pending)::text as available
       from ledger_accounts where code = any($1::text[])`,
    [users.map((u) => `liabilities:customers:${u}`)],
  );
  return users.map((u) => rows.find((r) => r.code === `liabilities:customers:${u}`)!.available);
}

/** Moves `amount` from one customer to another (no revenue account: its row stays free). */
function transfer(from: string, to: string, amount: string, tag: string, key?: string) {
  return ledger.postEntry({
    kind: 'adjustment',
    metadata: { test: tag },
    ...(key ? { idempotencyKey: key } : {}),
    postings: [
      { account: `liabilities:customers:${from}`, amount },
      { account: `liabilities:customers:${to}`, amount: `-${amount}` },
    ],
  });
}

/** 0.25 charges of a customer, to revenue. */
function charges(userId: string, tag: string, n: number) {
  return Array.from({ length: n }, () =>
    ledger.postEntry({
      kind: 'usage',
      metadata: { test: tag },
      postings: [
        { account: `liabilities:customers:${userId}`, amount: '0.25' },
        { account: 'revenue:usage', amount: '-0.25' },
      ],
    }),
  );
}

/** Funds customers, and writes once for each, so the ledger knows their accounts. */
async function openCustomers(...users: string[]): Promise<void> {
  for (const user of users) await fund(ledger, user, '10');
}

/** Holds the row of a customer's account locked on a connection of its own, until `release`. */
async function lockAccount(userId: string) {
  const blocker = await database.pool.connect();
  await blocker.query('begin');
  await blocker.query(`select 1 from ledger_accounts where code = $1 for update`, [
    `liabilities:customers:${userId}`,
  ]);
  return {
    async release() {
      await blocker.query('commit');
      blocker.release();
    },
  };
}

/** Every caller got a lost write, saying the database did not answer in time: the gateway's 503. */
function expectLostWrites(results: PromiseSettledResult<unknown>[]): unknown {
  expect(results.map((r) => r.status)).toEqual(results.map(() => 'rejected'));
  const reasons = results.map((r) => (r as PromiseRejectedResult).reason as Error);
  for (const reason of reasons) {
    expect(ledger.isLostWrite(reason)).toBe(true);
    expect(isDatabaseUnavailable(reason)).toBe(true);
    expect(reason.message).toMatch(/did not answer within 500 ms/);
  }
  return reasons[0];
}

test('a write whose link dies without a reset is a lost write within the bound; the lane goes on on a new connection; fenced, the write never commits', async () => {
  await openCustomers('fo-a', 'fo-b', 'fo-c');
  await Promise.all(charges('fo-c', 'warm-up', 1));
  // A busy pool: every connection open, idle between queries (over the link that will die).
  await Promise.all([1, 2, 3, 4].map(() => pool.query('select pg_sleep(0.05)')));
  expect(pool.totalCount).toBe(4);
  const lock = await lockAccount('fo-a');
  try {
    const started = Date.now();
    const stalled = Promise.allSettled([
      transfer('fo-a', 'fo-b', '1', 'stalled-fenced'),
      transfer('fo-a', 'fo-b', '2', 'stalled-fenced'),
    ]);
    // The batch reached the server and waits there; then its link dies, silently. New
    // connections work (a failover behind a virtual IP), the ones open are dead.
    await waitFor('the batch to wait on the lock', async () => (await count(waitingOnLock)) === 1);
    proxy.blackhole(true, { openOnly: true });
    // Queued in the lane behind the stalled batch.
    const queued = charges('fo-c', 'after-stall', 3);

    const lost = expectLostWrites(await stalled);
    expect(Date.now() - started).toBeLessThan(20_000); // the kernel alone: about 15 minutes
    // The lane went on, on a new connection: the writes queued behind are in the books.
    expect(await Promise.all(queued)).toHaveLength(3);
    expect(await entriesTagged('after-stall')).toBe(3);

    // On the server the old batch still waits for the lock: it would commit once it is free.
    expect(await count(batchWritesRunning)).toBe(1);
    expect(await ledger.settleLostWrite(lost)).toBe('fenced');
    await lock.release();
    // The old batch gets the lock, and fails on its fence.
    await waitFor('the old batch to end', async () => (await count(batchWritesRunning)) === 0);
  } finally {
    await lock.release().catch(() => {});
  }
  expect(await entriesTagged('stalled-fenced')).toBe(0);
  expect(await available('fo-a', 'fo-b', 'fo-c')).toEqual(['10', '10', '9']);

  // Told "fenced", the caller sends its transfers again: each is written once.
  await Promise.all([
    transfer('fo-a', 'fo-b', '1', 'stalled-fenced'),
    transfer('fo-a', 'fo-b', '2', 'stalled-fenced'),
  ]);
  expect(await entriesTagged('stalled-fenced')).toBe(2);
  // The old link comes back: what it held reaches the server late, and changes nothing.
  proxy.blackhole(false);
  expect(await entriesTagged('stalled-fenced')).toBe(2);
  expect(await available('fo-a', 'fo-b', 'fo-c')).toEqual(['7', '13', '9']);
  expect(await ledger.checkBalances()).toEqual([]);
});

test('a write that committed while its link was dead: a lost write, settled as committed, written once; a replay with its key writes nothing more', async () => {
  await openCustomers('cm-a', 'cm-b');
  const lock = await lockAccount('cm-a');
  const stalled = Promise.allSettled([transfer('cm-a', 'cm-b', '4', 'stalled-committed', 'cm-1')]);
  await waitFor('the batch to wait on the lock', async () => (await count(waitingOnLock)) === 1);
  // The link dies for good, new connections too; the batch gets its lock and commits, and its
  // answer never comes back.
  proxy.blackhole(true);
  await lock.release();
  await waitFor(
    'the batch to commit',
    async () => (await entriesTagged('stalled-committed')) === 1,
  );

  const lost = expectLostWrites(await stalled);
  // The database cannot be reached: settling fails in time too, as unavailable.
  const unreachable = await ledger.settleLostWrite(lost).catch((error: unknown) => error);
  expect(isDatabaseUnavailable(unreachable)).toBe(true);
  // So does a new write, having written nothing.
  const refused = await Promise.allSettled(charges('cm-b', 'while-down', 2));
  expect(refused.map((r) => r.status)).toEqual(['rejected', 'rejected']);
  for (const r of refused) {
    expect(ledger.isLostWrite((r as PromiseRejectedResult).reason)).toBe(false);
    expect(isDatabaseUnavailable((r as PromiseRejectedResult).reason)).toBe(true);
  }

  proxy.blackhole(false);
  expect(await ledger.settleLostWrite(lost)).toBe('committed');
  expect(await ledger.settleLostWrite(lost)).toBe('committed');
  // Told "committed" (or not told at all), the caller replays with its key: the same entry.
  const again = await transfer('cm-a', 'cm-b', '4', 'stalled-committed', 'cm-1');
  const { rows } = await database.pool.query<{ id: string }>(
    `select id from ledger_entries where metadata->>'test' = 'stalled-committed'`,
  );
  expect(rows.map((r) => r.id)).toEqual([again.entryId]);
  expect(await entriesTagged('while-down')).toBe(0);
  expect(await available('cm-a', 'cm-b')).toEqual(['6', '14']);
  // Later writes go through, on new connections.
  await Promise.all(charges('cm-b', 'after-restore', 4));
  expect(await available('cm-a', 'cm-b')).toEqual(['6', '13']);
  expect(await ledger.checkBalances()).toEqual([]);
});
