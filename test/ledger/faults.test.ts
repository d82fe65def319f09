import { spawn } from 'node:child_process';
import { once } from 'node:events';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, expect, test, vi } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { settleUnknownOutcome } from '../../ledger/postgres/executeBatch.js';
import { KnownState } from '../../ledger/postgres/knownState.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { counter, entriesTaggedWith, waitFor } from '../support/poll.js';
import { fund, keyedCharge, openLedger } from '../support/ledger.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';

/**
 * A batch's connection breaks before its answer arrives: the batch may or may not have
 * committed, and its callers may not carry idempotency keys. The ledger must neither lose
 * what committed nor write it twice. It reaches PostgreSQL through a TCP proxy the test can
 * break; the test reads the books straight from the database.
 */

let database: TestDatabase;
let proxy: TcpProxy;
let pool: pg.Pool;
let ledger: PostgresLedger;

beforeAll(async () => {
  database = await createTestDatabase();
  const url = new URL(database.url);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
  url.host = proxy.address;
  pool = new pg.Pool({ connectionString: url.toString(), max: 4 });
  pool.on('error', () => {});
  ledger = await openLedger(pool);
});
afterAll(async () => {
  proxy?.swallowAnswers(false);
  proxy?.cut();
  await ledger?.close();
  await pool?.end();
  await proxy?.close();
  await database?.drop();
});

const count = (sql: string, params: unknown[] = []) => counter(database.pool)(sql, params);
const entriesTagged = entriesTaggedWith(count);

/** Available balance of a customer, straight from the database. */
async function available(userId: string): Promise<string> {
  const { rows } = await database.pool.query<{ available: string }>(
    `select trim_scale(credits_posted - debits_posted - debits_pending)::text as available
       from ledger_accounts where code = $1`,
    [`liabilities:customers:${userId}`],
  );
  return rows[0]!.available;
}

/** Funds a customer and charges once, so the ledger knows both accounts and writes without reading. */
async function openCustomer(userId: string): Promise<void> {
  await fund(ledger, userId, '100.25');
  await Promise.all(charges(userId, 'warm-up', 1));
}

/** `n` charges of 0.25 from the customer to revenue, none with an idempotency key. */
function charges(userId: string, tag: string, n: number) {
  return Array.from({ length: n }, (_, i) =>
    ledger.postEntry({
      kind: 'usage',
      description: `${tag} #${i}`,
      metadata: { test: tag },
      postings: [
        { account: `liabilities:customers:${userId}`, amount: '0.25' },
        { account: 'revenue:usage', amount: '-0.25' },
      ],
    }),
  );
}

test('a batch that committed but whose answer was lost is not written again: its callers get what it wrote', async () => {
  await openCustomer('lost-1');
  proxy.swallowAnswers(true);
  const entries = charges('lost-1', 'lost-answer', 20);
  const holds = Array.from({ length: 20 }, (_, i) =>
    ledger.createHold({
      debitAccount: 'liabilities:customers:lost-1',
      creditAccount: 'revenue:usage',
      amount: '1',
      idempotencyKey: `lost-answer-hold-${i}`,
    }),
  );
  // The batch reached the database and committed; its answer did not come back.
  await waitFor('the batch to commit', async () => (await entriesTagged('lost-answer')) === 20);
  proxy.swallowAnswers(false);
  proxy.cut();

  const written = await Promise.all(entries);
  const held = await Promise.all(holds);
  expect(await entriesTagged('lost-answer')).toBe(20);
  const { rows } = await database.pool.query<{ id: string }>(
    `select id from ledger_entries where metadata->>'test' = 'lost-answer'`,
  );
  expect(new Set(written.map((w) => w.entryId))).toEqual(new Set(rows.map((r) => r.id)));
  expect(
    await count(
      `select count(*) from ledger_holds where id = any($1::uuid[]) and status = 'pending'`,
      [held.map((h) => h.holdId)],
    ),
  ).toBe(20);
  expect(await available('lost-1')).toBe('75'); // 100 - 20 x 0.25 charged - 20 x 1 held
  // The batch's fence row says it committed; nothing was abandoned.
  expect(await count(`select count(*) from ledger_batch_fences where abandoned`)).toBe(0);

  // A caller that retries anyway, with its key, gets the same hold.
  const again = await ledger.createHold({
    debitAccount: 'liabilities:customers:lost-1',
    creditAccount: 'revenue:usage',
    amount: '1',
    idempotencyKey: 'lost-answer-hold-3',
  });
  expect(again.holdId).toBe(held[3]!.holdId);
  expect(await ledger.checkBalances()).toEqual([]);
});

