import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';

const run = promisify(execFile);

/** A scratch directory for export files. */
export function scratchDir(): string {
  return mkdtempSync(join(tmpdir(), 'lingxi-exports-'));
}

export async function collect(chunks: AsyncIterable<string>): Promise<string> {
  let text = '';
  for await (const chunk of chunks) text += chunk;
  return text;
}

/**
 * Runs a command and returns its stdout; a missing tool or a failing check throws (the
 * tests must fail, not skip, when hledger or beancount is absent: CI installs them).
 */
export async function tool(command: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(command, args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as { code?: unknown; stderr?: string; stdout?: string; message: string };
    if (e.code === 'ENOENT')
      throw new Error(`${command} is not installed: apt-get install -y hledger beancount`);
    throw new Error(`${command} ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`);
  }
}

/** `account|currency` to balance (debits minus credits), from `hledger balance`. */
export async function hledgerBalances(file: string): Promise<Map<string, Decimal>> {
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
  ]);
  const balances = new Map<string, Decimal>();
  for (const line of csv.trim().split('\n').slice(1)) {
    const [account, commodity, balance] = parseCsvLine(line);
    balances.set(`${account}|${commodity}`, new Decimal(balance!));
  }
  return balances;
}

const BEANCOUNT_SUMS = `
import sys, json
from beancount import loader
from beancount.core import data
entries, errors, options = loader.load_file(sys.argv[1])
totals = {}
opens = {}
transactions = []
directives = {}
for e in entries:
    directives[type(e).__name__] = directives.get(type(e).__name__, 0) + 1
    if isinstance(e, data.Transaction):
        transactions.append({'entry': e.meta.get('entry'), 'kind': e.meta.get('kind'), 'narration': e.narration})
        for p in e.postings:
            k = p.account + '|' + p.units.currency
            totals[k] = totals.get(k, 0) + p.units.number
    elif isinstance(e, data.Open):
        opens[e.account] = e.meta.get('code')
print(json.dumps({'errors': [str(x.message) for x in errors], 'totals': {k: str(v) for k, v in totals.items()}, 'opens': opens,
                  'transactions': transactions, 'directives': directives,
                  'options': {'operating_currency': options['operating_currency'], 'include': options['include']}}))
`;

/** One transaction as beancount's loader read it. */
export interface BeancountTransaction {
  /** Our entry id, from the `entry` metadata. */
  entry: string;
  kind: string;
  narration: string;
}

/**
 * Sums per beancount account and currency, each `open`'s `code` metadata, the transactions,
 * the number of directives of each type, and the options an accountant's reports depend on,
 * through beancount's own loader.
 */
export async function beancountSums(file: string): Promise<{
  errors: string[];
  totals: Map<string, Decimal>;
  opens: Record<string, string>;
  transactions: BeancountTransaction[];
  directives: Record<string, number>;
  options: { operating_currency: string[]; include: string[] };
}> {
  // beancount's modules belong to the interpreter bean-check runs on.
  const beanCheck = (await tool('sh', ['-c', 'command -v bean-check'])).trim();
  if (!beanCheck) throw new Error('bean-check is not installed: apt-get install -y beancount');
  const python = readFileSync(beanCheck, 'utf8')
    .split('\n')[0]!
    .replace(/^#!\s*/, '')
    .split(' ')[0]!;
  const script = join(scratchDir(), 'sums.py');
  writeFileSync(script, BEANCOUNT_SUMS);
  const result = JSON.parse(await tool(python, [script, file])) as {
    errors: string[];
    totals: Record<string, string>;
    opens: Record<string, string>;
    transactions: BeancountTransaction[];
    directives: Record<string, number>;
    options: { operating_currency: string[]; include: string[] };
  };
  return {
    ...result,
    totals: new Map(Object.entries(result.totals).map(([k, v]) => [k, new Decimal(v)])),
  };
}

/**
 * RFC 4180 records of a whole CSV text. `separator` ';' reads the file as a spreadsheet set
 * to a locale whose list separator is the semicolon does (Excel in much of Europe): quoted
 * fields stay whole, and a semicolon elsewhere starts a new cell.
 */
export function parseCsv(text: string, separator: ',' | ';' = ','): string[][] {
  const records: string[][] = [];
  let field = '';
  let record: string[] = [];
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === separator) {
      record.push(field);
      field = '';
    } else if (c === '\n') {
      record.push(field);
      records.push(record);
      record = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || record.length > 0) records.push([...record, field]);
  return records;
}

function parseCsvLine(line: string): string[] {
  return parseCsv(`${line}\n`)[0] ?? [];
}

/**
 * Whether a spreadsheet would run a cell it read as a formula: one that starts (after any
 * white space, which some spreadsheets drop) with `=`, `+`, `-` or `@` and is not a plain
 * number (`-1.5` is a number; `-2+3` is a formula).
 */
export function runsAsFormula(cell: string): boolean {
  return /^\s*[=+\-@]/.test(cell) && !/^-?\d+(\.\d+)?$/.test(cell);
}

/** A CSV text cell's original text, as docs/accounting-exports.md says: drop one leading `'`. */
export function csvTextValue(cell: string): string {
  return cell.startsWith("'") ? cell.slice(1) : cell;
}

/** CSV text as objects keyed by the header. */
export function csvObjects(text: string): Array<Record<string, string>> {
  const [header, ...rows] = parseCsv(text);
  return rows.map((row) => Object.fromEntries(header!.map((name, i) => [name, row[i] ?? ''])));
}

/** `account|currency` to debits minus credits, from the ledger's own trial balance. */
export async function trialBalances(
  ledger: PostgresLedger,
  rename = (code: string) => code,
): Promise<Record<string, string>> {
  const trial = await ledger.trialBalance();
  return Object.fromEntries(
    trial.accounts
      .filter((a) => !a.debit.isZero() || !a.credit.isZero())
      .map((a) => [`${rename(a.account)}|${a.currency}`, a.balance.toString()])
      .sort(([a], [b]) => a!.localeCompare(b!)),
  );
}

/** Balances read by a tool, as `trialBalances` shows them. */
export function show(balances: Map<string, Decimal>): Record<string, string> {
  return Object.fromEntries(
    [...balances].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, v.toString()]),
  );
}
