import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Decimal, type BatchInfo, type PostgresLedger } from '../../ledger/index.js';
import type { PrepareContext, PreparedCommand } from '../../ledger/command.js';
import { prepareCreateHold } from '../../ledger/commands/createHold.js';
import { preparePostEntry } from '../../ledger/commands/postEntry.js';
import { preparePostHold } from '../../ledger/commands/postHold.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, ledgerRowCounts, openLedger } from '../support/ledger.js';
import { deadlineIn, expectLedgerLaws, outcomeOf, waitFor, waitPast } from './lawChecks.js';

/**
 * Attempts to break the ledger laws from two processes at once: two ledgers, each with its own
 * pool and its own memory of accounts and holds, working the same accounts and holds, and
 * batches mixing commands whose outcomes depend on each other. After each, every law is checked
 * on the whole database (see expectLedgerLaws).
 */

let database: TestDatabase;
/** Two processes. `a` records its batches. */
let a: PostgresLedger;
let b: PostgresLedger;
const batches: BatchInfo[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  a = await openLedger(database.newPool(4), { onBatch: (info) => batches.push(info) });
  b = await openLedger(database.newPool(4));
});
afterAll(async () => {
  await Promise.all([a.close(), b.close()]);
  await database.drop();
});

/** What a test reaches inside PostgresLedger to submit prepared commands in an order it chooses. */
interface LedgerInternals {
  prepareContext: PrepareContext;
  submit(command: PreparedCommand<unknown>): Promise<unknown>;
}

const customer = (user: string) => `liabilities:customers:${user}`;
const receivable = (user: string) => `assets:receivables:customers:${user}`;
const hold = (ledger: PostgresLedger, user: string, amount: string, expiresAt?: Date) =>
  ledger.createHold({
    debitAccount: customer(user),
    creditAccount: 'revenue:usage',
    amount,
    ...(expiresAt ? { expiresAt } : {}),
  });
const charge = (ledger: PostgresLedger, user: string, amount: string) =>
  ledger.postEntry({
    kind: 'usage',
    postings: [
      { account: customer(user), amount },
      { account: 'revenue:usage', amount: `-${amount}` },
    ],
  });

async function balanceOf(user: string) {
  const balance = await a.getBalance(customer(user));
  return [balance.posted, balance.held, balance.available].map(String);
}

