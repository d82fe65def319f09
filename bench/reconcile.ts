/**
 * bench:reconcile: a book of 1,000,000 postings over 100,000 accounts, generated with
 * set-based SQL straight into the ledger tables (each batch of entries and its postings in
 * one statement, as the triggers demand, with account versions, running balances and cached
 * totals exact), plus a usage row for every charged call. Then it times:
 *   1. sealing the whole book (sealJournal: seals of at most 50,000 entries),
 *   2. the full ledger-integrity run (runLedgerIntegrity: every check, the seal chain re-hashed),
 *   3. a CSV export of the whole journal and of its first tenth, each in a child process
 *      that samples its resident memory (flat memory: both peaks should be about equal).
 * Results go to stdout as Markdown. Uses DATABASE_URL's server (default: the local
 * PostgreSQL at 127.0.0.1:5432).
 */
import { execFileSync } from 'node:child_process';
import { createWriteStream, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { PostgresLedger } from '../ledger/index.js';
import { streamJournal } from '../src/exports/streamJournal.js';
import { writeChunks } from '../src/exports/sinks.js';
import { runLedgerIntegrity } from '../src/integrity/runLedgerIntegrity.js';
import { sealJournal } from '../src/integrity/sealJournal.js';
import { fmt, freshDatabase } from './support.js';

const CUSTOMERS = 99_000;
const CUSTODY_ADDRESSES = 997; // + equity:trading:USDT, equity:trading:USD, revenue:usage = 100,000 accounts
const DEPOSITS = CUSTOMERS; // 4 postings each: 396,000
const CALLS = 302_000; // 2 postings each: 604,000; total 1,000,000
const BATCHES = 10;
const START = '2026-10-01T00:00:00Z';

if (process.argv[2] === '--export-child') {
  await exportChild(process.argv[3]!, process.argv[4] === '-' ? undefined : process.argv[4]);
  process.exit(0);
}

const url = await freshDatabase('lingxi_bench_reconcile');
const pool = new pg.Pool({ connectionString: url, max: 10 });
const currencies = [
  { code: 'USD', scale: 18 },
  { code: 'USDT', scale: 6 },
];
const ledger = new PostgresLedger({ pool, currencies });
await ledger.init();

console.error('generating the book...');
const t0 = performance.now();
await pool.query(
  `insert into users (telegram_id) select g from generate_series(1, ${CUSTOMERS}) g`,
);
await pool.query(`
  insert into ledger_accounts (code, type, currency, no_negative)
  select 'liabilities:customers:' || id, 'liability', 'USD', true from users
  union all
  select 'assets:custody:tron:USDT:T' || lpad(g::text, 33, 'X'), 'asset', 'USDT', false
    from generate_series(1, ${CUSTODY_ADDRESSES}) g
  union all values ('equity:trading:USDT', 'equity', 'USDT', false), ('equity:trading:USD', 'equity', 'USD', false),
                   ('revenue:usage', 'revenue', 'USD', false)`);

/**
 * One statement: the entries of `source` (k, created_at, kind, description, metadata) and
 * their postings (k, line, account_id, currency, amount), each account's versions and
 * running balances continuing from its cached totals, and the cached totals moved on.
 */
async function writeBatch(entries: string, postings: string, usage = ''): Promise<void> {
  await pool.query(`
    with src as (${entries}),
    e as (select src.*, gen_random_uuid() as id from src),
    p as (${postings}),
    numbered as (
      select e.id as entry_id, p.line, p.account_id, p.currency, p.amount,
             a.version + row_number() over w as account_version,
             a.debits_posted - a.credits_posted + sum(p.amount) over (w rows unbounded preceding) as balance_after
        from p join e using (k) join ledger_accounts a on a.id = p.account_id
      window w as (partition by p.account_id order by p.k, p.line)
    ),
    ins_e as (
      insert into ledger_entries (id, kind, description, metadata, effective_at, created_at)
      select id, kind, description, metadata, created_at, created_at from e
    ),
    ins_p as (
      insert into ledger_postings (entry_id, line, account_id, currency, amount, account_version, balance_after)
      select entry_id, line, account_id, currency, amount, account_version, balance_after from numbered
    ),
    totals as (
      select account_id, coalesce(sum(amount) filter (where amount > 0), 0) as debits,
             coalesce(-sum(amount) filter (where amount < 0), 0) as credits, count(*) as n
        from p group by account_id
    ),
    upd as (
      update ledger_accounts a set debits_posted = a.debits_posted + t.debits,
             credits_posted = a.credits_posted + t.credits, version = a.version + t.n
        from totals t where a.id = t.account_id
    )
    ${usage}
    select 1`);
}

const account = (code: string) => `(select id from ledger_accounts where code = '${code}')`;
const perDeposits = DEPOSITS / BATCHES;
for (let b = 0; b < BATCHES; b += 1) {
  const from = b * perDeposits + 1;
  const to = (b + 1) * perDeposits;
  // Deposit k: customer k, custody address k mod 997, 100 + k mod 900 USDT + some cents, rate 1.
  await writeBatch(
    `select k, timestamptz '${START}' + k * interval '1 second' as created_at, 'deposit' as kind,
            'USDT deposit on tron' as description,
            jsonb_build_object('rate', '1', 'rateSource', 'fixed', 'chain',
              jsonb_build_object('network', 'tron', 'txHash', md5(k::text) || md5((k + 1)::text), 'logIndex', 0,
                                 'blockNumber', (68000000 + k)::text)) as metadata,
            (100 + k % 900)::numeric + (k % 100)::numeric / 100 as usdt
       from generate_series(${from}, ${to}) k`,
    `select k, line, account_id, currency, amount from e
       cross join lateral (values
         (1, (select id from ledger_accounts where code = 'assets:custody:tron:USDT:T' || lpad(((k - 1) % ${CUSTODY_ADDRESSES} + 1)::text, 33, 'X')), 'USDT', usdt),
         (2, ${account('equity:trading:USDT')}, 'USDT', -usdt),
         (3, ${account('equity:trading:USD')}, 'USD', usdt),
         (4, (select id from ledger_accounts where code = 'liabilities:customers:' || k), 'USD', -usdt)
       ) as l(line, account_id, currency, amount)`,
  );
  console.error(`  deposits ${to}/${DEPOSITS}`);
}
const perCalls = CALLS / BATCHES;
const depositsEnd = `timestamptz '${START}' + interval '2 days'`;
for (let b = 0; b < BATCHES; b += 1) {
  const from = b * perCalls + 1;
  const to = (b + 1) * perCalls;
  // Call k: customer k mod 99,000, cost (k mod 997 + 1) * 0.000001234567 USD, 8 s apart over 28 days.
  await writeBatch(
    `select k, ${depositsEnd} + k * interval '8 seconds' as created_at, 'usage' as kind,
            'chat.completions gpt-4o-mini' as description,
            jsonb_build_object('requestId', 'bench-' || k, 'model', 'gpt-4o-mini') as metadata,
            ((k % 997 + 1) * 0.000001234567)::numeric as cost, (k - 1) % ${CUSTOMERS} + 1 as user_id
       from generate_series(${from}, ${to}) k`,
    `select k, line, account_id, 'USD' as currency, amount from e
       cross join lateral (values
         (1, (select id from ledger_accounts where code = 'liabilities:customers:' || e.user_id), cost),
         (2, ${account('revenue:usage')}, -cost)
       ) as l(line, account_id, amount)`,
    `, usage as (
      insert into usage_records (request_id, user_id, endpoint, model, prompt_tokens, completion_tokens, cost_usd,
        entry_id, started_at, first_byte_at, finished_at, latency_ms, http_status, outcome)
      select 'bench-' || k, user_id, 'chat.completions', 'gpt-4o-mini', 120, 48, cost, id,
             created_at - interval '900 milliseconds', created_at - interval '600 milliseconds',
             created_at - interval '1 millisecond', 899, 200, 'ok' from e
    )`,
  );
  console.error(`  calls ${to}/${CALLS}`);
}
// As autovacuum would have by now: statistics, and visibility maps for index-only scans.
await pool.query('vacuum analyze');
const generateS = (performance.now() - t0) / 1000;
const { rows: sizes } = await pool.query<{
  accounts: string;
  entries: string;
  postings: string;
  usage: string;
}>(`
  select (select count(*) from ledger_accounts)::text as accounts, (select count(*) from ledger_entries)::text as entries,
         (select count(*) from ledger_postings)::text as postings, (select count(*) from usage_records)::text as usage`);
const size = sizes[0]!;
console.error(`generated in ${fmt(generateS)} s: ${JSON.stringify(size)}`);

console.error('sealing...');
let t = performance.now();
const seal = await sealJournal(pool);
const sealS = (performance.now() - t) / 1000;
if (!seal) throw new Error('nothing was sealed');
const sealedEntries = (
  await pool.query<{ n: string }>('select sum(entry_count)::text as n from ledger_seals')
).rows[0]!.n;

console.error('integrity run...');
t = performance.now();
const integrity = await runLedgerIntegrity({ pool, ledger });
const integrityS = (performance.now() - t) / 1000;
const mainRssMb = process.resourceUsage().maxRSS / 1024;

const tenthTo = (
  await pool.query<{ to: string }>(
    `select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as to
     from ledger_entries order by created_at, id offset ${Math.floor(Number(size.entries) / 10)} limit 1`,
  )
).rows[0]!.to;
await ledger.close();
await pool.end();

console.error('exporting...');
const tenth = runExportChild(tenthTo);
const whole = runExportChild('-');

console.log(`| step | time | notes |`);
console.log(`|---|---:|---|`);
console.log(
  `| generate (set-based SQL) | ${fmt(generateS)} s | ${size.accounts} accounts, ${size.entries} entries, ${size.postings} postings, ${size.usage} usage rows |`,
);
console.log(
  `| seal the whole book (sealJournal) | ${fmt(sealS)} s | ${seal.seal} seals of at most 50,000 entries cover ${sealedEntries} entries |`,
);
console.log(
  `| **ledger-integrity run** | **${fmt(integrityS)} s** | ${integrity.findings.length} findings; checks in parallel: ${Object.entries(
    integrity.stats.checks,
  )
    .map(([name, c]) => `${name} ${fmt(c.durationMs / 1000)} s`)
    .join(', ')}; peak RSS ${fmt(mainRssMb, 0)} MB |`,
);
for (const [name, result] of [
  ['CSV export, first tenth', tenth],
  ['CSV export, whole journal', whole],
] as const) {
  console.log(
    `| ${name} | ${fmt(result.seconds)} s | ${result.postings} postings, ${fmt(result.bytes / 1048576)} MiB, ${fmt(result.postings / result.seconds, 0)} postings/s; RSS ${fmt(result.baseRssMb, 0)} MB before, peak ${fmt(result.peakRssMb, 0)} MB |`,
  );
}
if (integrity.findings.length > 0) {
  console.error(JSON.stringify(integrity.findings.slice(0, 5), null, 2));
  process.exitCode = 1;
}

interface ExportResult {
  baseRssMb: number;
  seconds: number;
  bytes: number;
  postings: number;
  peakRssMb: number;
}

/** The export in a child process of its own, so its peak memory is its own. */
function runExportChild(to: string): ExportResult {
  const out = execFileSync(
    process.execPath,
    [...process.execArgv, process.argv[1]!, '--export-child', url, to],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1024 * 1024 },
  );
  return JSON.parse(out.trim().split('\n').at(-1)!) as ExportResult;
}

async function exportChild(databaseUrl: string, to: string | undefined): Promise<void> {
  const childPool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  await childPool.query('select 1');
  const base = process.memoryUsage().rss;
  let peak = base;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  const file = join(tmpdir(), `lingxi-bench-export-${process.pid}.csv`);
  const started = performance.now();
  let postings = 0;
  const stream = createWriteStream(file);
  await writeChunks(
    streamJournal(childPool, {
      format: 'csv',
      filter: to === undefined ? {} : { to },
      onProgress: (p) => (postings = p.postings),
    }),
    stream,
  );
  await new Promise((resolve) => stream.end(resolve));
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss, process.resourceUsage().maxRSS * 1024);
  const bytes = statSync(file).size;
  execFileSync('rm', ['-f', file]);
  await childPool.end();
  console.log(
    JSON.stringify({
      baseRssMb: base / 1048576,
      seconds,
      bytes,
      postings,
      peakRssMb: peak / 1048576,
    }),
  );
}
