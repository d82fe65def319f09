import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import {
  HoldExceededError,
  HoldNotFoundError,
  HoldNotPendingError,
  InsufficientFundsError,
  InvalidEntryError,
  Decimal,
  LedgerError,
  type PostEntryParameters,
  type PostgresLedger,
} from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, ledgerRowCounts, openLedger } from '../support/ledger.js';

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

const hold = (user: string, amount: string, extra: { expiresAt?: Date; holdId?: string } = {}) =>
  ledger.createHold({
    debitAccount: `liabilities:customers:${user}`,
    creditAccount: 'revenue:usage',
    amount,
    ...extra,
  });

async function balanceOf(user: string) {
  const b = await ledger.getBalance(`liabilities:customers:${user}`);
  return {
    posted: b.posted.toString(),
    held: b.held.toString(),
    available: b.available.toString(),
  };
}

describe('two-phase holds', () => {
  test('a hold reduces available at once and posted not at all', async () => {
    await fund(ledger, 'h1', '10');
    await hold('h1', '3.333333333333333333');
    expect(await balanceOf('h1')).toEqual({
      posted: '10',
      held: '3.333333333333333333',
      available: '6.666666666666666667',
    });
  });

  test('posting less than the hold charges the actual amount and releases the rest', async () => {
    await fund(ledger, 'h2', '10');
    const { holdId } = await hold('h2', '4');
    const result = await ledger.postHold({ holdId, amount: '0.000000000001' });
    expect(result.postedAmount.toString()).toBe('0.000000000001');
    expect(await balanceOf('h2')).toEqual({
      posted: '9.999999999999',
      held: '0',
      available: '9.999999999999',
    });
    const revenue = await ledger.getBalance('revenue:usage');
    expect(revenue.held.toString()).toBe('0');
    const entry = await ledger.getEntry(result.entryId!);
    expect(entry?.holdId).toBe(holdId);
    expect(entry?.postings.map((p) => [p.account, p.amount.toString()])).toEqual([
      ['liabilities:customers:h2', '0.000000000001'],
      ['revenue:usage', '-0.000000000001'],
    ]);
  });

  test('posting exactly the hold charges all of it', async () => {
    await fund(ledger, 'h3', '2');
    const { holdId } = await hold('h3', '2');
    await ledger.postHold({ holdId, amount: '2' });
    expect(await balanceOf('h3')).toEqual({ posted: '0', held: '0', available: '0' });
  });

  test('posting zero charges nothing and writes no entry', async () => {
    await fund(ledger, 'h4', '2');
    const { holdId } = await hold('h4', '1');
    const result = await ledger.postHold({ holdId, amount: '0' });
    expect(result.entryId).toBeNull();
    expect(await balanceOf('h4')).toEqual({ posted: '2', held: '0', available: '2' });
    expect((await ledger.getHold(holdId))?.status).toBe('posted');
  });

  test('posting more than the hold is refused unless allowed', async () => {
    await fund(ledger, 'h5', '5');
    const { holdId } = await hold('h5', '1');
    await expect(ledger.postHold({ holdId, amount: '1.5' })).rejects.toThrow(HoldExceededError);
    expect((await ledger.getHold(holdId))?.status).toBe('pending');
  });

  test('an allowed excess comes from the available balance when it can', async () => {
    await fund(ledger, 'h6', '5');
    const { holdId } = await hold('h6', '1');
    const result = await ledger.postHold({
      holdId,
      amount: '1.5',
      allowOverHold: true,
      shortfallAccount: 'assets:receivables:customers:h6',
    });
    expect(result.shortfall.toString()).toBe('0');
    expect(await balanceOf('h6')).toEqual({ posted: '3.5', held: '0', available: '3.5' });
  });

  test('an excess the balance cannot cover is booked as a shortfall, never dropped', async () => {
    await fund(ledger, 'h7', '1');
    const { holdId } = await hold('h7', '0.8');
    const result = await ledger.postHold({
      holdId,
      amount: '1.25',
      allowOverHold: true,
      shortfallAccount: 'assets:receivables:customers:h7',
    });
    expect(result.shortfall.toString()).toBe('0.25');
    expect(await balanceOf('h7')).toEqual({ posted: '0', held: '0', available: '0' });
    const receivable = await ledger.getBalance('assets:receivables:customers:h7');
    expect(receivable.posted.toString()).toBe('0.25');
    const entry = await ledger.getEntry(result.entryId!);
    expect(entry?.postings.map((p) => [p.account, p.amount.toString()])).toEqual([
      ['liabilities:customers:h7', '1'],
      ['assets:receivables:customers:h7', '0.25'],
      ['revenue:usage', '-1.25'],
    ]);
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a hold is resolved once: posting again with the same amount replays, anything else is refused', async () => {
    await fund(ledger, 'h8', '3');
    const { holdId } = await hold('h8', '1');
    const first = await ledger.postHold({ holdId, amount: '0.5' });
    const before = await ledgerRowCounts(database.pool);
    const again = await ledger.postHold({ holdId, amount: '0.5' });
    expect(again).toMatchObject({ entryId: first.entryId, replayed: true });
    await expect(ledger.postHold({ holdId, amount: '0.6' })).rejects.toThrow(HoldNotPendingError);
    await expect(ledger.voidHold({ holdId })).rejects.toThrow(HoldNotPendingError);
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test('voiding releases the whole hold and posts nothing; voiding twice is harmless', async () => {
    await fund(ledger, 'h9', '3');
    const { holdId } = await hold('h9', '2');
    await ledger.voidHold({ holdId });
    expect(await ledger.voidHold({ holdId })).toEqual({ holdId, replayed: true });
    expect(await balanceOf('h9')).toEqual({ posted: '3', held: '0', available: '3' });
    await expect(ledger.postHold({ holdId, amount: '1' })).rejects.toThrow(HoldNotPendingError);
  });

  test('a hold past its deadline expires, releasing what it held; it cannot be posted after', async () => {
    await fund(ledger, 'h10', '3');
    const past = new Date(Date.now() - 1000);
    const overdue = await hold('h10', '2', { expiresAt: past });
    const live = await hold('h10', '0.5', { expiresAt: new Date(Date.now() + 3_600_000) });
    await expect(ledger.postHold({ holdId: overdue.holdId, amount: '1' })).rejects.toThrow(
      /expired/,
    );
    const { expiredHoldIds } = await ledger.expireHolds();
    expect(expiredHoldIds).toContain(overdue.holdId);
    expect(expiredHoldIds).not.toContain(live.holdId);
    expect(await balanceOf('h10')).toEqual({ posted: '3', held: '0.5', available: '2.5' });
    expect((await ledger.getHold(overdue.holdId))?.status).toBe('expired');
    expect((await ledger.expireHolds()).expiredHoldIds).toEqual([]);
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a hold larger than the available balance is refused', async () => {
    await fund(ledger, 'h11', '1');
    await expect(hold('h11', '1.000000000000000001')).rejects.toThrow(InsufficientFundsError);
  });

  test('a hold takes the id its caller chose; a void by that id before it exists is "not found" and writes nothing', async () => {
    await fund(ledger, 'h12', '3');
    const holdId = '01966b6e-7d2a-7c3b-9a4e-5f6a7b8c9d0e';
    const before = await ledgerRowCounts(database.pool);
    const refused = ledger.voidHold({ holdId }).catch((e: unknown) => e);
    expect(await refused).toBeInstanceOf(HoldNotFoundError);
    // Not a lost write: nothing to settle.
    expect(ledger.isLostWrite(await refused)).toBe(false);
    expect(await ledger.settleLostWrite(await refused)).toBeNull();
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    expect(await hold('h12', '2', { holdId })).toEqual({ holdId, replayed: false });
    expect((await ledger.getHold(holdId))?.status).toBe('pending');
    await ledger.voidHold({ holdId });
    expect(await balanceOf('h12')).toEqual({ posted: '3', held: '0', available: '3' });
    await expect(hold('h12', '1', { holdId: 'not-a-uuid' })).rejects.toThrow(
      /holdId must be a UUID/,
    );
  });

  test('an unknown hold id is a clear error', async () => {
    await expect(
      ledger.postHold({ holdId: '01234567-89ab-7def-8123-456789abcdef', amount: '1' }),
    ).rejects.toThrow(HoldNotFoundError);
    await expect(ledger.voidHold({ holdId: 'not-a-uuid' })).rejects.toThrow(HoldNotFoundError);
  });
});

describe('reversals', () => {
  test('a reversal with a shortfall account covers an entry that credited the same customer on two lines', async () => {
    const { entryId } = await ledger.postEntry({
      kind: 'deposit',
      postings: [
        { account: 'expenses:promotions', amount: '10' },
        { account: 'liabilities:customers:r-split', amount: '-5' },
        { account: 'liabilities:customers:r-split', amount: '-5' },
      ],
    });
    // The customer spends 3 of the 10: the reversal takes the other 7 and books 3 as owed.
    await ledger.postEntry({
      kind: 'usage',
      postings: [
        { account: 'liabilities:customers:r-split', amount: '3' },
        { account: 'revenue:usage', amount: '-3' },
      ],
    });
    const result = await ledger.reverseEntry({
      entryId,
      shortfallAccounts: {
        'liabilities:customers:r-split': 'assets:receivables:customers:r-split',
      },
    });
    expect(result.shortfalls).toEqual({ 'assets:receivables:customers:r-split': '3' });
    expect((await balanceOf('r-split')).posted).toBe('0');
    const receivable = await ledger.getBalance('assets:receivables:customers:r-split');
    expect(receivable.posted.toString()).toBe('3');
  });

  test('a reversal mirrors the entry, links to it, and happens once', async () => {
    await fund(ledger, 'r1', '10');
    const { entryId } = await ledger.postEntry({
      kind: 'adjustment',
      postings: [
        { account: 'expenses:promotions', amount: '4' },
        { account: 'liabilities:customers:r1', amount: '-4' },
      ],
    });
    const reversal = await ledger.reverseEntry({ entryId });
    const entry = await ledger.getEntry(reversal.entryId);
    expect(entry?.reversesEntryId).toBe(entryId);
    expect(entry?.postings.map((p) => [p.account, p.amount.toString()])).toEqual([
      ['expenses:promotions', '-4'],
      ['liabilities:customers:r1', '4'],
    ]);
    expect((await balanceOf('r1')).posted).toBe('10');
    await expect(ledger.reverseEntry({ entryId })).rejects.toThrow(/already reversed/);
  });

  test('reversing a deposit the customer already spent books the shortfall to a receivable', async () => {
    const { entryId } = await ledger.postEntry({
      kind: 'deposit',
      postings: [
        { account: 'assets:custody:tron:USDT:Trev', amount: '100', currency: 'USDT' },
        { account: 'equity:trading:USDT', amount: '-100' },
        { account: 'equity:trading:USD', amount: '100' },
        { account: 'liabilities:customers:r2', amount: '-100' },
      ],
    });
    const { holdId } = await hold('r2', '70');
    await ledger.postHold({ holdId, amount: '70' });
    await expect(ledger.reverseEntry({ entryId })).rejects.toThrow(InsufficientFundsError);
    const reversal = await ledger.reverseEntry({
      entryId,
      shortfallAccounts: { 'liabilities:customers:r2': 'assets:receivables:customers:r2' },
    });
    expect(reversal.shortfalls).toEqual({ 'assets:receivables:customers:r2': '70' });
    expect(await balanceOf('r2')).toEqual({ posted: '0', held: '0', available: '0' });
    expect((await ledger.getBalance('assets:custody:tron:USDT:Trev')).posted.toString()).toBe('0');
    expect((await ledger.getBalance('assets:receivables:customers:r2')).posted.toString()).toBe(
      '70',
    );
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a credit that repays a receivable takes at most what is owed, at most amountMax, at most the credit; it replays under its key', async () => {
    const receivable = (user: string) => `assets:receivables:customers:${user}`;
    const owe = async (user: string, amount: string) => {
      await fund(ledger, user, '1');
      const { holdId } = await hold(user, '1');
      await ledger.postHold({
        holdId,
        amount: new Decimal(amount).add(1).toString(),
        allowOverHold: true,
        shortfallAccount: receivable(user),
      });
    };
    // As the watcher does: in a transaction of the caller's, which locks the receivable.
    const inTransaction = async (params: PostEntryParameters) => {
      const client = await database.pool.connect();
      try {
        await client.query('begin');
        const [result] = await ledger.within(client).postEntries([params]);
        if (result instanceof LedgerError) throw result;
        await client.query('commit');
        return result!;
      } catch (error) {
        await client.query('rollback');
        throw error;
      } finally {
        client.release();
      }
    };
    const credit = (user: string, amount: string, amountMax: string, key?: string) =>
      inTransaction({
        kind: 'deposit',
        ...(key ? { idempotencyKey: key } : {}),
        postings: [
          { account: `assets:custody:tron:USDT:T${user}`, amount, currency: 'USDT' },
          { account: 'equity:trading:USDT', amount: `-${amount}` },
          { account: 'equity:trading:USD', amount },
          { account: `liabilities:customers:${user}`, amount: `-${amount}` },
        ],
        repayReceivable: {
          from: `liabilities:customers:${user}`,
          receivable: receivable(user),
          amountMax,
        },
      });
    const lines = async (entryId: string) =>
      (await ledger.getEntry(entryId))?.postings
        .slice(2)
        .map((p) => [p.account, p.amount.toString()]);

    // Owes 40, may repay up to 70: repays 40, credits 60.
    await owe('r3', '40');
    const first = await credit('r3', '100', '70', 'r3-credit');
    expect(first).toMatchObject({ receivableRepaid: '40', replayed: false });
    expect(await lines(first.entryId)).toEqual([
      ['equity:trading:USD', '100'],
      ['liabilities:customers:r3', '-60'],
      [receivable('r3'), '-40'],
    ]);
    expect((await ledger.getEntry(first.entryId))?.metadata).toEqual({
      receivableRepaid: { account: receivable('r3'), amount: '40', amountMax: '70' },
    });
    const rows = await ledgerRowCounts(database.pool);
    expect(await credit('r3', '100', '70', 'r3-credit')).toEqual({
      entryId: first.entryId,
      receivableRepaid: '40',
      replayed: true,
    });
    expect(await ledgerRowCounts(database.pool)).toEqual(rows);
    await expect(credit('r3', '100', '30', 'r3-credit')).rejects.toThrow(/idempotency/i);
    // Nothing owed any more: nothing repaid, the customer gets it all.
    const second = await credit('r3', '5', '70');
    expect(second.receivableRepaid).toBe('0');
    expect(await lines(second.entryId)).toEqual([
      ['equity:trading:USD', '5'],
      ['liabilities:customers:r3', '-5'],
    ]);
    expect(await balanceOf('r3')).toEqual({ posted: '65', held: '0', available: '65' });
    expect((await ledger.getBalance(receivable('r3'))).posted.toString()).toBe('0');

    // Owes 50, may repay 30 (what this deposit's reversal booked): 20 stays owed.
    await owe('r4', '50');
    const capped = await credit('r4', '100', '30');
    expect(await lines(capped.entryId)).toEqual([
      ['equity:trading:USD', '100'],
      ['liabilities:customers:r4', '-70'],
      [receivable('r4'), '-30'],
    ]);
    // Owes 20, the credit is 15: all of it repays, no customer line.
    const small = await credit('r4', '15', '30');
    expect(await lines(small.entryId)).toEqual([
      ['equity:trading:USD', '15'],
      [receivable('r4'), '-15'],
    ]);
    expect(await balanceOf('r4')).toEqual({ posted: '70', held: '0', available: '70' });
    expect((await ledger.getBalance(receivable('r4'))).posted.toString()).toBe('5');

    // Through the batcher, which would decide it on totals nothing locks: refused.
    await expect(
      ledger.postEntry({
        kind: 'deposit',
        postings: [
          { account: 'expenses:promotions', amount: '1' },
          { account: 'liabilities:customers:r4', amount: '-1' },
        ],
        repayReceivable: {
          from: 'liabilities:customers:r4',
          receivable: receivable('r4'),
          amountMax: '1',
        },
      }),
    ).rejects.toThrow(/ledger\.within/);
    // `from` must be the account the entry credits.
    await expect(
      inTransaction({
        kind: 'deposit',
        postings: [
          { account: 'liabilities:customers:r4', amount: '1' },
          { account: 'expenses:promotions', amount: '-1' },
        ],
        repayReceivable: {
          from: 'liabilities:customers:r4',
          receivable: receivable('r4'),
          amountMax: '1',
        },
      }),
    ).rejects.toThrow(InvalidEntryError);
    expect(await ledger.checkBalances()).toEqual([]);
  });
});

/**
 * A ledger plans from the totals it remembers from its own earlier batches. Another writer
 * (the watcher crediting a deposit inside its own transaction, another http process) can
 * have topped an account up since: a shortfall (part of a charge booked to the customer's
 * receivable because their balance cannot cover it) must be decided on the database's
 * totals, never on remembered ones, or the customer is charged too little and owes a debt
 * they do not have.
 */
describe('totals remembered from earlier batches', () => {
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
});

describe('holds remembered from earlier batches, resolved by another process', () => {
  const customer = (user: string) => `liabilities:customers:${user}`;

  test('voiding or posting a hold another process voided meanwhile answers as the database says', async () => {
    const other = await openLedger(database.newPool(2));
    await fund(ledger, 'rh1', '10');
    // This ledger creates both holds and so remembers them, pending.
    const { holdId: voided } = await ledger.createHold({
      debitAccount: customer('rh1'),
      creditAccount: 'revenue:usage',
      amount: '4',
    });
    const { holdId: posted } = await ledger.createHold({
      debitAccount: customer('rh1'),
      creditAccount: 'revenue:usage',
      amount: '3',
    });
    // Another process (the gateway instance that made the call, say) resolves both.
    await other.voidHold({ holdId: voided });
    await other.postHold({ holdId: posted, amount: '1' });
    await other.close();
    // A credit through this ledger reads the account afresh (the other account is new to it):
    // it now remembers nothing held on the account, but still both holds as pending.
    await ledger.postEntry({
      kind: 'adjustment',
      postings: [
        { account: 'revenue:usage:rh1', amount: '1' },
        { account: customer('rh1'), amount: '-1' },
      ],
    });

    expect(await ledger.voidHold({ holdId: voided })).toEqual({ holdId: voided, replayed: true });
    const again = await ledger.postHold({ holdId: posted, amount: '1' });
    expect([again.replayed, again.postedAmount.toString()]).toEqual([true, '1']);
    await expect(ledger.postHold({ holdId: voided, amount: '1' })).rejects.toBeInstanceOf(
      HoldNotPendingError,
    );
    expect(await balanceOf('rh1')).toEqual({ posted: '10', held: '0', available: '10' });
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a hold another process expired, its account not read since: void and post answer hold_not_pending (expired), nothing written', async () => {
    const other = await openLedger(database.newPool(2));
    await fund(ledger, 'rh3', '5');
    // This ledger creates the holds and remembers them, and the account, as they were then.
    const { rows } = await database.pool.query<{ past: Date }>(
      `select now() - interval '1 second' as past`,
    );
    const overdue = async (amount: string) =>
      (
        await ledger.createHold({
          debitAccount: customer('rh3'),
          creditAccount: 'revenue:usage',
          amount,
          expiresAt: rows[0]!.past,
        })
      ).holdId;
    const [voided, posted] = [await overdue('1'), await overdue('2')];
    // The cron job of another process expires them.
    expect((await other.expireHolds({ limit: 100 })).expiredHoldIds).toEqual(
      expect.arrayContaining([voided, posted]),
    );
    await other.close();
    const before = await ledgerRowCounts(database.pool);

    for (const attempt of [
      () => ledger.voidHold({ holdId: voided }),
      () => ledger.postHold({ holdId: posted, amount: '1' }),
      () => ledger.voidHold({ holdId: posted }),
    ])
      await expect(attempt()).rejects.toMatchObject({
        code: 'hold_not_pending',
        status: 'expired',
      });
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    expect(await balanceOf('rh3')).toEqual({ posted: '5', held: '0', available: '5' });
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test("a hold is settled by the database's clock: this machine's clock running ahead does not call it expired", async () => {
    await fund(ledger, 'rh2', '10');
    const { rows } = await database.pool.query<{ deadline: Date }>(
      `select now() + interval '60 seconds' as deadline`,
    );
    const { holdId } = await ledger.createHold({
      debitAccount: customer('rh2'),
      creditAccount: 'revenue:usage',
      amount: '2',
      expiresAt: rows[0]!.deadline,
    });
    // This machine's clock is two minutes ahead of the database's: by it, the hold (which this
    // ledger remembers) is past its deadline; by the database's, a minute is left.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 120_000 });
    try {
      const result = await ledger.postHold({ holdId, amount: '1.5' });
      expect([result.replayed, result.postedAmount.toString()]).toEqual([false, '1.5']);
    } finally {
      vi.useRealTimers();
    }
    expect(await balanceOf('rh2')).toEqual({ posted: '8.5', held: '0', available: '8.5' });
    expect((await ledger.getHold(holdId))?.status).toBe('posted');
  });

  test("this machine's clock running behind does not let a hold past its deadline (by the database's clock) be posted", async () => {
    await fund(ledger, 'rh4', '10');
    const { rows } = await database.pool.query<{ deadline: Date }>(
      `select now() + interval '300 milliseconds' as deadline`,
    );
    const deadline = rows[0]!.deadline;
    const { holdId } = await ledger.createHold({
      debitAccount: customer('rh4'),
      creditAccount: 'revenue:usage',
      amount: '2',
      expiresAt: deadline,
    });
    const giveUpAt = Date.now() + 30_000;
    for (;;) {
      const past = await database.pool.query<{ past: boolean }>(
        `select clock_timestamp() > $1::timestamptz as past`,
        [deadline],
      );
      if (past.rows[0]!.past) break;
      if (Date.now() > giveUpAt) throw new Error('the deadline never passed');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // By this machine's clock, two minutes behind, the hold (which this ledger remembers,
    // pending) still has time; by the database's, its deadline has passed.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() - 120_000 });
    try {
      await expect(ledger.postHold({ holdId, amount: '1.5' })).rejects.toMatchObject({
        code: 'hold_not_pending',
        status: 'expired',
      });
    } finally {
      vi.useRealTimers();
    }
    expect(await balanceOf('rh4')).toEqual({ posted: '10', held: '2', available: '8' });
    expect((await ledger.expireHolds()).expiredHoldIds).toContain(holdId);
    expect(await balanceOf('rh4')).toEqual({ posted: '10', held: '0', available: '10' });
  });
});
