import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  IdempotencyConflictError,
  InsufficientFundsError,
  UnbalancedEntryError,
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

describe('law 1: every entry balances per currency', () => {
  test('the ledger refuses unbalanced postings and writes nothing', async () => {
    await fund(ledger, 'law1', '10');
    const before = await ledgerRowCounts(database.pool);
    await expect(
      ledger.postEntry({
        kind: 'adjustment',
        postings: [
          { account: 'expenses:promotions', amount: '5' },
          { account: 'liabilities:customers:law1', amount: '-4.99' },
        ],
      }),
    ).rejects.toThrow(UnbalancedEntryError);
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test('balanced in one currency is not enough: each currency balances on its own', async () => {
    await expect(
      ledger.postEntry({
        kind: 'deposit',
        postings: [
          { account: 'assets:custody:tron:USDT:Tlaw1', amount: '5', currency: 'USDT' },
          { account: 'liabilities:customers:law1', amount: '-5' },
        ],
      }),
    ).rejects.toThrow(/do not balance/);
  });

  const forge = async (postings: Array<[string, string]>) => {
    const { rows } = await database.pool.query<{ id: string; code: string }>(
      `select id, code from ledger_accounts where code in ('expenses:promotions', 'liabilities:customers:law1')`,
    );
    const id = (code: string) => rows.find((r) => r.code === code)!.id;
    return database.pool.query(
      `with e as (insert into ledger_entries (id, kind) values ('00000000-0000-7000-8000-000000000001', 'forged'))
       insert into ledger_postings (entry_id, line, account_id, currency, amount, account_version, balance_after)
       select '00000000-0000-7000-8000-000000000001', n, a, 'USD', m, 999, 0
         from unnest($1::bigint[], $2::numeric[]) with ordinality as t(a, m, n)`,
      [postings.map(([code]) => id(code)), postings.map(([, amount]) => amount)],
    );
  };

  test('the database itself refuses an unbalanced entry written around the ledger code', async () => {
    const before = await ledgerRowCounts(database.pool);
    await expect(
      forge([
        ['expenses:promotions', '7'],
        ['liabilities:customers:law1', '-6'],
      ]),
    ).rejects.toThrow(/does not balance/);
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test('the database refuses an entry with fewer than two postings', async () => {
    await expect(forge([['expenses:promotions', '7']])).rejects.toThrow(/does not balance/);
    await expect(
      database.pool.query(
        `insert into ledger_entries (id, kind) values ('00000000-0000-7000-8000-000000000002', 'forged')`,
      ),
    ).rejects.toThrow(/has 0 postings/);
  });
});

describe('references the database checks itself', () => {
  test('a posting naming an account that does not exist, or of another currency, is refused', async () => {
    await fund(ledger, 'refs', '1');
    const { rows } = await database.pool.query<{ id: string }>(
      `select id from ledger_accounts where code = 'liabilities:customers:refs'`,
    );
    const before = await ledgerRowCounts(database.pool);
    const forged = (accountId: string, currency: string) =>
      database.pool.query(
        `with e as (insert into ledger_entries (id, kind) values ('00000000-0000-7000-8000-0000000000f1', 'forged'))
         insert into ledger_postings (entry_id, line, account_id, currency, amount, account_version, balance_after)
         values ('00000000-0000-7000-8000-0000000000f1', 1, $1, $2, 1, 999, 0),
                ('00000000-0000-7000-8000-0000000000f1', 2, $1, $2, -1, 1000, 0)`,
        [accountId, currency],
      );
    await expect(forged('999999999', 'USD')).rejects.toThrow(
      /a posting names no account 999999999 in USD/,
    );
    await expect(forged(rows[0]!.id, 'USDT')).rejects.toThrow(
      new RegExp(`a posting names no account ${rows[0]!.id} in USDT`),
    );
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test('postings naming an entry that does not exist are refused, though they balance', async () => {
    const { rows } = await database.pool.query<{ id: string }>(
      `select id from ledger_accounts where code = 'liabilities:customers:refs'`,
    );
    const before = await ledgerRowCounts(database.pool);
    await expect(
      database.pool.query(
        `insert into ledger_postings (entry_id, line, account_id, currency, amount, account_version, balance_after)
         values ('00000000-0000-7000-8000-0000000000f2', 1, $1, 'USD', 1, 999, 0),
                ('00000000-0000-7000-8000-0000000000f2', 2, $1, 'USD', -1, 1000, 0)`,
        [rows[0]!.id],
      ),
    ).rejects.toThrow(
      /a posting names entry 00000000-0000-7000-8000-0000000000f2, which does not exist/,
    );
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test('a hold naming an account that does not exist, or of another currency, is refused', async () => {
    await fund(ledger, 'refsh', '1');
    const { rows } = await database.pool.query<{ id: string; code: string }>(
      `select id, code from ledger_accounts where code in ('liabilities:customers:refsh', 'expenses:promotions')`,
    );
    const id = (code: string) => rows.find((r) => r.code === code)!.id;
    const before = await ledgerRowCounts(database.pool);
    const forged = (debit: string, credit: string, currency: string) =>
      database.pool.query(
        `insert into ledger_holds (id, debit_account_id, credit_account_id, currency, amount)
         values ('00000000-0000-7000-8000-0000000000f3', $1, $2, $3, 1)`,
        [debit, credit, currency],
      );
    await expect(forged(id('liabilities:customers:refsh'), '999999999', 'USD')).rejects.toThrow(
      /a hold names no account 999999999 in USD/,
    );
    await expect(forged('999999998', id('expenses:promotions'), 'USD')).rejects.toThrow(
      /a hold names no account 999999998 in USD/,
    );
    await expect(
      forged(id('liabilities:customers:refsh'), id('expenses:promotions'), 'USDT'),
    ).rejects.toThrow(/a hold names no account \d+ in USDT/);
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test('a hold resolved with an entry that does not exist is refused', async () => {
    await fund(ledger, 'refsr', '1');
    const { holdId } = await ledger.createHold({
      debitAccount: 'liabilities:customers:refsr',
      creditAccount: 'revenue:usage',
      amount: '1',
    });
    await expect(
      database.pool.query(
        `update ledger_holds set status = 'posted', posted_amount = 1, resolved_at = now(),
           entry_id = '00000000-0000-7000-8000-0000000000f4' where id = $1`,
        [holdId],
      ),
    ).rejects.toThrow(new RegExp(`hold ${holdId} names an entry that does not exist`));
    const { rows } = await database.pool.query<{ status: string }>(
      `select status from ledger_holds where id = $1`,
      [holdId],
    );
    expect(rows[0]!.status).toBe('pending');
  });

  test('accounts are never deleted', async () => {
    await expect(
      database.pool.query(`delete from ledger_accounts where code = 'liabilities:customers:refs'`),
    ).rejects.toThrow(/append-only/);
  });
});

describe('law 2: entries and postings are append-only', () => {
  for (const statement of [
    `update ledger_postings set amount = amount * 2`,
    `delete from ledger_postings`,
    `update ledger_entries set description = 'edited'`,
    `delete from ledger_entries`,
    `truncate ledger_postings cascade`,
    `truncate ledger_entries cascade`,
    `update ledger_idempotency set result = '{}'`,
    `delete from ledger_holds`,
  ]) {
    test(`the database refuses: ${statement}`, async () => {
      await fund(ledger, 'law2', '1');
      const before = await ledgerRowCounts(database.pool);
      await expect(database.pool.query(statement)).rejects.toThrow(/append-only/);
      expect(await ledgerRowCounts(database.pool)).toEqual(before);
    });
  }

  test('a resolved hold cannot be changed again', async () => {
    await fund(ledger, 'law2h', '3');
    const { holdId } = await ledger.createHold({
      debitAccount: 'liabilities:customers:law2h',
      creditAccount: 'revenue:usage',
      amount: '1',
    });
    await ledger.postHold({ holdId, amount: '1' });
    await expect(
      database.pool.query(`update ledger_holds set status = 'voided' where id = $1`, [holdId]),
    ).rejects.toThrow(/only a pending hold/);
    await expect(
      database.pool.query(`update ledger_holds set amount = 100 where id = $1`, [holdId]),
    ).rejects.toThrow(/only a pending hold/);
  });
});

describe('law 3: a cached balance equals the sum of its postings and live holds', () => {
  test('after a mixed history the check finds nothing', async () => {
    await fund(ledger, 'law3', '100');
    const a = await ledger.createHold({
      debitAccount: 'liabilities:customers:law3',
      creditAccount: 'revenue:usage',
      amount: '10',
    });
    const b = await ledger.createHold({
      debitAccount: 'liabilities:customers:law3',
      creditAccount: 'revenue:usage',
      amount: '7',
    });
    await ledger.createHold({
      debitAccount: 'liabilities:customers:law3',
      creditAccount: 'revenue:usage',
      amount: '1.5',
    });
    await ledger.postHold({ holdId: a.holdId, amount: '3.25' });
    await ledger.voidHold({ holdId: b.holdId });
    expect(await ledger.checkBalances()).toEqual([]);
    const balance = await ledger.getBalance('liabilities:customers:law3');
    expect([balance.posted, balance.held, balance.available].map(String)).toEqual([
      '96.75',
      '1.5',
      '95.25',
    ]);
  });

  test('the check names an account whose cached total was altered behind the ledger', async () => {
    await fund(ledger, 'law3x', '20');
    await database.pool.query(
      `update ledger_accounts set credits_posted = credits_posted + 0.000001 where code = 'liabilities:customers:law3x'`,
    );
    const mismatches = await ledger.checkBalances();
    expect(mismatches).toEqual([
      {
        account: 'liabilities:customers:law3x',
        currency: 'USD',
        field: 'credits_posted',
        cached: '20.000001',
        recomputed: '20',
      },
    ]);
    await database.pool.query(
      `update ledger_accounts set credits_posted = credits_posted - 0.000001 where code = 'liabilities:customers:law3x'`,
    );
    expect(await ledger.checkBalances()).toEqual([]);
  });
});

describe('law 4: a no-overdraft account never goes below zero', () => {
  test('a debit larger than the available balance is refused, nothing written', async () => {
    await fund(ledger, 'law4', '5');
    await ledger.createHold({
      debitAccount: 'liabilities:customers:law4',
      creditAccount: 'revenue:usage',
      amount: '4',
    });
    const before = await ledgerRowCounts(database.pool);
    await expect(
      ledger.postEntry({
        kind: 'adjustment',
        postings: [
          { account: 'liabilities:customers:law4', amount: '1.000000000000000001' },
          { account: 'expenses:promotions', amount: '-1.000000000000000001' },
        ],
      }),
    ).rejects.toThrow(InsufficientFundsError);
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test('the database constraint holds even for writes around the ledger code', async () => {
    await fund(ledger, 'law4db', '5');
    await expect(
      database.pool.query(
        `update ledger_accounts set debits_posted = 6 where code = 'liabilities:customers:law4db'`,
      ),
    ).rejects.toThrow(/ledger_accounts_no_negative/);
  });
});

describe('law 5: idempotency', () => {
  const request = (amount: string) => ({
    kind: 'adjustment',
    idempotencyKey: 'law5-key',
    postings: [
      { account: 'expenses:promotions', amount },
      { account: 'liabilities:customers:law5', amount: `-${amount}` },
    ],
  });

  test('the same key and request returns the first result and writes nothing', async () => {
    const first = await ledger.postEntry(request('2.5'));
    const before = await ledgerRowCounts(database.pool);
    const again = await ledger.postEntry(request('2.50'));
    expect(again).toEqual({ entryId: first.entryId, replayed: true });
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    expect(String((await ledger.getBalance('liabilities:customers:law5')).posted)).toBe('2.5');
  });

  test('the same key with a different request is a conflict', async () => {
    const before = await ledgerRowCounts(database.pool);
    await expect(ledger.postEntry(request('3'))).rejects.toThrow(IdempotencyConflictError);
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });

  test('the same key sent at once from separate connections writes once', async () => {
    const ledgers = await Promise.all(
      Array.from({ length: 8 }, () => openLedger(database.newPool(2))),
    );
    const results = await Promise.all(
      ledgers.map((l) =>
        l.postEntry({
          kind: 'adjustment',
          idempotencyKey: 'law5-race',
          postings: [
            { account: 'expenses:promotions', amount: '1' },
            { account: 'liabilities:customers:law5race', amount: '-1' },
          ],
        }),
      ),
    );
    expect(new Set(results.map((r) => r.entryId)).size).toBe(1);
    expect(results.filter((r) => !r.replayed)).toHaveLength(1);
    expect(String((await ledger.getBalance('liabilities:customers:law5race')).posted)).toBe('1');
  });
});
