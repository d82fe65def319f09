import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Decimal, type PostgresLedger, type TrialBalance } from '../../ledger/index.js';
import { AppError } from '../../src/errors.js';
import { beancountAccount } from '../../src/exports/beancountAccounts.js';
import { JOURNAL_CSV_COLUMNS } from '../../src/exports/journalCsv.js';
import { parseJournalFilter } from '../../src/exports/journalFilter.js';
import {
  streamJournal,
  JOURNAL_FORMATS,
  type JournalFormat,
} from '../../src/exports/streamJournal.js';
import type { JournalFilter } from '../../src/exports/journalFilter.js';
import { buildBook, sealEverything, type Book } from '../support/book.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import { beancountSums, collect, csvObjects, hledgerBalances, scratchDir, tool } from './tools.js';

let database: TestDatabase;
let ledger: PostgresLedger;
let book: Book;
let dir: string;
/** Between the book and a later promotion (ISO, from the database clock). */
let middle: string;
let trialAtMiddle: TrialBalance;
let lateEntryId: string;

beforeAll(async () => {
  database = await createTestDatabase();
  ledger = await openLedger(database.pool);
  book = await buildBook(database.pool, ledger);
  trialAtMiddle = await ledger.trialBalance();
  middle = await databaseNow();
  lateEntryId = (
    await ledger.postEntry({
      kind: 'adjustment',
      description: 'late promotion',
      postings: [
        { account: 'expenses:promotions', amount: '2.25' },
        { account: `liabilities:customers:${book.alice}`, amount: '-2.25' },
      ],
    })
  ).entryId;
  await sealEverything(database.pool);
  dir = scratchDir();
});
afterAll(async () => {
  await ledger.close();
  await database.drop();
});

async function databaseNow(): Promise<string> {
  const { rows } = await database.pool.query<{ now: string }>(
    `select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as now`,
  );
  return rows[0]!.now;
}

function exportText(format: JournalFormat, filter: JournalFilter = {}, pageRows?: number) {
  return collect(
    streamJournal(database.pool, { format, filter, ...(pageRows ? { pageRows } : {}) }),
  );
}

async function exportFile(format: JournalFormat, filter: JournalFilter = {}): Promise<string> {
  const file = join(dir, `${format}-${Math.random().toString(36).slice(2)}.${format}`);
  writeFileSync(file, await exportText(format, filter));
  return file;
}

/** `account|currency` to debits minus credits, from the ledger's own trial balance. */
function trialBalances(trial: TrialBalance, rename = (code: string) => code): Map<string, Decimal> {
  return new Map(
    trial.accounts
      .filter((a) => !a.debit.isZero() || !a.credit.isZero())
      .map((a) => [`${rename(a.account)}|${a.currency}`, a.balance]),
  );
}

function expectSameBalances(actual: Map<string, Decimal>, expected: Map<string, Decimal>): void {
  const show = (m: Map<string, Decimal>) =>
    Object.fromEntries(
      [...m].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, v.toString()]),
    );
  expect(show(actual)).toEqual(show(expected));
}