test('a batch cut off while it waits on a lock is fenced and planned again: written once, when the lock goes', async () => {
  await openCustomer('lost-2');
  const blocker = await database.pool.connect();
  try {
    await blocker.query('begin');
    await blocker.query(`select 1 from ledger_accounts where code = $1 for update`, [
      'liabilities:customers:lost-2',
    ]);
    const entries = charges('lost-2', 'cut-waiting', 20);
    const waitingOnLock = `select count(*) from pg_stat_activity
      where datname = current_database() and wait_event_type = 'Lock'`;
    await waitFor('the batch to wait on the lock', async () => (await count(waitingOnLock)) === 1);
    // Its backend still waits (it does not know its client is gone) and would commit later.
    proxy.cut();
    await waitFor(
      'the batch to be fenced',
      async () => (await count(`select count(*) from ledger_batch_fences where abandoned`)) === 1,
    );
    // Planned again on a new connection: that one waits on the lock too.
    await waitFor(
      'the new batch to wait on the lock',
      async () => (await count(waitingOnLock)) === 2,
    );
    expect(await entriesTagged('cut-waiting')).toBe(0);
    await blocker.query('commit');

    const written = await Promise.all(entries);
    expect(new Set(written.map((w) => w.entryId)).size).toBe(20);
    // The old backend went ahead once the lock was free, and failed on its fence.
    await waitFor('the old backend to finish', async () => (await count(waitingOnLock)) === 0);
    expect(await entriesTagged('cut-waiting')).toBe(20);
    expect(await available('lost-2')).toBe('95');
    expect(await ledger.checkBalances()).toEqual([]);
  } finally {
    blocker.release();
  }
});

test('fence rows of batches older than the given age are pruned; newer ones stay', async () => {
  await openCustomer('fences');
  const fences = () => count(`select count(*) from ledger_batch_fences`);
  await Promise.all(charges('fences', 'old-batch', 3));
  const old = await fences();
  // Fences are aged by their batch's UUIDv7 time. Pruning at 3 s: the old batches are older
  // (the wait), the new ones must still be younger when it runs (0.3 s on a loaded machine).
  await new Promise((resolve) => setTimeout(resolve, 3500));
  await Promise.all(charges('fences', 'new-batch', 3));
  const all = await fences();
  expect(all).toBeGreaterThan(old);

  expect(await ledger.pruneBatchFences(3)).toBe(old);
  expect(await fences()).toBe(all - old);
  expect(await ledger.pruneBatchFences()).toBe(0); // the default keeps the last hour
});

test('a fence written just now by a process whose clock is two hours behind is not pruned', async () => {
  // Its batch id is a UUIDv7 of that process's clock: it looks two hours old.
  const behind = uuidv7({ msecs: Date.now() - 2 * 3600_000 });
  await pool.query(`insert into ledger_batch_fences (batch_id, abandoned) values ($1, true)`, [
    behind,
  ]);
  await ledger.pruneBatchFences();
  // Still there: the batch it fences, if it is still running, must find it and fail.
  expect(await count(`select count(*) from ledger_batch_fences where batch_id = '${behind}'`)).toBe(
    1,
  );
});