describe('two processes on the same accounts and holds', () => {
  test('a hold one process remembers as pending, expired by the other: its release is spendable, it is never posted', async () => {
    await fund(a, 'x1', '10');
    const deadline = await deadlineIn(database.pool, 300);
    const { holdId } = await hold(a, 'x1', '8', deadline);
    // `a` remembers the hold, pending, and the account with 2 available.
    await waitPast(database.pool, deadline);
    expect((await b.expireHolds()).expiredHoldIds).toEqual([holdId]);

    // Only what the expiry released makes this affordable: `a` must not refuse it on memory.
    expect(await outcomeOf(hold(a, 'x1', '9'))).toBe('ok');
    for (const attempt of [
      () => a.postHold({ holdId, amount: '1' }),
      () => a.postHold({ holdId, amount: '8' }),
      () => a.voidHold({ holdId }),
      () => b.postHold({ holdId, amount: '1' }),
    ])
      await expect(attempt()).rejects.toMatchObject({
        code: 'hold_not_pending',
        status: 'expired',
      });
    expect(await balanceOf('x1')).toEqual(['10', '9', '1']);
    await expectLedgerLaws(a, database.pool);
  });

  test('a spend planned on totals the other process has lowered meanwhile is refused as the database says, never overdrawn', async () => {
    await fund(a, 'x2', '20');
    await charge(a, 'x2', '1'); // `a` remembers 19 available
    await charge(b, 'x2', '15'); // 4 left, which `a` does not know
    const before = await ledgerRowCounts(database.pool);
    await expect(charge(a, 'x2', '10')).rejects.toMatchObject({
      code: 'insufficient_funds',
      details: { available: '4' },
    });
    await expect(hold(a, 'x2', '4.01')).rejects.toMatchObject({ code: 'insufficient_funds' });
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    // And the other way round: a top-up by `b` that `a` does not know makes a spend possible.
    await fund(b, 'x2', '30');
    expect(await outcomeOf(charge(a, 'x2', '34'))).toBe('ok');
    expect(await balanceOf('x2')).toEqual(['0', '0', '0']);
    await expectLedgerLaws(a, database.pool);
  });

  test('a hold voided by one process while the other remembers it pending, and the same hold posted by both at once: resolved once, one entry', async () => {
    await fund(a, 'x3', '12');
    const same = (await hold(a, 'x3', '5')).holdId;
    const different = (await hold(b, 'x3', '5')).holdId;
    // Each process remembers the hold it created, pending. One voided by the other meanwhile
    // (the account's other holds keep its held total above what the hold held):
    const stale = (await hold(a, 'x3', '2')).holdId;
    await b.voidHold({ holdId: stale });
    expect(await a.voidHold({ holdId: stale })).toEqual({ holdId: stale, replayed: true });
    await expect(a.postHold({ holdId: stale, amount: '2' })).rejects.toMatchObject({
      code: 'hold_not_pending',
      status: 'voided',
    });
    const [s1, s2] = await Promise.all([
      a.postHold({ holdId: same, amount: '2' }),
      b.postHold({ holdId: same, amount: '2' }),
    ]);
    expect(s1.entryId).toBe(s2.entryId);
    expect([s1.replayed, s2.replayed].sort()).toEqual([false, true]);
    const outcomes = await Promise.all([
      outcomeOf(a.postHold({ holdId: different, amount: '3' })),
      outcomeOf(b.postHold({ holdId: different, amount: '4' })),
      outcomeOf(a.voidHold({ holdId: different })),
    ]);
    expect(outcomes.filter((o) => o === 'ok')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'hold_not_pending')).toHaveLength(2);
    const resolved = await a.getHold(different);
    const charged = resolved?.postedAmount ?? new Decimal(0);
    expect(await balanceOf('x3')).toEqual([
      new Decimal(10).sub(charged).toString(),
      '0',
      new Decimal(10).sub(charged).toString(),
    ]);
    await expectLedgerLaws(a, database.pool);
  });

  test("a hold's deadline passing between the plan and the write (its account locked meanwhile) is not posted", async () => {
    await fund(a, 'x4', '10');
    const deadline = await deadlineIn(database.pool, 400);
    const { holdId } = await hold(a, 'x4', '3', deadline);
    // Another transaction holds the account's row: `a`'s write, planned on what it remembers
    // (the hold pending, its deadline ahead), waits on it.
    const blocker = await database.pool.connect();
    try {
      await blocker.query('begin');
      await blocker.query(`select 1 from ledger_accounts where code = $1 for update`, [
        customer('x4'),
      ]);
      const posting = outcomeOf(a.postHold({ holdId, amount: '2' }));
      await waitFor('the posting to wait on the account lock', async () => {
        const { rows } = await database.pool.query<{ n: string }>(
          `select count(*) as n from pg_stat_activity
            where datname = current_database() and wait_event_type = 'Lock' and query like '%ledger_apply_account_deltas%'`,
        );
        return rows[0]!.n === '1';
      });
      await waitPast(database.pool, deadline);
      await blocker.query('commit');
      expect(await posting).toBe('hold_not_pending');
    } finally {
      blocker.release();
    }
    expect((await a.getHold(holdId))?.status).toBe('pending');
    expect((await b.expireHolds()).expiredHoldIds).toEqual([holdId]);
    expect(await balanceOf('x4')).toEqual(['10', '0', '10']);
    await expectLedgerLaws(a, database.pool);
  });
});