describe('CSV', () => {
  test('one line per posting, with the specified columns, amounts exact, debits equal credits', async () => {
    const text = await exportText('csv');
    const [header] = text.split('\n');
    expect(header).toBe(
      'entry_id,timestamp,account,debit,credit,currency,rate,rate_source,description,chain_ref,line,kind,reverses_entry_id,seal',
    );
    expect(header!.split(',')).toEqual([...JOURNAL_CSV_COLUMNS]);
    const rows = csvObjects(text);
    const { rows: count } = await database.pool.query<{ n: string }>(
      'select count(*)::text as n from ledger_postings',
    );
    expect(rows).toHaveLength(Number(count[0]!.n));

    const ethDeposit = rows.filter((r) => r['entry_id'] === book.entries.bobEthDeposit);
    expect(ethDeposit.map((r) => [r['account'], r['debit'], r['credit'], r['currency']])).toEqual([
      ['assets:custody:ethereum:ETH:0xb0b0000000000000000000000000000000000b0b', '0.5', '', 'ETH'],
      ['equity:trading:ETH', '', '0.5', 'ETH'],
      ['equity:trading:USD', '1506.225', '', 'USD'],
      [`liabilities:customers:${book.bob}`, '', '1506.225', 'USD'],
    ]);
    for (const row of ethDeposit) {
      expect(row).toMatchObject({
        rate: '3012.45',
        rate_source: 'chainlink',
        description: 'ETH deposit on ethereum',
        chain_ref: `ethereum:0x${'b2'.repeat(32)}:7`,
        kind: 'deposit',
        seal: expect.stringMatching(/^\d+$/),
      });
      expect(row['timestamp']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    }
    // The smallest charge keeps all 18 digits; the description with a comma is quoted.
    expect(
      rows.find((r) => r['entry_id'] === book.entries.usage[0] && r['credit'] !== ''),
    ).toMatchObject({
      account: 'revenue:usage',
      credit: book.usageCosts[0],
    });
    expect(text).toContain('"sweep USDT to the hot wallet, gas paid by the hot wallet"');
    expect(
      rows
        .filter((r) => r['entry_id'] === book.entries.reversal)
        .map((r) => r['reverses_entry_id']),
    ).toEqual([book.entries.mistakenCredit, book.entries.mistakenCredit]);

    const net = new Map<string, Decimal>();
    for (const row of rows) {
      const key = `${row['entry_id']}|${row['currency']}`;
      const amount = new Decimal(row['debit'] || '0').sub(row['credit'] || '0');
      net.set(key, (net.get(key) ?? new Decimal(0)).add(amount));
    }
    for (const [key, value] of net) expect(value.isZero(), key).toBe(true);
  });
});

describe('JSONL', () => {
  test('one canonical object per entry, postings nested, amounts as strings', async () => {
    const lines = (await exportText('jsonl')).trimEnd().split('\n');
    const { rows } = await database.pool.query<{ n: string }>(
      'select count(*)::text as n from ledger_entries',
    );
    expect(lines).toHaveLength(Number(rows[0]!.n));
    const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const sweep = entries.find((e) => e['id'] === book.entries.usdtSweep)!;
    expect(Object.keys(sweep)).toEqual([...Object.keys(sweep)].sort());
    expect(sweep).toMatchObject({
      kind: 'sweep',
      seal: expect.any(Number),
      txId: expect.stringMatching(/^\d+$/),
      metadata: { chain: { network: 'ethereum', logIndex: 0 } },
    });
    expect(sweep['postings']).toEqual([
      expect.objectContaining({ line: 1, amount: '250.5', currency: 'USDT' }),
      expect.objectContaining({ line: 2, amount: '-250.5', currency: 'USDT' }),
      expect.objectContaining({
        line: 3,
        account: 'expenses:network-fees:ethereum',
        amount: '0.000421337',
        currency: 'ETH',
      }),
      expect.objectContaining({ line: 4, amount: '-0.000421337', currency: 'ETH' }),
    ]);
  });
});

describe('hledger', () => {
  test('passes hledger check --strict, and its balances are our trial balance', async () => {
    const file = await exportFile('hledger');
    await tool('hledger', ['-f', file, 'check', '--strict']);
    expectSameBalances(await hledgerBalances(file), trialBalances(await ledger.trialBalance()));
  });

  test('a range passes the check too, with the balances of the range', async () => {
    const file = await exportFile('hledger', { to: middle });
    await tool('hledger', ['-f', file, 'check', '--strict']);
    expectSameBalances(await hledgerBalances(file), trialBalances(trialAtMiddle));
  });
});

describe('beancount', () => {
  test('passes bean-check; its sums are our trial balance; each open names our code', async () => {
    const file = await exportFile('beancount');
    await tool('bean-check', [file]);
    const sums = await beancountSums(file);
    expect(sums.errors).toEqual([]);
    expectSameBalances(sums.totals, trialBalances(await ledger.trialBalance(), beancountAccount));
    const used = (await ledger.trialBalance()).accounts.filter(
      (a) => !a.debit.isZero() || !a.credit.isZero(),
    );
    expect(Object.keys(sums.opens)).toHaveLength(used.length);
    for (const account of used) {
      expect(sums.opens[beancountAccount(account.account)]).toBe(account.account);
    }
  });

  test('account names map to beancount deterministically', () => {
    expect(beancountAccount('liabilities:customers:42')).toBe('Liabilities:Customers:42');
    expect(beancountAccount('assets:custody:tron:USDT:TXyz9')).toBe(
      'Assets:Custody:Tron:USDT:TXyz9',
    );
    expect(beancountAccount('assets:custody:ethereum:ETH:0xab12')).toBe(
      'Assets:Custody:Ethereum:ETH:0xab12',
    );
    expect(beancountAccount('revenue:usage')).toBe('Income:Usage');
    expect(beancountAccount('expenses:network-fees:ethereum')).toBe(
      'Expenses:Network-fees:Ethereum',
    );
    expect(beancountAccount('revenue:usage:gpt-4.1_mini')).toBe('Income:Usage:Gpt-4．1＿mini');
    expect(() => beancountAccount('income:misc')).toThrow(AppError);
  });
});

describe('determinism', () => {
  test.each(JOURNAL_FORMATS)(
    '%s: the same range twice gives the same bytes, whatever the page size',
    async (format) => {
      const first = await exportText(format, { to: middle });
      const again = await exportText(format, { to: middle });
      const smallPages = await exportText(format, { to: middle }, 3);
      expect(again).toBe(first);
      expect(smallPages).toBe(first);
      expect(first).not.toContain(lateEntryId);
    },
  );
});

describe('filters', () => {
  const entryIds = async (filter: JournalFilter) =>
    (await exportText('jsonl', filter))
      .trimEnd()
      .split('\n')
      .filter(Boolean)
      .map((line) => (JSON.parse(line) as { id: string }).id);

  test('from/to select by commit time, half-open', async () => {
    const late = await entryIds({ from: middle });
    expect(late).toEqual([lateEntryId]);
    const early = await entryIds({ to: middle });
    expect(early).not.toContain(lateEntryId);
    expect(early).toContain(book.entries.aliceUsdtDeposit);
    expect([...early, ...late].sort()).toEqual((await entryIds({})).sort());
    expect(await entryIds({ from: '2000-01-01', to: '2000-01-02' })).toEqual([]);
  });

  test('account selects whole entries touching the account or its sub-accounts', async () => {
    const bob = await exportText('csv', { account: `liabilities:customers:${book.bob}` });
    const rows = csvObjects(bob);
    const entries = new Set(rows.map((r) => r['entry_id']));
    expect(entries).toEqual(
      new Set([
        book.entries.bobEthDeposit,
        book.entries.bobUsdtDeposit,
        book.entries.usage[1],
        book.entries.mistakenCredit,
        book.entries.reversal,
        ...rows.filter((r) => r['description'] === 'goodwill clawback').map((r) => r['entry_id']),
      ]),
    );
    expect(rows.some((r) => r['account'] === 'equity:trading:ETH')).toBe(true);
    const custody = await entryIds({ account: 'assets:custody:ethereum' });
    expect(custody.sort()).toEqual(
      [
        book.entries.bobEthDeposit,
        book.entries.bobUsdtDeposit,
        book.entries.ethSweep,
        book.entries.usdtSweep,
      ].sort(),
    );
    // A prefix is a whole segment: customers:1 is not customers:10.
    expect(await entryIds({ account: 'liabilities:customer' })).toEqual([]);
  });

  test('basis effective filters and orders by business time', async () => {
    const deposits = await entryIds({ basis: 'effective', from: '2026-11-20', to: '2026-11-22' });
    expect(deposits).toEqual([
      book.entries.aliceUsdtDeposit,
      book.entries.bobEthDeposit,
      book.entries.bobUsdtDeposit,
    ]);
    const hledger = await exportText('hledger', {
      basis: 'effective',
      from: '2026-11-20',
      to: '2026-11-22',
    });
    expect(hledger).toContain(`2026-11-21 (${book.entries.bobEthDeposit}) ETH deposit on ethereum`);
  });

  test('bad filters are refused with the field named', () => {
    expect(() => parseJournalFilter({ from: 'yesterday' })).toThrow(/from must be an ISO 8601/);
    expect(() => parseJournalFilter({ to: '2026-02-30' })).toThrow(/to must be/);
    expect(() => parseJournalFilter({ account: 'Liabilities;drop' })).toThrow(/account/);
    expect(() => parseJournalFilter({ basis: 'posted' })).toThrow(/basis/);
    // A reversed range, whatever the zones; an empty one (from = to) is allowed.
    expect(() => parseJournalFilter({ from: '2026-11-28', to: '2026-11-27T23:59:59Z' })).toThrow(
      /from \(2026-11-28\) must not be after to/,
    );
    expect(() =>
      parseJournalFilter({ from: '2026-11-27T10:00:00+0800', to: '2026-11-27T01:59:59' }),
    ).toThrow(/must not be after/);
    // Within one millisecond: PostgreSQL keeps microseconds, so these are in the wrong order.
    expect(() =>
      parseJournalFilter({ from: '2026-11-27T10:00:00.000500Z', to: '2026-11-27T10:00:00.0001Z' }),
    ).toThrow(/must not be after/);
    expect(
      parseJournalFilter({ from: '2026-11-27T10:00:00.0001Z', to: '2026-11-27T10:00:00.000500Z' }),
    ).toEqual({ from: '2026-11-27T10:00:00.0001Z', to: '2026-11-27T10:00:00.000500Z' });
    expect(
      parseJournalFilter({ from: '2026-11-27T10:00:00+08', to: '2026-11-27T02:00:00Z' }),
    ).toEqual({ from: '2026-11-27T10:00:00+08', to: '2026-11-27T02:00:00Z' });
    expect(
      parseJournalFilter({ from: '2026-11-27T10:00:00.123456+08:00', account: 'revenue:' }),
    ).toEqual({
      from: '2026-11-27T10:00:00.123456+08:00',
      account: 'revenue:',
    });
  });
});