test('a writer killed mid-way leaves whole entries only; sending its charges again writes each exactly once', async () => {
  const user = 'killed-writer';
  await fund(ledger, user, '1000');
  const total = 2000;
  const writer = spawn(
    process.execPath,
    ['--import', 'tsx', 'test/support/ledger-writer.ts', database.url, user, String(total)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = once(writer, 'exit');
  let reported = 0;
  writer.stdout!.on('data', (chunk: Buffer) => {
    const last = /written (\d+)\n$/.exec(chunk.toString());
    if (last) reported = Number(last[1]);
  });
  await waitFor('the writer to commit 300 charges', async () => reported >= 300);
  writer.kill('SIGKILL');
  await exited;

  const series = `select count(*) from ledger_entries where metadata->>'series' = '${user}'`;
  const before = await count(series);
  expect(before).toBeGreaterThanOrEqual(300);
  expect(before).toBeLessThan(total);
  // Whatever the kill cut short left nothing half-written: the books are whole.
  expect(await ledger.checkBalances()).toEqual([]);

  // The caller sends every charge again (the kill told it nothing about the last ones).
  const results = await Promise.all(
    Array.from({ length: total }, (_, i) => ledger.postEntry(keyedCharge(user, i))),
  );
  expect(await count(series)).toBe(total);
  const { rows } = await database.pool.query<{ id: string }>(
    `select id from ledger_entries where metadata->>'series' = $1`,
    [user],
  );
  expect(new Set(results.map((r) => r.entryId))).toEqual(new Set(rows.map((r) => r.id)));
  expect(await available(user)).toBe('500'); // 1000 - 2000 x 0.25
  expect(await ledger.checkBalances()).toEqual([]);
});

test('the probe of a batch tells committed from fenced, also when its own earlier attempt fenced it', async () => {
  const [committed, fencedBefore, unknown] = [uuidv7(), uuidv7(), uuidv7()];
  await database.pool.query(
    `insert into ledger_batch_fences (batch_id, abandoned) values ($1, false), ($2, true)`,
    [committed, fencedBefore],
  );
  expect(await settleUnknownOutcome(database.pool, committed, 1000)).toBe('committed');
  // A probe whose insert committed but whose answer was lost, asking again: still fenced.
  expect(await settleUnknownOutcome(database.pool, fencedBefore, 1000)).toBe('fenced');
  expect(await settleUnknownOutcome(database.pool, unknown, 1000)).toBe('fenced');
  expect(await settleUnknownOutcome(database.pool, unknown, 1000)).toBe('fenced');
  const { rows } = await database.pool.query<{ abandoned: boolean }>(
    `select abandoned from ledger_batch_fences where batch_id = $1`,
    [unknown],
  );
  expect(rows).toEqual([{ abandoned: true }]);
});

test('what fails after a batch committed (its metrics callback, what the process remembers) neither fails its callers nor writes it again', async () => {
  let failObserver = false;
  const observed = await openLedger(database.pool, {
    onBatch: () => {
      if (failObserver) {
        failObserver = false;
        throw new Error('metrics registry unavailable');
      }
    },
  });
  await fund(observed, 'after-commit', '10');
  await observed.resolveAccount('revenue:usage', { create: true });
  const twoCharges = () =>
    Promise.allSettled(
      [1, 2].map(() =>
        observed.postEntry({
          kind: 'usage',
          metadata: { test: 'after-commit' },
          postings: [
            { account: 'liabilities:customers:after-commit', amount: '0.25' },
            { account: 'revenue:usage', amount: '-0.25' },
          ],
        }),
      ),
    );

  failObserver = true;
  expect((await twoCharges()).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
  expect(failObserver).toBe(false);

  const remember = vi.spyOn(KnownState.prototype, 'rememberWrite').mockImplementationOnce(() => {
    throw new Error('out of memory');
  });
  try {
    expect((await twoCharges()).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    expect(remember).toHaveBeenCalled();
  } finally {
    remember.mockRestore();
  }
  // Four charges of 0.25, each written once.
  expect(await entriesTagged('after-commit')).toBe(4);
  expect(await available('after-commit')).toBe('9');
  // What could not be remembered was forgotten, not left stale: the next charges are exact too.
  await twoCharges();
  expect(await available('after-commit')).toBe('8.5');
  expect(await observed.checkBalances()).toEqual([]);
  await observed.close();
});