describe('one batch, commands that depend on each other', () => {
  type Step = 'credit' | 'hold' | 'post';
  const permutations = (items: Step[]): Step[][] =>
    items.length <= 1
      ? [items]
      : items.flatMap((item, i) =>
          permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [
            item,
            ...rest,
          ]),
        );
  const cases = [0, 5].flatMap((topUp) =>
    permutations(['credit', 'hold', 'post']).map((order) => ({ order, topUp })),
  );

  /**
   * One account: 1 posted, all of it held by H (0 available), plus what the other process
   * topped up unknown to this one. In one batch: a credit of 10, a hold of 8 (affordable only
   * with the credit, or the top-up), and H posted for 3 (above its 1: the excess comes from the
   * balance, the rest is a shortfall). Each must end as if run alone in the batch's order.
   */
  test.each(cases)(
    '$order with a top-up of $topUp by the other process',
    async ({ order, topUp }) => {
      const user = `mix-${order.join('-')}-${topUp}`;
      await fund(a, user, '1');
      const { holdId } = await hold(a, user, '1');
      await a.resolveAccount(receivable(user), { create: true });
      if (topUp) await fund(b, user, String(topUp));

      // The model: the same rules, one command after another.
      let posted = new Decimal(1 + topUp);
      let held = new Decimal(1);
      let owed = new Decimal(0);
      const expected: Record<Step, string> = { credit: 'ok', hold: 'ok', post: 'ok' };
      let shortfall = new Decimal(0);
      for (const step of order) {
        const available = posted.sub(held);
        if (step === 'credit') posted = posted.add(10);
        if (step === 'hold') {
          if (available.gte(8)) held = held.add(8);
          else expected.hold = 'insufficient_funds';
        }
        if (step === 'post') {
          const covered = Decimal.min(3, available.add(1));
          shortfall = new Decimal(3).sub(covered);
          posted = posted.sub(covered);
          held = held.sub(1);
          owed = owed.add(shortfall);
        }
      }

      // Prepared first, then submitted in one turn of the event loop, in this order (the ledger's
      // methods would submit each when its preparation ends, in whatever order that is).
      const ledger = a as unknown as LedgerInternals;
      const commands: Record<Step, PreparedCommand<unknown>> = {
        credit: await preparePostEntry(ledger.prepareContext, {
          kind: 'adjustment',
          postings: [
            { account: 'expenses:promotions', amount: '10' },
            { account: customer(user), amount: '-10' },
          ],
        }),
        hold: await prepareCreateHold(ledger.prepareContext, {
          debitAccount: customer(user),
          creditAccount: 'revenue:usage',
          amount: '8',
        }),
        post: await preparePostHold(ledger.prepareContext, {
          holdId,
          amount: '3',
          allowOverHold: true,
          shortfallAccount: receivable(user),
        }),
      };
      const seen = batches.length;
      const results = await Promise.all(
        order.map((step) => outcomeOf(ledger.submit(commands[step]))),
      );
      expect(batches.slice(seen).map((info) => info.size)).toEqual([3]);
      expect(Object.fromEntries(order.map((step, i) => [step, results[i]]))).toEqual(expected);
      expect((await a.getHold(holdId))?.status).toBe('posted');
      const { rows } = await database.pool.query<{ shortfall: string }>(
        `select shortfall::text from ledger_holds where id = $1`,
        [holdId],
      );
      expect(new Decimal(rows[0]!.shortfall).toString()).toBe(shortfall.toString());
      expect(await balanceOf(user)).toEqual([posted, held, posted.sub(held)].map(String));
      const debt = await a.getBalance(receivable(user));
      expect(debt.posted.toString()).toBe(owed.toString());
      await expectLedgerLaws(a, database.pool);
    },
  );

  test('the same idempotency key twice in one batch: the same request replays the first, another is a conflict', async () => {
    await fund(a, 'k1', '10');
    const entry = (amount: string, key: string) =>
      a.postEntry({
        kind: 'usage',
        idempotencyKey: key,
        postings: [
          { account: customer('k1'), amount },
          { account: 'revenue:usage', amount: `-${amount}` },
        ],
      });
    const seen = batches.length;
    const [first, again, other] = await Promise.allSettled([
      entry('1', 'k1-a'),
      entry('1', 'k1-a'),
      entry('2', 'k1-a'),
    ]);
    const [x, y, z] = await Promise.allSettled([
      entry('4', 'k1-b'),
      entry('3', 'k1-b'),
      entry('4', 'k1-b'),
    ]);
    expect(batches.slice(seen).map((info) => [info.size, info.attempts])).toEqual([
      [3, 1],
      [3, 1],
    ]);
    expect(first).toMatchObject({ status: 'fulfilled', value: { replayed: false } });
    expect(again).toMatchObject({
      status: 'fulfilled',
      value: {
        replayed: true,
        entryId: (first as PromiseFulfilledResult<{ entryId: string }>).value.entryId,
      },
    });
    expect(other).toMatchObject({ status: 'rejected', reason: { code: 'idempotency_conflict' } });
    expect(x).toMatchObject({ status: 'fulfilled', value: { replayed: false } });
    expect(y).toMatchObject({ status: 'rejected', reason: { code: 'idempotency_conflict' } });
    expect(z).toMatchObject({ status: 'fulfilled', value: { replayed: true } });

    // The other process, asked the same and otherwise under the same keys, answers the same.
    expect(await entry('1', 'k1-a')).toMatchObject({ replayed: true });
    await expect(
      b.postEntry({
        kind: 'usage',
        idempotencyKey: 'k1-b',
        postings: [
          { account: customer('k1'), amount: '3' },
          { account: 'revenue:usage', amount: '-3' },
        ],
      }),
    ).rejects.toMatchObject({ code: 'idempotency_conflict' });
    expect(await balanceOf('k1')).toEqual(['5', '0', '5']);
    await expectLedgerLaws(a, database.pool);
  });

  test("a hold's posting entry reversed twice in one batch, its reversal by both processes at once: each reversed once, the hold never posted again", async () => {
    await fund(a, 'r1', '2');
    const { holdId } = await hold(a, 'r1', '1');
    const posted = await a.postHold({
      holdId,
      amount: '5',
      allowOverHold: true,
      shortfallAccount: receivable('r1'),
    });
    expect(posted.shortfall.toString()).toBe('3');
    const reverse = (ledger: PostgresLedger, entryId: string) =>
      outcomeOf(ledger.reverseEntry({ entryId }));
    const seen = batches.length;
    const inOneBatch = await Promise.all([
      reverse(a, posted.entryId!),
      reverse(a, posted.entryId!),
    ]);
    expect(batches.slice(seen).map((info) => [info.size, info.attempts])).toEqual([[2, 1]]);
    expect(inOneBatch).toEqual(['ok', 'already_reversed']);
    expect(await reverse(b, posted.entryId!)).toBe('already_reversed');
    // Its reversal, reversed by both processes at once: once.
    const reversal = await a.getReversalOf(posted.entryId!);
    const raced = await Promise.all([reverse(a, reversal!.id), reverse(b, reversal!.id)]);
    expect(raced.sort()).toEqual(['already_reversed', 'ok']);

    // The hold stays posted by its one entry: posting it again replays, anything else is refused.
    const again = await b.postHold({
      holdId,
      amount: '5',
      allowOverHold: true,
      shortfallAccount: receivable('r1'),
    });
    expect([again.replayed, again.entryId]).toEqual([true, posted.entryId]);
    for (const attempt of [() => a.postHold({ holdId, amount: '1' }), () => a.voidHold({ holdId })])
      await expect(attempt()).rejects.toMatchObject({ code: 'hold_not_pending', status: 'posted' });
    // Charged, reversed, charged again: 5 taken, 2 of them from the balance, 3 owed.
    expect(await balanceOf('r1')).toEqual(['0', '0', '0']);
    expect((await a.getBalance(receivable('r1'))).posted.toString()).toBe('3');
    await expectLedgerLaws(a, database.pool);
  });
});

