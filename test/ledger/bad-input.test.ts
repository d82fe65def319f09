import { Decimal as DecimalJs } from 'decimal.js';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  CurrencyMismatchError,
  Decimal,
  InvalidAccountError,
  InvalidAmountError,
  InvalidEntryError,
  UnbalancedEntryError,
  UnknownAccountError,
  UnknownCurrencyError,
  type PostgresLedger,
} from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, ledgerRowCounts, openLedger } from '../support/ledger.js';

let database: TestDatabase;
let ledger: PostgresLedger;

beforeAll(async () => {
  database = await createTestDatabase();
  ledger = await openLedger(database.pool);
  await fund(ledger, 'bad', '10');
});
afterAll(async () => {
  await ledger.close();
  await database.drop();
});

const transfer = (amount: unknown, credit: unknown = undefined) => ({
  kind: 'adjustment',
  postings: [
    { account: 'expenses:promotions', amount: amount as string },
    { account: 'liabilities:customers:bad', amount: (credit ?? `-${String(amount)}`) as string },
  ],
});

const cases: Array<[string, () => Promise<unknown>, new (...args: never[]) => Error, RegExp]> = [
  [
    'a JSON number instead of a decimal string',
    () => ledger.postEntry(transfer(5, '-5')),
    InvalidAmountError,
    /not a JSON number/,
  ],
  ['NaN', () => ledger.postEntry(transfer('NaN')), InvalidAmountError, /not a decimal string/],
  ['1e999', () => ledger.postEntry(transfer('1e999')), InvalidAmountError, /not a decimal string/],
  [
    'a Decimal that is not finite',
    () => ledger.postEntry(transfer(new Decimal(Infinity), new Decimal(-Infinity))),
    InvalidAmountError,
    /finite/,
  ],
  [
    // Totals of such amounts would outgrow the Decimal's 100 digits and be rounded: a
    // posting's cents could vanish from its account's cached balance.
    'a Decimal of 1e99 (refused as a string too)',
    () => ledger.postEntry(transfer(new Decimal('1e99'), new Decimal('-1e99'))),
    InvalidAmountError,
    /more than 36 integer digits/,
  ],
  [
    'a Decimal with 37 integer digits (a string may have 36)',
    () => ledger.postEntry(transfer(new Decimal('1e36'), new Decimal('-1e36'))),
    InvalidAmountError,
    /more than 36 integer digits/,
  ],
  [
    'an empty string',
    () => ledger.postEntry(transfer('', '-1')),
    InvalidAmountError,
    /not a decimal string/,
  ],
  [
    'a hex string',
    () => ledger.postEntry(transfer('0x10', '-16')),
    InvalidAmountError,
    /not a decimal string/,
  ],
  ['a zero posting', () => ledger.postEntry(transfer('0', '0')), InvalidAmountError, /zero/],
  [
    'a negative hold',
    () =>
      ledger.createHold({
        debitAccount: 'liabilities:customers:bad',
        creditAccount: 'revenue:usage',
        amount: '-1',
      }),
    InvalidAmountError,
    /negative/,
  ],
  [
    'a zero hold',
    () =>
      ledger.createHold({
        debitAccount: 'liabilities:customers:bad',
        creditAccount: 'revenue:usage',
        amount: '0',
      }),
    InvalidAmountError,
    /zero/,
  ],
  [
    '19 fractional digits in USD',
    () => ledger.postEntry(transfer('0.0000000000000000001')),
    InvalidAmountError,
    /19 fractional digits; USD allows at most 18/,
  ],
  [
    '7 fractional digits in USDT',
    () =>
      ledger.postEntry({
        kind: 'deposit',
        postings: [
          { account: 'assets:custody:tron:USDT:Tbad', amount: '1.0000001', currency: 'USDT' },
          { account: 'equity:trading:USDT', amount: '-1.0000001' },
        ],
      }),
    InvalidAmountError,
    /USDT allows at most 6/,
  ],
  [
    'an unknown currency',
    () =>
      ledger.postEntry({
        kind: 'deposit',
        postings: [
          { account: 'assets:custody:tron:DOGE:Tbad', amount: '1', currency: 'DOGE' },
          { account: 'equity:trading:DOGE', amount: '-1' },
        ],
      }),
    UnknownCurrencyError,
    /unknown currency "DOGE"/,
  ],
  [
    'a currency that differs from the account',
    () =>
      ledger.postEntry({
        kind: 'x',
        postings: [
          { account: 'liabilities:customers:bad', amount: '1', currency: 'USDT' },
          { account: 'expenses:promotions', amount: '-1' },
        ],
      }),
    CurrencyMismatchError,
    /holds USD, not USDT/,
  ],
  [
    'unbalanced postings',
    () => ledger.postEntry(transfer('1', '-2')),
    UnbalancedEntryError,
    /do not balance/,
  ],
  [
    'one posting',
    () =>
      ledger.postEntry({ kind: 'x', postings: [{ account: 'expenses:promotions', amount: '1' }] }),
    InvalidEntryError,
    /at least two/,
  ],
  [
    'an account outside the chart',
    () =>
      ledger.postEntry({
        kind: 'x',
        postings: [
          { account: 'assets:cash', amount: '1' },
          { account: 'expenses:promotions', amount: '-1' },
        ],
      }),
    UnknownAccountError,
    /unknown account "assets:cash"/,
  ],
  [
    'a malformed account code',
    () =>
      ledger.postEntry({
        kind: 'x',
        postings: [
          { account: "liabilities:customers:1'; drop table users; --", amount: '1' },
          { account: 'expenses:promotions', amount: '-1' },
        ],
      }),
    InvalidAccountError,
    /not an account code/,
  ],
  [
    'an unknown account that must already exist',
    () =>
      ledger.postEntry({
        ...transfer('1'),
        createAccounts: false,
        postings: [
          { account: 'liabilities:customers:nobody', amount: '1' },
          { account: 'expenses:promotions', amount: '-1' },
        ],
      }),
    UnknownAccountError,
    /unknown account/,
  ],
  [
    'metadata with a BigInt (cannot be written as JSON)',
    () => ledger.postEntry({ ...transfer('1'), metadata: { tokens: 12n } }),
    InvalidEntryError,
    /metadata must be a JSON object/,
  ],
  [
    'metadata with a cycle',
    () => {
      const metadata: Record<string, unknown> = {};
      metadata['self'] = metadata;
      return ledger.postEntry({ ...transfer('1'), metadata });
    },
    InvalidEntryError,
    /metadata must be a JSON object/,
  ],
  [
    'metadata that is a list',
    () =>
      ledger.postEntry({
        ...transfer('1'),
        metadata: [1, 2] as unknown as Record<string, unknown>,
      }),
    InvalidEntryError,
    /metadata must be a JSON object/,
  ],
  [
    'metadata with a NUL character (jsonb refuses it)',
    () => ledger.postEntry({ ...transfer('1'), metadata: { note: 'a\u0000b' } }),
    InvalidEntryError,
    /metadata must not contain a NUL/,
  ],
  [
    'a metadata key with half of a surrogate pair',
    () => ledger.postEntry({ ...transfer('1'), metadata: { '\ud800': 'x' } }),
    InvalidEntryError,
    /surrogate/,
  ],
  [
    'metadata of more than 64 KiB',
    () => ledger.postEntry({ ...transfer('1'), metadata: { note: 'x'.repeat(70_000) } }),
    InvalidEntryError,
    /at most 65536 bytes/,
  ],
  [
    'a description with a NUL character',
    () => ledger.postEntry({ ...transfer('1'), description: 'a\u0000b' }),
    InvalidEntryError,
    /description must not contain a NUL/,
  ],
  [
    'a hold with metadata with a NUL character',
    () =>
      ledger.createHold({
        debitAccount: 'liabilities:customers:bad',
        creditAccount: 'revenue:usage',
        amount: '1',
        metadata: { requestId: '\u0000' },
      }),
    InvalidEntryError,
    /metadata must not contain a NUL/,
  ],
  [
    'an effectiveAt that is an invalid Date',
    () => ledger.postEntry({ ...transfer('1'), effectiveAt: new Date('not a date') }),
    InvalidEntryError,
    /effectiveAt must be a valid date/,
  ],
  [
    'an invalid Date under an idempotency key',
    () =>
      ledger.postEntry({
        ...transfer('1'),
        effectiveAt: new Date(NaN),
        idempotencyKey: 'bad-date',
      }),
    InvalidEntryError,
    /effectiveAt must be a valid date/,
  ],
  [
    'an expiresAt that is a string, not a Date',
    () =>
      ledger.createHold({
        debitAccount: 'liabilities:customers:bad',
        creditAccount: 'revenue:usage',
        amount: '1',
        expiresAt: 'tomorrow' as unknown as Date,
      }),
    InvalidEntryError,
    /expiresAt must be a valid date/,
  ],
  [
    // An empty key turned idempotency off: the same call sent twice was written twice.
    'an empty idempotency key',
    () => ledger.postEntry({ ...transfer('1'), idempotencyKey: '' }),
    InvalidEntryError,
    /idempotencyKey must be a text of 1-255 characters/,
  ],
  [
    'an idempotency key of 256 characters',
    () => ledger.postEntry({ ...transfer('1'), idempotencyKey: 'k'.repeat(256) }),
    InvalidEntryError,
    /idempotencyKey must be a text of 1-255 characters/,
  ],
  [
    'a kind with spaces',
    () => ledger.postEntry({ ...transfer('1'), kind: 'two words' }),
    InvalidEntryError,
    /kind/,
  ],
];

