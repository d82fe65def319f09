import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { AppError } from '../../src/errors.js';
import { Decimal, type PostEntryParameters, type PostgresLedger } from '../../ledger/index.js';
import { beancountAccount } from '../../src/exports/beancountAccounts.js';
import type { JournalFilter } from '../../src/exports/journalFilter.js';
import { streamSealsJsonl } from '../../src/exports/sealsJsonl.js';
import { streamStatementCsv } from '../../src/exports/statementCsv.js';
import { streamJournal, type JournalFormat } from '../../src/exports/streamJournal.js';
import { streamTrialBalanceCsv } from '../../src/exports/trialBalanceCsv.js';
import { verifySeals } from '../../src/integrity/verifySeals.js';
import { createUser } from '../../src/users/createUser.js';
import { kyselyOver, sealEverything } from '../support/book.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import {
  collect,
  csvObjects,
  csvTextValue,
  scratchDir,
  show,
  tool,
  trialBalances,
} from './tools.js';

// Books at the edges, written through the ledger, checked with the accountants' own tools:
// amounts at every scale from the smallest unit to the largest the ledger accepts, text that
// hledger, beancount and JSON treat specially, reversals of reversals, a hold posted with a
// shortfall, a deposit reorged away and credited again, and periods cut at the very instant
// entries were written.

/**
 * The largest amounts every tool reads exactly, at every fractional digit: 28 significant
 * digits (beancount's limit). hledger and the ledger go further (see the last describe).
 */
const MAX = {
  USD: `${'9'.repeat(10)}.${'9'.repeat(18)}`,
  USDT: `${'9'.repeat(22)}.${'9'.repeat(6)}`,
  ETH: `${'9'.repeat(10)}.${'9'.repeat(18)}`,
};
/** The largest amounts the ledger accepts: 36 integer digits, every fractional digit. */
const LEDGER_MAX = {
  USD: `${'9'.repeat(36)}.${'9'.repeat(18)}`,
  USDT: `${'9'.repeat(36)}.${'9'.repeat(6)}`,
  ETH: `${'9'.repeat(36)}.${'9'.repeat(18)}`,
};
const UNIT = { USD: '0.000000000000000001', USDT: '0.000001', ETH: '0.000000000000000001' };

/** Text that hledger, beancount, CSV or JSON read specially. */
const TEXTS = [
  '灵犀 充值 — ünïcödé ✓ 😀 👩‍👩‍👧 مرحبا \u202eRTL',
  'e\u0301 combining, \ufeffBOM inside, zero\u200bwidth',
  '\ufeffBOM first',
  'say "hi"; then \\"x\\" ;; end;',
  'tab\there\r\nCRLF\nLF\rCR',
  'line sep\u2028para sep\u2029next line\u0085done',
  'vt\u000bff\u000cesc\u001bdel\u007fbell\u0007bs\u0008',
  '(not a code) | payee | note',
  '* ! # % ~ = starts',
  '   ',
  '',
  ' ; kind:deposit, reverses:x',
  'ends with a backslash \\',
  '    assets:evil  1 USD',
  '2026-01-01 * "forged" ; include /etc/passwd',
  '"',
  '\\',
  'a "quoted \\" string" with \\\\ and ";" and \'single\'',
];

let database: TestDatabase;
let ledger: PostgresLedger;
let dir: string;
const users: Record<'alice' | 'bob' | 'carol' | 'dave', string> = {
  alice: '',
  bob: '',
  carol: '',
  dave: '',
};
const customer = (id: string) => `liabilities:customers:${id}`;
const receivable = (id: string) => `assets:receivables:customers:${id}`;
/** Entry id to the description written. */
const descriptions = new Map<string, string>();
/** Entry id to the metadata texts written. */
const metadataTexts = new Map<string, string>();
/** Entries written at the start of their transaction, at `T1` and `T2` exactly. */
let T1: { entryId: string; at: string };
let T2: { entryId: string; at: string };
const ids: Record<string, string> = {};

async function post(params: PostEntryParameters): Promise<string> {
  const { entryId } = await ledger.postEntry(params);
  if (params.description !== undefined) descriptions.set(entryId, params.description);
  return entryId;
}

/**
 * An entry whose created_at is exactly the returned instant: the start of its transaction,
 * read in that transaction (microseconds, UTC).
 */