describe('two processes racing on one account', () => {
  test('holds made, posted, voided and expired by both at once, with credits and spends: each hold resolved once, as its callers were told', async () => {
    // Two lanes each: batches of one process also race each other.
    const racers = [
      await openLedger(database.newPool(3), { batchConcurrency: 2 }),
      await openLedger(database.newPool(3), { batchConcurrency: 2 }),
    ];
    await fund(a, 'race', '20');
    // A fixed pseudo-random sequence (a linear congruential generator), so a failure replays.
    let seed = 20261128;
    const next = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const created: Array<Promise<string | null>> = [];
    /** Per hold, what its callers were told resolved it first (not a replay). */
    const resolutions = new Map<string, string[]>();
    const resolved = (holdId: string, how: string) =>
      resolutions.set(holdId, [...(resolutions.get(holdId) ?? []), how]);
    const calls: Array<Promise<unknown>> = [];
    for (let i = 0; i < 240; i += 1) {
      const ledger = racers[next(2)]!;
      const kind = next(6);
      const earlier = created.length > 0 ? created[next(created.length)]! : null;
      if (kind === 0 || !earlier) {
        const soon = next(2) === 0;
        const made = (async () => {
          const expiresAt = soon ? await deadlineIn(database.pool, 50 + next(200)) : undefined;
          const result = await hold(ledger, 'race', `0.${1 + next(300)}`, expiresAt).catch(
            (error: { code?: string }) => {
              if (error.code === 'insufficient_funds') return null;
              throw error;
            },
          );
          return result?.holdId ?? null;
        })();
        created.push(made);
        calls.push(made);
      } else if (kind === 1 || kind === 2) {
        const amount = `0.${next(500)}`;
        calls.push(
          earlier.then(async (holdId) => {
            if (!holdId) return;
            const result = await ledger
              .postHold({
                holdId,
                amount,
                allowOverHold: true,
                shortfallAccount: receivable('race'),
              })
              .catch((error: { code?: string }) => {
                if (error.code === 'hold_not_pending') return null;
                throw error;
              });
            if (result && !result.replayed)
              resolved(holdId, `posted ${result.postedAmount.toString()}`);
          }),
        );
      } else if (kind === 3) {
        calls.push(
          earlier.then(async (holdId) => {
            if (!holdId) return;
            const result = await ledger.voidHold({ holdId }).catch((error: { code?: string }) => {
              if (error.code === 'hold_not_pending') return null;
              throw error;
            });
            if (result && !result.replayed) resolved(holdId, 'voided');
          }),
        );
      } else if (kind === 4) {
        calls.push(
          ledger.expireHolds().then(({ expiredHoldIds }) => {
            for (const id of expiredHoldIds) resolved(id, 'expired');
          }),
        );
      } else {
        const amount = `0.${1 + next(400)}`;
        calls.push(
          (next(2) === 0 ? fund(ledger, 'race', amount) : charge(ledger, 'race', amount)).catch(
            (error: { code?: string }) => {
              if (error.code !== 'insufficient_funds') throw error;
            },
          ),
        );
      }
    }
    await Promise.all(calls);
    await Promise.all(racers.map((l) => l.close()));

    const { rows } = await database.pool.query<{
      id: string;
      status: string;
      posted: string | null;
    }>(
      `select h.id::text, h.status, h.posted_amount::text as posted from ledger_holds h
        join ledger_accounts d on d.id = h.debit_account_id where d.code = $1`,
      [customer('race')],
    );
    expect(rows.length).toBeGreaterThan(10);
    for (const row of rows) {
      const told = resolutions.get(row.id) ?? [];
      const stored =
        row.status === 'posted' ? `posted ${new Decimal(row.posted!).toString()}` : row.status;
      expect(told.length, row.id).toBeLessThanOrEqual(1);
      if (told.length === 1) expect(told[0], row.id).toBe(stored);
      else expect(row.status, row.id).toBe('pending');
    }
    await expectLedgerLaws(a, database.pool);
  });
});