test.each(cases)(
  '%s is a typed error and writes nothing',
  async (_name, run, errorType, message) => {
    const before = await ledgerRowCounts(database.pool);
    const error = await run().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(errorType);
    expect(String((error as Error).message)).toMatch(message);
    expect(typeof (error as { code: unknown }).code).toBe('string');
    const after = await ledgerRowCounts(database.pool);
    // An account named correctly may be created on demand; no entry, posting, hold or key is written.
    expect({ ...after, accounts: 0 }).toEqual({ ...before, accounts: 0 });
  },
);

test('a Decimal of another decimal.js configuration is checked as given: a hold is not posted for 0 when asked for 1e-2000', async () => {
  const { holdId } = await ledger.createHold({
    debitAccount: 'liabilities:customers:bad',
    creditAccount: 'revenue:usage',
    amount: '1',
  });
  // decimal.js's own Decimal reaches exponents this ledger's Decimal (minE -1000) cannot:
  // copied into it, 1e-2000 became 0 and the hold was settled for nothing.
  const tiny = new DecimalJs('1e-2000') as unknown as Decimal;
  await expect(ledger.postHold({ holdId, amount: tiny })).rejects.toThrow(/2000 fractional digits/);
  expect((await ledger.getHold(holdId))?.status).toBe('pending');
  await ledger.voidHold({ holdId });
});

