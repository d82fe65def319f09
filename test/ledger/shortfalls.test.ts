import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  DEFAULT_CHART,
  type AccountTemplate,
  type PostingInput,
  type PostgresLedger,
} from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, ledgerRowCounts, openLedger } from '../support/ledger.js';
import { expectLedgerLaws, outcomeOf } from './lawChecks.js';

/**
 * What a shortfall books: a reversal's (the part of it a no-overdraft account cannot cover,
 * after netting the account's own lines) and an over-hold posting's (in the hold's currency).
 */

/** The default chart, plus a USDT wallet that may not go negative and a receivable in any currency. */
const CHART: AccountTemplate[] = [
  ...DEFAULT_CHART,
  {
    pattern: /^liabilities:wallets:(?<user>[a-z0-9-]+)$/,
    type: 'liability',
    currency: { fixed: 'USDT' },
    noNegative: true,
  },
  {
    pattern: /^assets:owed:(?<user>[a-z0-9-]+)$/,
    type: 'asset',
    currency: null,
    noNegative: false,
  },
];

let database: TestDatabase;
/** Two processes: `b` remembers none of the holds `a` creates. */
let a: PostgresLedger;
let b: PostgresLedger;

beforeAll(async () => {
  database = await createTestDatabase();
  a = await openLedger(database.newPool(4), { chart: CHART });
  b = await openLedger(database.newPool(4), { chart: CHART });
});
afterAll(async () => {
  await Promise.all([a.close(), b.close()]);
  await database.drop();
});

const customer = (user: string) => `liabilities:customers:${user}`;
const receivable = (user: string) => `assets:receivables:customers:${user}`;
const charge = (user: string, amount: string) =>
  a.postEntry({
    kind: 'usage',
    postings: [
      { account: customer(user), amount },
      { account: 'revenue:usage', amount: `-${amount}` },
    ],
  });
const available = async (account: string) => (await a.getBalance(account)).available.toString();
const posted = async (account: string) => (await a.getBalance(account)).posted.toString();

describe('a reversal with a shortfall account', () => {
  /**
   * An entry that credits the customer 10 and debits them 4 on two lines (as a hand-made entry
   * may: a credit with a fee taken off it); they spend 5 of the 6 it left them. Reversed, the
   * customer gives back 10 and gets back 4: 6 net, of which they have 1, so 5 is short.
   */
  test.each([
    { order: 'credit line first', lines: ['-10', '4'] },
    { order: 'debit line first', lines: ['4', '-10'] },
  ])(
    'an entry with a debit and a credit line on the customer ($order): only what the customer overdrew is booked',
    async ({ order, lines }) => {
      const user = `net-${order.split(' ')[0]}`;
      const postings: PostingInput[] = [
        ...lines.map((amount) => ({ account: customer(user), amount })),
        { account: 'expenses:promotions', amount: '6' },
      ];
      const { entryId } = await a.postEntry({ kind: 'manual', postings });
      await charge(user, '5');
      expect(await available(customer(user))).toBe('1');

      const reversal = await a.reverseEntry({
        entryId,
        shortfallAccounts: { [customer(user)]: receivable(user) },
      });
      expect(reversal.shortfalls).toEqual({ [receivable(user)]: '5' });
      expect(await posted(receivable(user))).toBe('5');
      expect(await available(customer(user))).toBe('0');
      await expectLedgerLaws(a, database.pool);
    },
  );

  test('the customer covers the net: nothing is booked to the shortfall account', async () => {
    const user = 'net-covered';
    await fund(a, user, '3');
    const { entryId } = await a.postEntry({
      kind: 'manual',
      postings: [
        { account: customer(user), amount: '-10' },
        { account: customer(user), amount: '4' },
        { account: 'expenses:promotions', amount: '6' },
      ],
    });
    await charge(user, '2'); // 7 left: the reversal's net 6 is covered
    const reversal = await a.reverseEntry({
      entryId,
      shortfallAccounts: { [customer(user)]: receivable(user) },
    });
    expect(reversal.shortfalls).toEqual({});
    expect(await available(customer(user))).toBe('1');
    expect(await posted(receivable(user))).toBe('0');
    await expectLedgerLaws(a, database.pool);
  });

  test('a deposit-shaped entry (one line to the customer): what was spent is booked, as before', async () => {
    const user = 'one-line';
    const { entryId } = await a.postEntry({
      kind: 'deposit',
      postings: [
        { account: 'assets:custody:tron:USDT:tdep', amount: '100', currency: 'USDT' },
        { account: 'equity:trading:USDT', amount: '-100' },
        { account: 'equity:trading:USD', amount: '100' },
        { account: customer(user), amount: '-100' },
      ],
    });
    await charge(user, '70');
    const reversal = await a.reverseEntry({
      entryId,
      shortfallAccounts: { [customer(user)]: receivable(user) },
    });
    expect(reversal.shortfalls).toEqual({ [receivable(user)]: '70' });
    expect(await available(customer(user))).toBe('0');
    await expectLedgerLaws(a, database.pool);
  });
});