async function postAtKnownInstant(
  params: PostEntryParameters,
): Promise<{ entryId: string; at: string }> {
  const client = await database.pool.connect();
  try {
    await client.query('begin');
    const { rows } = await client.query<{ at: string }>(
      `select to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at`,
    );
    const [result] = await ledger.within(client).postEntries([params]);
    if (result instanceof Error) throw result;
    await client.query('commit');
    const { rows: created } = await database.pool.query<{ at: string }>(
      `select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at
         from ledger_entries where id = $1`,
      [result!.entryId],
    );
    expect(created[0]!.at).toBe(rows[0]!.at);
    return { entryId: result!.entryId, at: rows[0]!.at };
  } catch (error) {
    await client.query('rollback').catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

beforeAll(async () => {
  database = await createTestDatabase();
  ledger = await openLedger(database.pool);
  dir = scratchDir();
  const db = kyselyOver(database.pool);
  let telegramId = 7700;
  for (const name of Object.keys(users) as Array<keyof typeof users>) {
    users[name] = (await createUser(db, { telegramId: ++telegramId, username: name })).id;
  }
  const { alice, bob, carol, dave } = users;

  // Period 1: amounts at every scale.
  ids['maxUsd'] = await post({
    kind: 'adjustment',
    description: 'the largest USD amount',
    postings: [
      { account: 'expenses:promotions', amount: MAX.USD },
      { account: customer(alice), amount: `-${MAX.USD}` },
    ],
  });
  // Spent back to exactly zero across many postings: 99 usage lines of uneven amounts.
  const parts: string[] = [];
  let rest = new Decimal(MAX.USD);
  for (let i = 1; i < 99; i += 1) {
    const part = `${i}${'7'.repeat(i % 6)}.${String(i).padStart(18, '3')}`;
    parts.push(part);
    rest = rest.sub(part);
  }
  parts.push(rest.toString());
  ids['manyPostings'] = await post({
    kind: 'usage',
    description: 'ninety-nine usage lines',
    postings: [
      { account: customer(alice), amount: MAX.USD },
      ...parts.map((amount, i) => ({
        // Segments beancount cannot take as they are: '.', '_' and a leading '-'.
        account:
          i % 10 === 0
            ? `revenue:usage:-lead_${i % 3}`
            : `revenue:usage:model-${i % 7}.v${i % 3}_x`,
        amount: `-${amount}`,
      })),
    ],
  });
  ids['maxEth'] = await post({
    kind: 'deposit',
    description: 'the largest ETH amount',
    metadata: { rate: '0.000000000000000001', rateSource: 'fixed' },
    postings: [
      { account: 'assets:custody:ethereum:ETH:0xa11ce', amount: MAX.ETH, currency: 'ETH' },
      { account: 'equity:trading:ETH', amount: `-${MAX.ETH}` },
      { account: 'equity:trading:USD', amount: MAX.USD },
      { account: customer(bob), amount: `-${MAX.USD}` },
    ],
  });
  ids['maxUsdt'] = await post({
    kind: 'deposit',
    description: 'the largest USDT amount',
    postings: [
      { account: 'assets:custody:tron:USDT:TXyzMax', amount: MAX.USDT, currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: `-${MAX.USDT}` },
    ],
  });
  for (const currency of ['USD', 'USDT', 'ETH'] as const) {
    ids[`unit${currency}`] = await post({
      kind: 'deposit',
      description: `the smallest ${currency} unit`,
      postings: [
        {
          account: `assets:custody:ethereum:${currency}:0xsmall`,
          amount: UNIT[currency],
          currency,
        },
        { account: `equity:trading:${currency}`, amount: `-${UNIT[currency]}` },
      ],
    });
  }
  // Bob's huge balance, credited and debited in 18-digit pieces back to exactly where it was.
  let total = new Decimal(0);
  for (let i = 1; i <= 20; i += 1) {
    const amount = `${i}.${String(i * 7919).padStart(18, '0')}`;
    total = total.add(amount);
    await post({
      kind: 'adjustment',
      postings: [
        { account: 'expenses:promotions', amount },
        { account: customer(bob), amount: `-${amount}` },
      ],
    });
  }
  await post({
    kind: 'usage',
    postings: [
      { account: customer(bob), amount: total.toString() },
      { account: 'revenue:usage', amount: `-${total.toString()}` },
    ],
  });

  // Text in descriptions and in every metadata field an export writes.
  for (const [i, text] of TEXTS.entries()) {
    const entryId = await post({
      kind: 'usage',
      description: text,
      metadata: {
        requestId: `req ${text}`,
        model: text,
        rate: text,
        rateSource: text,
        chain: { network: text, txHash: text, logIndex: i },
        [text || 'empty']: text,
      },
      postings: [
        { account: customer(bob), amount: UNIT.USD },
        { account: 'revenue:usage', amount: `-${UNIT.USD}` },
      ],
    });
    metadataTexts.set(entryId, text);
  }

  T1 = await postAtKnownInstant({
    kind: 'adjustment',
    description: 'written at T1',
    postings: [
      { account: 'expenses:promotions', amount: '1.000000000000000001' },
      { account: customer(carol), amount: '-1.000000000000000001' },
    ],
  });

  // Period 2: reversals, a hold posted with a shortfall, a deposit reorged and credited again.
  const credit = await post({
    kind: 'adjustment',
    description: 'a credit reversed twice',
    postings: [
      { account: 'expenses:promotions', amount: '7.123456789012345678' },
      { account: customer(dave), amount: '-7.123456789012345678' },
    ],
  });
  ids['credit'] = credit;
  ids['reversal'] = (await ledger.reverseEntry({ entryId: credit })).entryId;
  ids['reversalOfReversal'] = (
    await ledger.reverseEntry({ entryId: ids['reversal'], description: 'undo the undo' })
  ).entryId;

  const { holdId } = await ledger.createHold({
    debitAccount: customer(carol),
    creditAccount: 'revenue:usage',
    amount: '0.5',
  });
  const posted = await ledger.postHold({
    holdId,
    amount: '1.750000000000000001',
    allowOverHold: true,
    shortfallAccount: receivable(carol),
    kind: 'usage',
    description: 'a call that cost more than its hold',
  });
  ids['shortfall'] = posted.entryId!;
  expect(posted.shortfall.toString()).toBe('0.75');

  const deposit = await post({
    kind: 'deposit',
    description: '10 USDT deposit on tron',
    metadata: {
      rate: '1',
      rateSource: 'fixed',
      chain: { network: 'tron', txHash: 'ab'.repeat(32), logIndex: 3 },
    },
    postings: [
      { account: 'assets:custody:tron:USDT:TXyzDave', amount: '10.000001', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '-10.000001' },
      { account: 'equity:trading:USD', amount: '10.000001' },
      { account: customer(dave), amount: '-10.000001' },
    ],
  });
  ids['deposit'] = deposit;
  await post({
    kind: 'usage',
    postings: [
      { account: customer(dave), amount: '15' },
      { account: 'revenue:usage', amount: '-15' },
    ],
  });
  const reorg = await ledger.reverseEntry({
    entryId: deposit,
    kind: 'deposit.reversal',
    description: 'the deposit was removed by a reorg',
    shortfallAccounts: { [customer(dave)]: receivable(dave) },
  });
  ids['reorg'] = reorg.entryId;
  expect(reorg.shortfalls).toEqual({ [receivable(dave)]: '7.876543210987654322' });

  T2 = await postAtKnownInstant({
    kind: 'adjustment',
    description: 'written at T2',
    postings: [
      { account: 'expenses:promotions', amount: UNIT.USD },
      { account: customer(carol), amount: `-${UNIT.USD}` },
    ],
  });

  // Period 3: the deposit mined again, repaying the receivable first.
  const client = await database.pool.connect();
  try {
    await client.query('begin');
    const [again] = await ledger.within(client).postEntries([
      {
        kind: 'deposit',
        description: '10 USDT deposit on tron, mined again',
        metadata: {
          rate: '1',
          rateSource: 'fixed',
          chain: { network: 'tron', txHash: 'ab'.repeat(32), logIndex: 3 },
        },
        repayReceivable: {
          from: customer(dave),
          receivable: receivable(dave),
          amountMax: '7.876543210987654322',
        },
        postings: [
          { account: 'assets:custody:tron:USDT:TXyzDave', amount: '10.000001', currency: 'USDT' },
          { account: 'equity:trading:USDT', amount: '-10.000001' },
          { account: 'equity:trading:USD', amount: '10.000001' },
          { account: customer(dave), amount: '-10.000001' },
        ],
      },
    ]);
    if (again instanceof Error) throw again;
    expect(again!.receivableRepaid).toBe('7.876543210987654322');
    ids['again'] = again!.entryId;
    await client.query('commit');
  } finally {
    client.release();
  }

  // Business times at a month's boundary, to the millisecond (basis effective).
  ids['lastOfOctober'] = await post({
    kind: 'deposit',
    description: 'block at the last millisecond of October',
    effectiveAt: new Date('2026-10-31T23:59:59.999Z'),
    postings: [
      { account: 'assets:custody:tron:USDT:TXyzDave', amount: '0.000001', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '-0.000001' },
    ],
  });
  ids['firstOfNovember'] = await post({
    kind: 'deposit',
    description: 'block at midnight, November 1st',
    effectiveAt: new Date('2026-11-01T00:00:00.000Z'),
    postings: [
      { account: 'assets:custody:tron:USDT:TXyzDave', amount: '0.000002', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '-0.000002' },
    ],
  });
  // The first and the last years a business time may have.
  ids['yearOne'] = await post({
    kind: 'adjustment',
    description: 'in the year 1',
    effectiveAt: new Date('0001-01-01T00:00:00.000Z'),
    postings: [
      { account: 'expenses:promotions', amount: UNIT.USD },
      { account: customer(users.bob), amount: `-${UNIT.USD}` },
    ],
  });
  ids['year9999'] = await post({
    kind: 'adjustment',
    description: 'in the year 9999',
    effectiveAt: new Date('9999-12-31T23:59:59.999Z'),
    postings: [
      { account: 'expenses:promotions', amount: UNIT.USD },
      { account: customer(users.bob), amount: `-${UNIT.USD}` },
    ],
  });
  // Metadata as an admin's manual entry may carry it (any keys, any JSON numbers): keys that
  // sort differently by UTF-16 code units (RFC 8785) and by code points, and numbers that
  // JavaScript reads as doubles.
  ids['metadataNumbers'] = await post({
    kind: 'manual',
    description: 'metadata that canonical JSON must sort and write as RFC 8785 does',
    metadata: {
      '\uff01': 'full-width exclamation mark (U+FF01)',
      '\u{1F600}': 'emoji (U+1F600, a surrogate pair in UTF-16)',
      // As JSON.parse reads an admin's request body: the nearest double.
      big: Number('12345678901234567890'),
      half: 1.5,
      tiny: 1e-7,
      huge: 1e21,
      wide: 123456789012345680000,
      negative: -0.000001,
      nested: [1, 2.5, { '\ue000': 'private use', '\u{10000}': 'linear B' }],
    },
    postings: [
      { account: 'expenses:promotions', amount: '0.01' },
      { account: customer(users.alice), amount: '-0.01' },
    ],
  });
  // Transaction ids are cluster-wide: another database's open transaction can hold sealing back.
  await sealEverything(database.pool, { timeoutMs: 90_000 });
}, 180_000);
afterAll(async () => {
  await ledger?.close();
  await database?.drop();
});

async function exportText(format: JournalFormat, filter: JournalFilter = {}): Promise<string> {
  return collect(streamJournal(database.pool, { format, filter }));
}

async function exportFile(format: JournalFormat, filter: JournalFilter = {}): Promise<string> {
  const file = join(dir, `${format}-${Math.random().toString(36).slice(2)}.${format}`);
  writeFileSync(file, await exportText(format, filter));
  return file;
}

/** `hledger balance` as `account|commodity` to balance, with extra report arguments. */
async function hledgerBalance(file: string, ...args: string[]): Promise<Record<string, string>> {
  const csv = await tool('hledger', [
    '-f',
    file,
    'balance',
    '--flat',
    '-E',
    '-O',
    'csv',
    '--layout=bare',
    '--no-total',
    ...args,
  ]);
  const balances = new Map<string, Decimal>();
  for (const row of csvObjects(csv)) {
    balances.set(`${row['account']}|${row['commodity']}`, new Decimal(row['balance']!));
  }
  return show(balances);
}

// beancount's own loader, summing at a precision beyond any amount (beancount's reports use
// 28 digits; this reads what the file says, exactly).
const BEANCOUNT_EXACT = `
import sys, json, decimal, datetime
from beancount import loader
from beancount.core import data
entries, errors, options = loader.load_file(sys.argv[1])
before = datetime.date.fromisoformat(sys.argv[2]) if len(sys.argv) > 2 else None
totals, transactions = {}, []
with decimal.localcontext() as context:
    context.prec = 200
    for e in entries:
        if not isinstance(e, data.Transaction):
            continue
        transactions.append({'meta': {k: v for k, v in e.meta.items() if k not in ('filename', 'lineno')},
                             'narration': e.narration, 'date': e.date.isoformat(),
                             'postings': [[p.account, format(p.units.number, 'f'), p.units.currency] for p in e.postings]})
        if before is not None and e.date >= before:
            continue
        for p in e.postings:
            k = p.account + '|' + p.units.currency
            totals[k] = totals.get(k, decimal.Decimal(0)) + p.units.number
print(json.dumps({'errors': [str(x.message) for x in errors],
                  'totals': {k: format(v, 'f') for k, v in totals.items()},
                  'transactions': transactions}, ensure_ascii=False, default=str))
`;

interface BeancountRead {
  errors: string[];
  totals: Record<string, string>;
  transactions: Array<{
    meta: Record<string, string>;
    narration: string;
    date: string;
    postings: Array<[string, string, string]>;
  }>;
}

async function beancountExact(file: string, before?: string): Promise<BeancountRead> {
  await tool('bean-check', [file]);
  const beanCheck = (await tool('sh', ['-c', 'command -v bean-check'])).trim();
  const python = readFileSync(beanCheck, 'utf8')
    .split('\n')[0]!
    .replace(/^#!\s*/, '')
    .split(' ')[0]!;
  const script = join(dir, 'exact.py');
  writeFileSync(script, BEANCOUNT_EXACT);
  const read = JSON.parse(
    await tool(python, [script, file, ...(before ? [before] : [])]),
  ) as BeancountRead;
  read.totals = show(new Map(Object.entries(read.totals).map(([k, v]) => [k, new Decimal(v)])));
  return read;
}

/** The trial balance CSV as `account|currency` to balance, accounts with activity only. */
async function trialBalanceCsv(
  params: { to?: string; basis?: 'created' | 'effective' } = {},
  rename = (code: string) => code,
): Promise<Record<string, string>> {
  const rows = csvObjects(await collect(streamTrialBalanceCsv(database.pool, params)));
  const totals = rows.filter((r) => r['type'] === 'total');
  for (const total of totals) expect(total['balance'], total['currency']).toBe('0');
  return show(
    new Map(
      rows
        .filter((r) => r['type'] !== 'total')
        .filter((r) => !new Decimal(r['debit']!).isZero() || !new Decimal(r['credit']!).isZero())
        .map((r) => [`${rename(r['account']!)}|${r['currency']}`, new Decimal(r['balance']!)]),
    ),
  );
}

/** Adds balances key by key, dropping nothing (a zero stays, as -E shows it). */
function addBalances(...parts: Array<Record<string, string>>): Record<string, string> {
  const sum = new Map<string, Decimal>();
  for (const part of parts) {
    for (const [key, value] of Object.entries(part)) {
      sum.set(key, (sum.get(key) ?? new Decimal(0)).add(value));
    }
  }
  return show(sum);
}

/** The microsecond after an instant written as `...SS.ffffffZ`. */
async function microsecondAfter(at: string): Promise<string> {
  const { rows } = await database.pool.query<{ after: string }>(
    `select to_char(($1::timestamptz + interval '1 microsecond') at time zone 'UTC',
                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as after`,
    [at],
  );
  return rows[0]!.after;
}

/** The same instant written in UTC+08:00. */
async function inPlusEight(at: string): Promise<string> {
  const { rows } = await database.pool.query<{ local: string }>(
    `select to_char($1::timestamptz at time zone '+08', 'YYYY-MM-DD"T"HH24:MI:SS.US"+08:00"') as local`,
    [at],
  );
  return rows[0]!.local;
}

describe('amounts at every scale, from the smallest unit to the widest every tool reads (28 digits)', () => {
  test('hledger: check --strict passes, and every balance is the trial balance to the last digit', async () => {
    const file = await exportFile('hledger');
    await tool('hledger', ['-f', file, 'check', '--strict']);
    const balances = await hledgerBalance(file);
    expect(balances).toEqual(await trialBalances(ledger));
    expect(balances).toEqual(await trialBalanceCsv());
    expect(balances).toMatchObject({
      [`${customer(users.alice)}|USD`]: '-0.01',
      [`${customer(users.bob)}|USD`]: new Decimal(MAX.USD)
        .neg()
        .add(new Decimal(UNIT.USD).mul(TEXTS.length - 2)) // charged per text; credited in years 1 and 9999
        .toString(),
      'assets:custody:ethereum:ETH:0xa11ce|ETH': MAX.ETH,
      'assets:custody:tron:USDT:TXyzMax|USDT': MAX.USDT,
      'assets:custody:ethereum:USD:0xsmall|USD': UNIT.USD,
      'assets:custody:ethereum:USDT:0xsmall|USDT': UNIT.USDT,
      'assets:custody:ethereum:ETH:0xsmall|ETH': UNIT.ETH,
    });
    // Each currency nets to exactly zero.
    const net = new Map<string, Decimal>();
    for (const [key, value] of Object.entries(balances)) {
      const currency = key.split('|')[1]!;
      net.set(currency, (net.get(currency) ?? new Decimal(0)).add(value));
    }
    expect(show(net)).toEqual({ ETH: '0', USD: '0', USDT: '0' });
  });

  test('beancount: bean-check passes, and the amounts it reads sum to the trial balance exactly', async () => {
    const file = await exportFile('beancount');
    const read = await beancountExact(file);
    expect(read.errors).toEqual([]);
    expect(read.totals).toEqual(await trialBalances(ledger, beancountAccount));
    const many = read.transactions.find((t) => t.meta['entry'] === ids['manyPostings'])!;
    expect(many.postings).toHaveLength(100);
    expect(many.postings[0]).toEqual([beancountAccount(customer(users.alice)), MAX.USD, 'USD']);
  });

  test('CSV and JSONL: the amounts as stored, every entry balanced per currency', async () => {
    const rows = csvObjects(await exportText('csv'));
    const net = new Map<string, Decimal>();
    for (const row of rows) {
      expect(row['debit'] === '' || row['credit'] === '').toBe(true);
      const key = `${row['entry_id']}|${row['currency']}`;
      net.set(
        key,
        (net.get(key) ?? new Decimal(0)).add(
          new Decimal(row['debit'] || '0').sub(row['credit'] || '0'),
        ),
      );
    }
    for (const [key, value] of net) expect(value.isZero(), key).toBe(true);
    expect(
      rows.filter((r) => r['entry_id'] === ids['maxEth']).map((r) => [r['debit'], r['credit']]),
    ).toEqual([
      [MAX.ETH, ''],
      ['', MAX.ETH],
      [MAX.USD, ''],
      ['', MAX.USD],
    ]);
    expect(rows.find((r) => r['entry_id'] === ids['maxEth'])!['rate']).toBe(UNIT.USD);
    const jsonl = (await exportText('jsonl')).trimEnd().split('\n');
    const unit = JSON.parse(jsonl.find((l) => l.includes(ids['unitUSDT']!))!) as {
      postings: Array<{ amount: string; balanceAfter: string }>;
    };
    expect(unit.postings.map((p) => p.amount)).toEqual([UNIT.USDT, `-${UNIT.USDT}`]);
  });
});

/** What hledger strips from either end of a description or tag value (not all of Unicode's spaces). */
function hledgerTrim(text: string): string {
  return text.replace(/^[ \t\f\v\u00a0]+|[ \t\f\v\u00a0]+$/g, '');
}

describe('text that the tools read specially', () => {
  test('hledger: one transaction per entry, each description whole on its line, our tags only', async () => {
    const file = await exportFile('hledger');
    await tool('hledger', ['-f', file, 'check', '--strict']);
    const transactions = JSON.parse(
      await tool('hledger', ['-f', file, 'print', '-O', 'json']),
    ) as Array<{ tcode: string; tdescription: string; ttags: Array<[string, string]> }>;
    const { rows } = await database.pool.query<{ id: string; kind: string }>(
      'select id::text as id, kind from ledger_entries order by id',
    );
    expect(transactions.map((t) => t.tcode).sort()).toEqual(rows.map((r) => r.id));
    const byCode = new Map(transactions.map((t) => [t.tcode, t]));
    for (const row of rows) {
      const tags = byCode.get(row.id)!.ttags;
      expect({ id: row.id, kinds: tags.filter(([n]) => n === 'kind') }).toEqual({
        id: row.id,
        kinds: [['kind', row.kind]],
      });
    }
    for (const [entryId, text] of metadataTexts) {
      const transaction = byCode.get(entryId)!;
      expect(transaction.tdescription.replaceAll('\uFF1B', ';')).toBe(
        hledgerTrim(text.replace(/[\r\n\t]+/g, ' ')),
      );
      const tag = (name: string) => transaction.ttags.find(([n]) => n === name)?.[1];
      expect(tag('model')).toBe(hledgerTrim(text.replace(/[,\r\n]/g, ' ')));
      expect(tag('request')).toBe(hledgerTrim(`req ${text}`.replace(/[,\r\n]/g, ' ')));
    }
  });

  test('beancount: narration and metadata read back as written (line breaks and tabs as spaces)', async () => {
    const file = await exportFile('beancount');
    const read = await beancountExact(file);
    expect(read.errors).toEqual([]);
    const byEntry = new Map(read.transactions.map((t) => [t.meta['entry'], t]));
    const { rows } = await database.pool.query<{ n: string }>(
      'select count(*)::text as n from ledger_entries',
    );
    expect(read.transactions).toHaveLength(Number(rows[0]!.n));
    const flat = (text: string) => text.replace(/[\r\n\t]+/g, ' ');
    for (const [entryId, text] of metadataTexts) {
      const transaction = byEntry.get(entryId)!;
      expect(transaction.narration).toBe(flat(text));
      expect(transaction.meta).toMatchObject({
        kind: 'usage',
        request_id: flat(`req ${text}`),
        model: flat(text),
        // An empty rate is no rate: no metadata line.
        ...(text ? { rate: flat(text), rate_source: flat(text) } : {}),
      });
    }
  });

  test('CSV: every description and chain reference reads back exactly, one record per posting', async () => {
    const rows = csvObjects(await exportText('csv'));
    const { rows: count } = await database.pool.query<{ n: string }>(
      'select count(*)::text as n from ledger_postings',
    );
    expect(rows).toHaveLength(Number(count[0]!.n));
    for (const [entryId, text] of metadataTexts) {
      const lines = rows.filter((r) => r['entry_id'] === entryId);
      expect(lines).toHaveLength(2);
      for (const line of lines) {
        expect(csvTextValue(line['description']!)).toBe(text);
        expect(csvTextValue(line['rate']!)).toBe(text);
        expect(csvTextValue(line['chain_ref']!)).toMatch(/:\d+$/);
      }
    }
  });
});

describe('reversals, shortfalls and reorgs', () => {
  test('every export links each reversal to its entry, and the balances agree in every tool', async () => {
    const csv = csvObjects(await exportText('csv'));
    const reverses = (id: string) => [
      ...new Set(csv.filter((r) => r['entry_id'] === id).map((r) => r['reverses_entry_id'])),
    ];
    expect(reverses(ids['reversal']!)).toEqual([ids['credit']]);
    expect(reverses(ids['reversalOfReversal']!)).toEqual([ids['reversal']]);
    expect(reverses(ids['reorg']!)).toEqual([ids['deposit']]);
    expect(reverses(ids['again']!)).toEqual(['']);

    const hledger = await exportFile('hledger');
    const balances = await hledgerBalance(hledger);
    const beancount = await beancountExact(await exportFile('beancount'));
    expect(beancount.errors).toEqual([]);
    expect(beancount.totals).toEqual(
      Object.fromEntries(
        Object.entries(balances).map(([k, v]) => {
          const [account, currency] = k.split('|');
          return [`${beancountAccount(account!)}|${currency}`, v];
        }),
      ),
    );
    const { carol, dave } = users;
    expect(balances).toMatchObject({
      // The credit stands again after the reversal of its reversal; the deposit mined again
      // repaid the receivable its reorg left and credited the rest.
      [`${customer(dave)}|USD`]: new Decimal('-7.123456789012345678')
        .sub('10.000001')
        .add('15')
        .add('10.000001')
        .sub('7.876543210987654322')
        .sub('10.000001')
        .add('7.876543210987654322')
        .toString(),
      [`${receivable(dave)}|USD`]: '0',
      // The hold took what carol had (1.000000000000000001); the rest is her receivable.
      [`${receivable(carol)}|USD`]: '0.75',
      [`${customer(carol)}|USD`]: `-${UNIT.USD}`,
    });
    expect(balances[`${customer(dave)}|USD`]).toBe('-2.123457789012345678');
    const tags = JSON.parse(
      await tool('hledger', ['-f', hledger, 'print', '-O', 'json']),
    ) as Array<{
      tcode: string;
      ttags: Array<[string, string]>;
    }>;
    expect(
      tags
        .find((t) => t.tcode === ids['reversalOfReversal'])!
        .ttags.find(([n]) => n === 'reverses'),
    ).toEqual(['reverses', ids['reversal']]);
    const meta = beancount.transactions.find((t) => t.meta['entry'] === ids['reversalOfReversal'])!;
    expect(meta.meta['reverses']).toBe(ids['reversal']);
  });

  test("statements: each customer's running balance ends at the ledger's balance", async () => {
    for (const userId of Object.values(users)) {
      const rows = csvObjects(await collect(streamStatementCsv(database.pool, { userId })));
      let running = new Decimal(0);
      for (const row of rows) {
        running = running.add(row['amount']!);
        expect(row['balance']).toBe(running.toString());
      }
      expect(running.toString()).toBe(
        (await ledger.getBalance(customer(userId))).posted.toString(),
      );
    }
  });
});

describe('periods cut at the instant entries were written', () => {
  test('from/to at T: the entry written at T is in [T, ...) and not in [..., T), whatever the zone', async () => {
    const idsOf = async (filter: JournalFilter) =>
      (await exportText('jsonl', filter))
        .trimEnd()
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { id: string }).id);
    for (const at of [T1.at, await inPlusEight(T1.at)]) {
      expect(await idsOf({ to: at })).not.toContain(T1.entryId);
      expect(await idsOf({ from: at, to: T2.at })).toContain(T1.entryId);
    }
    expect(await idsOf({ to: await microsecondAfter(T1.at) })).toContain(T1.entryId);
    expect(await idsOf({ from: await microsecondAfter(T1.at) })).not.toContain(T1.entryId);
    expect(await idsOf({ from: T1.at, to: T1.at })).toEqual([]);
    const hledger = await exportText('hledger', { from: T2.at });
    expect(hledger).toContain(`(${T2.entryId}) written at T2`);
    expect(hledger).not.toContain(`(${T1.entryId})`);
  });

  test('statements cut at T: the line written at T opens the later one, and they chain', async () => {
    const userId = users.carol;
    const whole = csvObjects(await collect(streamStatementCsv(database.pool, { userId })));
    const parts = [
      await collect(streamStatementCsv(database.pool, { userId, to: T1.at })),
      await collect(streamStatementCsv(database.pool, { userId, from: T1.at, to: T2.at })),
      await collect(streamStatementCsv(database.pool, { userId, from: T2.at })),
    ].map(csvObjects);
    expect(parts.flat()).toEqual(whole);
    expect(parts[0]!.map((r) => r['entry_id'])).not.toContain(T1.entryId);
    expect(parts[1]![0]!['entry_id']).toBe(T1.entryId);
    expect(parts[2]![0]!['entry_id']).toBe(T2.entryId);
  });

  test('consecutive periods add up to the whole, in hledger and in beancount', async () => {
    const periods: JournalFilter[] = [{ to: T1.at }, { from: T1.at, to: T2.at }, { from: T2.at }];
    const hledger: Array<Record<string, string>> = [];
    const beancount: Array<Record<string, string>> = [];
    for (const period of periods) {
      const file = await exportFile('hledger', period);
      await tool('hledger', ['-f', file, 'check', '--strict']);
      hledger.push(await hledgerBalance(file));
      const read = await beancountExact(await exportFile('beancount', period));
      expect(read.errors).toEqual([]);
      beancount.push(read.totals);
    }
    const whole = await trialBalances(ledger);
    expect(addBalances(...hledger)).toEqual(whole);
    expect(addBalances(...beancount)).toEqual(await trialBalances(ledger, beancountAccount));
  });

  test('the trial balance at T is hledger bal and beancount of the export up to T', async () => {
    for (const to of [T1.at, T2.at, await microsecondAfter(T2.at)]) {
      const trial = await trialBalanceCsv({ to });
      const hledger = await exportFile('hledger', { to });
      expect({ to, balances: await hledgerBalance(hledger) }).toEqual({ to, balances: trial });
      const beancount = await beancountExact(await exportFile('beancount', { to }));
      expect({ to, totals: beancount.totals }).toEqual({
        to,
        totals: await trialBalanceCsv({ to }, beancountAccount),
      });
    }
  });

  test("basis effective at a month's boundary: the trial balance is `hledger bal -e` and beancount's of the whole export", async () => {
    const hledger = await exportFile('hledger', { basis: 'effective' });
    const beancount = await exportFile('beancount', { basis: 'effective' });
    for (const [day, dayAfter] of [
      ['2026-11-01', '2026-11-02'],
      ['2026-10-31', '2026-11-01'],
    ] as const) {
      // A month's boundary in UTC, written as a date and as the same instant in UTC+08:00.
      for (const to of [day, `${day}T08:00:00+08:00`]) {
        const trial = await trialBalanceCsv({ to, basis: 'effective' });
        expect({ to, balances: await hledgerBalance(hledger, '-e', day) }).toEqual({
          to,
          balances: trial,
        });
        const ranged = await exportFile('hledger', { to, basis: 'effective' });
        expect(await hledgerBalance(ranged)).toEqual(trial);
        expect((await beancountExact(beancount, day)).totals).toEqual(
          await trialBalanceCsv({ to, basis: 'effective' }, beancountAccount),
        );
      }
      const inDay = await exportText('jsonl', { from: day, to: dayAfter, basis: 'effective' });
      expect(inDay.includes(ids['firstOfNovember']!)).toBe(day === '2026-11-01');
      expect(inDay.includes(ids['lastOfOctober']!)).toBe(day === '2026-10-31');
    }
    const text = readFileSync(hledger, 'utf8');
    expect(text).toContain(`0001-01-01 (${ids['yearOne']})`);
    expect(text).toContain(`9999-12-31 (${ids['year9999']})`);
    expect(text).toContain(`2026-10-31 (${ids['lastOfOctober']})`);
    expect(text).toContain(`2026-11-01 (${ids['firstOfNovember']})`);
  });
});

describe('an account filter: whole entries, so the account balances as in the trial balance', () => {
  test.each(['liabilities:customers:', 'assets:receivables:', 'revenue:usage'])(
    '%s',
    async (account) => {
      const trial = await trialBalances(ledger);
      const inside = (key: string) =>
        key.startsWith(account.endsWith(':') ? account : `${account}:`) ||
        key.startsWith(`${account}|`);
      const expected = Object.fromEntries(Object.entries(trial).filter(([key]) => inside(key)));
      const hledger = await exportFile('hledger', { account });
      await tool('hledger', ['-f', hledger, 'check', '--strict']);
      const balances = await hledgerBalance(hledger);
      expect(Object.fromEntries(Object.entries(balances).filter(([key]) => inside(key)))).toEqual(
        expected,
      );
      const read = await beancountExact(await exportFile('beancount', { account }));
      const mapped = Object.fromEntries(
        Object.entries(expected).map(([key, value]) => {
          const [code, currency] = key.split('|');
          return [`${beancountAccount(code!)}|${currency}`, value];
        }),
      );
      expect(read.totals).toMatchObject(mapped);
    },
  );
});

describe('the seals, re-verified from the exports as the docs describe', () => {
  test("the docs' verify_seals.py recomputes every seal from the JSONL journal", async () => {
    expect(await verifySeals(database.pool)).toEqual([]);
    const docs = readFileSync(new URL('../../docs/accounting-exports.md', import.meta.url), 'utf8');
    const recipe = /```python\n(# verify_seals\.py[\s\S]*?)```/.exec(docs)?.[1];
    expect(recipe).toBeDefined();
    const script = join(dir, 'verify_seals.py');
    writeFileSync(script, recipe!);
    const journal = join(dir, 'journal.jsonl');
    const seals = join(dir, 'seals.jsonl');
    writeFileSync(journal, await exportText('jsonl'));
    writeFileSync(seals, await collect(streamSealsJsonl(database.pool)));
    const entries = readFileSync(journal, 'utf8').trimEnd().split('\n');
    expect(entries.every((line) => /,"seal":\d+,/.test(line))).toBe(true);
    const out = (await tool('python3', [script, journal, seals])).trimEnd().split('\n');
    expect(out.length).toBeGreaterThan(0);
    let covered = 0;
    for (const line of out) {
      expect(line).toMatch(/^seal \d+: ok \(\d+ entries\)$/);
      covered += Number(/\((\d+) entries\)/.exec(line)![1]);
    }
    expect(covered).toBe(entries.length);
  });
});

describe('the largest amounts the ledger accepts (36 integer digits)', () => {
  let big: TestDatabase;
  let bigLedger: PostgresLedger;
  let largest: string;
  let partial: string;

  beforeAll(async () => {
    big = await createTestDatabase();
    bigLedger = await openLedger(big.pool);
    for (const currency of ['USDT', 'ETH'] as const) {
      await bigLedger.postEntry({
        kind: 'deposit',
        description: `the largest ${currency} amount`,
        postings: [
          {
            account: `assets:custody:ethereum:${currency}:0xbig`,
            amount: LEDGER_MAX[currency],
            currency,
          },
          { account: `equity:trading:${currency}`, amount: `-${LEDGER_MAX[currency]}` },
        ],
      });
    }
    await bigLedger.postEntry({
      kind: 'deposit',
      description: 'the smallest ETH amount',
      postings: [
        { account: 'assets:custody:ethereum:ETH:0xsmall', amount: UNIT.ETH, currency: 'ETH' },
        { account: 'equity:trading:ETH', amount: `-${UNIT.ETH}` },
      ],
    });
    // Four amounts of 28 digits, whose partial sum needs 29: bean-check would round it.
    partial = (
      await bigLedger.postEntry({
        kind: 'adjustment',
        description: 'two debits and two credits of 9 billion and a unit',
        postings: [
          { account: 'expenses:promotions', amount: `9000000000.${UNIT.USD.slice(2)}` },
          { account: 'expenses:losses', amount: `9000000000.${UNIT.USD.slice(2)}` },
          { account: 'liabilities:customers:3', amount: `-9000000000.${UNIT.USD.slice(2)}` },
          { account: 'liabilities:customers:4', amount: `-9000000000.${UNIT.USD.slice(2)}` },
        ],
      })
    ).entryId;
    // Three postings in one currency: what beancount must add up exactly to balance it.
    largest = (
      await bigLedger.postEntry({
        kind: 'adjustment',
        description: 'the largest USD amount, in two parts',
        postings: [
          { account: 'expenses:promotions', amount: LEDGER_MAX.USD },
          { account: 'liabilities:customers:1', amount: `-${'9'.repeat(36)}` },
          { account: 'liabilities:customers:2', amount: `-0.${'9'.repeat(18)}` },
        ],
      })
    ).entryId;
  });
  afterAll(async () => {
    await bigLedger?.close();
    await big?.drop();
  });

  const text = (format: JournalFormat, filter: JournalFilter = {}) =>
    collect(streamJournal(big.pool, { format, filter }));

  test('hledger reads every digit: check --strict passes, balances are the trial balance', async () => {
    const file = join(dir, 'largest.journal');
    writeFileSync(file, await text('hledger'));
    await tool('hledger', ['-f', file, 'check', '--strict']);
    const balances = await hledgerBalance(file);
    expect(balances).toEqual(await trialBalances(bigLedger));
    expect(balances).toMatchObject({
      'liabilities:customers:1|USD': `-${'9'.repeat(36)}`,
      'assets:custody:ethereum:ETH:0xbig|ETH': LEDGER_MAX.ETH,
      'equity:trading:USDT|USDT': `-${LEDGER_MAX.USDT}`,
    });
    const csv = csvObjects(await text('csv')).filter((r) => r['entry_id'] === largest);
    expect(csv.map((r) => [r['debit'], r['credit']])).toEqual([
      [LEDGER_MAX.USD, ''],
      ['', '9'.repeat(36)],
      ['', `0.${'9'.repeat(18)}`],
    ]);
  });

  test('beancount, which reads at most 28 significant digits exactly, is refused rather than written rounded', async () => {
    // beancount reads -999...9.999... (54 digits) as -1E+36: bean-check would refuse the
    // file, or accept it with amounts that are not ours.
    const file = join(dir, 'largest.beancount');
    const outcome = await text('beancount').then(
      async (written) => {
        // Written: then beancount must read exactly our amounts (bean-check runs first).
        writeFileSync(file, written);
        return beancountExact(file);
      },
      (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
    );
    if (!(outcome instanceof Error)) {
      expect(outcome.totals).toEqual(await trialBalances(bigLedger, beancountAccount));
    }
    expect(outcome).toBeInstanceOf(AppError);
    expect(outcome).toMatchObject({ code: 'unmappable_amount', status: 422 });
    expect((outcome as Error).message).toMatch(
      /needs 5\d digits to add up its [A-Z]+ amounts exactly; beancount computes with 28/,
    );
    // Each amount within 28 digits, but not their sum.
    const sums = await text('beancount', { account: 'expenses:losses' }).catch(
      (error: unknown) => error,
    );
    expect(sums).toMatchObject({ code: 'unmappable_amount', status: 422 });
    expect((sums as Error).message).toContain(`entry ${partial} needs 29 digits`);
    // An export that holds none of those amounts is written as usual.
    const small = join(dir, 'small.beancount');
    writeFileSync(
      small,
      await text('beancount', { account: 'assets:custody:ethereum:ETH:0xsmall' }),
    );
    const read = await beancountExact(small);
    expect(read.totals).toEqual({
      'Assets:Custody:Ethereum:ETH:0xsmall|ETH': UNIT.ETH,
      'Equity:Trading:ETH|ETH': `-${UNIT.ETH}`,
    });
  });
});
