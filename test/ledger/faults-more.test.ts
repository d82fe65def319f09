import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { isDatabaseUnavailable } from '../../src/db/unavailable.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, keyedCharge, openLedger } from '../support/ledger.js';

/**
 * The server ends a ledger batch's session (`pg_terminate_backend`: an administrator, a
 * failover, an idle-session killer) at any moment: before its write, while it waits on a row
 * lock, right after its commit. Unlike a broken network the server rolls back what had not
 * committed, and the client hears 57P01 or nothing at all. Callers repeat what failed, as the
 * gateway and the CLI do (a keyed or hold-bound command replays); the books must come out
 * exact: nothing lost, nothing written twice, no hold left pending.
 */

const APP = 'ledger-under-fire';

let database: TestDatabase;
let pool: pg.Pool;
let ledger: PostgresLedger;

beforeAll(async () => {
  database = await createTestDatabase();
  pool = new pg.Pool({ connectionString: database.url, max: 4, application_name: APP });
  pool.on('error', () => {});
  ledger = await openLedger(pool);
});
afterAll(async () => {
  await ledger?.close();
  await pool?.end();
  await database?.drop();
});

async function count(sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await database.pool.query<{ n: number }>(`select (${sql})::int as n`, params);
  return rows[0]!.n;
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const giveUpAt = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Ends the sessions of the ledger's pool that match `where`; returns how many. */
async function terminate(where = 'true'): Promise<number> {
  const { rows } = await database.pool.query<{ n: number }>(
    `select count(*) filter (where pg_terminate_backend(pid))::int as n
       from pg_stat_activity where application_name = $1 and (${where})`,
    [APP],
  );
  return rows[0]!.n;
}

/** Runs `operation` again while the database is unavailable, as the service's callers do. */
let completed = 0;

async function repeat<T>(operation: () => Promise<T>): Promise<{ value: T; failures: number }> {
  for (let failures = 0; ; failures += 1) {
    try {
      const value = await operation();
      completed += 1;
      return { value, failures };
    } catch (error) {
      if (!isDatabaseUnavailable(error) || failures > 200) throw error;
    }
  }
}

async function available(userId: string): Promise<string> {
  const { rows } = await database.pool.query<{ available: string }>(
    `select trim_scale(credits_posted - debits_posted - debits_pending)::text as available
       from ledger_accounts where code = $1`,
    [`liabilities:customers:${userId}`],
  );
  return rows[0]!.available;
}

test('a batch whose session is ended while it waits on a row lock is fenced and planned again: written once', async () => {
  const user = 'terminated-waiting';
  await fund(ledger, user, '10');
  await ledger.postEntry(keyedCharge(user, 0)); // the ledger knows both accounts now
  const blocker = await database.pool.connect();
  try {
    await blocker.query('begin');
    await blocker.query(`select 1 from ledger_accounts where code = $1 for update`, [
      `liabilities:customers:${user}`,
    ]);
    const charges = Array.from({ length: 10 }, (_, i) =>
      ledger.postEntry(keyedCharge(user, i + 1)),
    );
    const waiting = `application_name = '${APP}' and wait_event_type = 'Lock'`;
    await waitFor(
      'the batch to wait on the lock',
      async () => (await count(`select count(*) from pg_stat_activity where ${waiting}`)) === 1,
    );
    expect(await terminate(`wait_event_type = 'Lock'`)).toBe(1);
    // The server rolled the batch back; not knowing that from 57P01, the ledger fences the
    // batch and plans it again, which waits on the lock in turn.
    await waitFor(
      'the batch to be fenced',
      async () => (await count(`select count(*) from ledger_batch_fences where abandoned`)) === 1,
    );
    await waitFor(
      'the batch planned again to wait on the lock',
      async () => (await count(`select count(*) from pg_stat_activity where ${waiting}`)) === 1,
    );
    await blocker.query('commit');
    const written = await Promise.all(charges);
    expect(new Set(written.map((w) => w.entryId)).size).toBe(10);
    expect(
      await count(`select count(*) from ledger_entries where metadata->>'series' = $1`, [user]),
    ).toBe(11);
    expect(await available(user)).toBe('7.25'); // 10 - 11 x 0.25
    expect(await ledger.checkBalances()).toEqual([]);
  } finally {
    blocker.release();
  }
});

test('sessions ended at any moment while charges, holds and settlements run: callers that repeat get every one written once', async () => {
  const user = 'under-fire';
  await fund(ledger, user, '1000');
  let stop = false;
  let terminated = 0;
  // Ends every session of the ledger's pool that is busy (reading, writing, committing, or
  // waiting between the statements of a transaction), and now and then the idle ones too
  // (a session ended right after its commit is found dead by its next batch).
  // After each round it lets one more operation complete, so the work goes on.
  const killer = (async () => {
    for (let round = 0; !stop; round += 1) {
      terminated += await terminate(round % 3 === 0 ? 'true' : `state <> 'idle'`);
      const until = completed + 1;
      while (!stop && completed < until) await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  const CHARGES = 150;
  const HOLDS = 60;
  let failures = 0;
  try {
    // Eight callers, each one operation after another: many small batches to cut.
    const charge = async (i: number) => {
      const done = await repeat(() => ledger.postEntry(keyedCharge(user, i)));
      failures += done.failures;
      return done.value.entryId;
    };
    const holdAndResolve = async (i: number) => {
      const held = await repeat(() =>
        ledger.createHold({
          debitAccount: `liabilities:customers:${user}`,
          creditAccount: 'revenue:usage',
          amount: '2',
          idempotencyKey: `under-fire-hold-${i}`,
          metadata: { test: 'under-fire' },
        }),
      );
      // Half are settled for 1.5 (a hold-bound repeat replays), half released.
      const resolved = await repeat(() =>
        i % 2 === 0
          ? ledger.postHold({ holdId: held.value.holdId, amount: '1.5' })
          : ledger.voidHold({ holdId: held.value.holdId }),
      );
      failures += held.failures + resolved.failures;
      return held.value.holdId;
    };
    const work = [
      ...Array.from({ length: CHARGES }, (_, i) => () => charge(i)),
      ...Array.from({ length: HOLDS }, (_, i) => () => holdAndResolve(i)),
    ];
    const results: string[] = [];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let next = work.shift(); next; next = work.shift()) results.push(await next());
      }),
    );
    expect(new Set(results).size).toBe(CHARGES + HOLDS);
  } finally {
    stop = true;
    await killer;
  }
  console.info(
    `terminated ${terminated}, failures ${failures}, fenced ${await count('select count(*) from ledger_batch_fences where abandoned')}`,
  );
  // The fire did reach the callers (otherwise this proved nothing).
  expect(terminated).toBeGreaterThan(0);
  expect(
    failures + (await count(`select count(*) from ledger_batch_fences where abandoned`)),
  ).toBeGreaterThan(0);

  expect(
    await count(`select count(*) from ledger_entries where metadata->>'series' = $1`, [user]),
  ).toBe(CHARGES);
  const holds = await database.pool.query<{ status: string; n: number }>(
    `select h.status, count(*)::int as n from ledger_holds h
       join ledger_accounts a on a.id = h.debit_account_id
      where a.code = $1 group by h.status order by h.status`,
    [`liabilities:customers:${user}`],
  );
  expect(holds.rows).toEqual([
    { status: 'posted', n: HOLDS / 2 },
    { status: 'voided', n: HOLDS / 2 },
  ]);
  expect(
    await count(
      `select count(*) from ledger_entries e join ledger_holds h on h.id = e.hold_id
        where h.metadata->>'test' = 'under-fire'`,
    ),
  ).toBe(HOLDS / 2);
  // 1000 - 150 x 0.25 - 30 x 1.5, nothing held.
  expect(await available(user)).toBe('917.5');
  expect(await ledger.checkBalances()).toEqual([]);
}, 120_000);