describe('an over-hold posting with a shortfall account', () => {
  const wallet = (user: string) => `liabilities:wallets:${user}`;
  async function usdtHold(user: string, funded: string, amount: string) {
    await a.postEntry({
      kind: 'deposit',
      postings: [
        { account: 'assets:custody:tron:USDT:twallets', amount: funded, currency: 'USDT' },
        { account: wallet(user), amount: `-${funded}` },
      ],
    });
    return (
      await a.createHold({
        debitAccount: wallet(user),
        creditAccount: 'equity:trading:USDT',
        amount,
      })
    ).holdId;
  }

  test.each([
    { by: 'the process that created the hold', poster: () => a },
    { by: 'another process', poster: () => b },
  ])(
    'a USDT hold posted above what the wallet covers, by $by: the shortfall is booked in USDT to a new account',
    async ({ by, poster }) => {
      const user = by.startsWith('the') ? 'usdt-same' : 'usdt-other';
      const holdId = await usdtHold(user, '10', '4');
      const result = await poster().postHold({
        holdId,
        amount: '12.5',
        allowOverHold: true,
        shortfallAccount: `assets:owed:${user}`,
      });
      expect(result.shortfall.toString()).toBe('2.5');
      const owed = await a.getBalance(`assets:owed:${user}`);
      expect([owed.currency, owed.posted.toString()]).toEqual(['USDT', '2.5']);
      expect(await available(wallet(user))).toBe('0');
      await expectLedgerLaws(a, database.pool);
    },
  );

  test('a shortfall account the chart keeps in USD, for a USDT hold: a shortfall is refused and creates nothing; a posting the wallet covers goes through', async () => {
    const user = 'usdt-usd';
    const holdId = await usdtHold(user, '10', '4');
    const before = await ledgerRowCounts(database.pool);
    for (const ledger of [a, b])
      await expect(
        ledger.postHold({
          holdId,
          amount: '11',
          allowOverHold: true,
          shortfallAccount: receivable(user),
        }),
      ).rejects.toMatchObject({
        code: 'currency_mismatch',
        details: { account: receivable(user), accountCurrency: 'USD', currency: 'USDT' },
      });
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    expect(await outcomeOf(a.getBalance(receivable(user)))).toBe('unknown_account');

    const covered = await a.postHold({
      holdId,
      amount: '6',
      allowOverHold: true,
      shortfallAccount: receivable(user),
    });
    expect(covered.shortfall.toString()).toBe('0');
    expect(await outcomeOf(a.getBalance(receivable(user)))).toBe('unknown_account');
    expect(await available(wallet(user))).toBe('4');
    await expectLedgerLaws(a, database.pool);
  });

  test('a USD hold of the gateway, its new receivable: created in USD, the shortfall booked there', async () => {
    const user = 'usd-gateway';
    await fund(a, user, '1');
    const { holdId } = await a.createHold({
      debitAccount: customer(user),
      creditAccount: 'revenue:usage',
      amount: '1',
    });
    const result = await a.postHold({
      holdId,
      amount: '3',
      allowOverHold: true,
      shortfallAccount: receivable(user),
    });
    expect(result.shortfall.toString()).toBe('2');
    const owed = await a.getBalance(receivable(user));
    expect([owed.currency, owed.posted.toString()]).toEqual(['USD', '2']);
    await expectLedgerLaws(a, database.pool);
  });

  test('an unknown hold with a new shortfall account: refused, nothing created', async () => {
    const before = await ledgerRowCounts(database.pool);
    await expect(
      a.postHold({
        holdId: '01900000-0000-7000-8000-000000000000',
        amount: '3',
        allowOverHold: true,
        shortfallAccount: receivable('nobody'),
      }),
    ).rejects.toMatchObject({ code: 'hold_not_found' });
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  });
});