test('a command that cannot be written, batched with others: only it is refused, the others are written once', async () => {
  await ledger.resolveAccount('revenue:usage', { create: true });
  const before = await ledgerRowCounts(database.pool);
  const balance = async () => (await ledger.getBalance('liabilities:customers:bad')).posted;
  const balanceBefore = await balance();
  const settled = await Promise.allSettled([
    ledger.postEntry(transfer('1')),
    ledger.postEntry({ ...transfer('1'), metadata: { tokens: 12n } }),
    ledger.createHold({
      debitAccount: 'liabilities:customers:bad',
      creditAccount: 'revenue:usage',
      amount: '1',
      expiresAt: 'tomorrow' as unknown as Date,
    }),
    ledger.postEntry(transfer('2')),
  ]);
  expect(
    settled.map((s) => (s.status === 'fulfilled' ? 'ok' : (s.reason as { code?: string }).code)),
  ).toEqual(['ok', 'invalid_entry', 'invalid_entry', 'ok']);
  const after = await ledgerRowCounts(database.pool);
  expect(after.entries! - before.entries!).toBe(2);
  expect(after.holds! - before.holds!).toBe(0);
  // Credited 1 and 2, once each.
  expect((await balance()).sub(balanceBefore).toString()).toBe('3');
  expect(await ledger.checkBalances()).toEqual([]);
});

test("a row attached to a command that cannot be encoded fails that command only, not its batch's others", async () => {
  await database.pool.query('create table test_settlements (hold_id uuid, data jsonb)');
  await ledger.resolveAccount('revenue:usage', { create: true });
  const hold = async (amount: string) =>
    (
      await ledger.createHold({
        debitAccount: 'liabilities:customers:bad',
        creditAccount: 'revenue:usage',
        amount,
      })
    ).holdId;
  const [good, bad] = [await hold('0.5'), await hold('0.25')];
  const attach = (data: unknown) => (outcome: { holdId: string }) => [
    {
      table: 'test_settlements',
      columns: { hold_id: 'uuid', data: 'jsonb' } as const,
      row: { hold_id: outcome.holdId, data },
    },
  ];
  const settled = await Promise.allSettled([
    ledger.postHold({ holdId: good, amount: '0.5', attach: attach({ tokens: '12' }) }),
    // A caller's bug: a BigInt where its own row wants JSON.
    ledger.postHold({ holdId: bad, amount: '0.25', attach: attach({ tokens: 12n }) }),
    ledger.postEntry(transfer('1')),
  ]);
  expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
  expect((await ledger.getHold(good))?.status).toBe('posted');
  expect((await ledger.getHold(bad))?.status).toBe('pending');
  const { rows } = await database.pool.query('select hold_id, data from test_settlements');
  expect(rows).toEqual([{ hold_id: good, data: { tokens: '12' } }]);
  expect(await ledger.checkBalances()).toEqual([]);
});
