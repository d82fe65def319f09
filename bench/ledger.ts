/**
 * bench:ledger: hold+post pairs per second and pair latency, group commit vs the naive way.
 *   (a) spread over 10,000 customer accounts, (b) all on one hot account,
 *   at 1, 16 and 64 concurrent callers. Results go to stdout as a Markdown table.
 * Uses DATABASE_URL's server (default: the local PostgreSQL at 127.0.0.1:5432).
 * BENCH_SECONDS (default 5) sets the length of each cell; BENCH_CELLS=spread:64,hot:64 runs
 * only those cells, and BENCH_NAIVE=0 skips the naive baseline (both for profiling);
 * BENCH_LEDGER_LANES sets the ledger's batchConcurrency (default 1); BENCH_TRACK_FUNCTIONS=1
 * prints PostgreSQL's time in each ledger function and trigger during the measured cells.
 */
import pg from 'pg';
import { PostgresLedger } from '../ledger/index.js';
import { closedLoop, fmt, freshDatabase, measureCpu, type LoadResult } from './support.js';
import { NaiveLedger } from './naive-ledger.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 5);
const ACCOUNTS = 10_000;
const CONCURRENCY = [1, 16, 64];

const url = await freshDatabase('lingxi_bench_ledger');
const setupPool = new pg.Pool({ connectionString: url, max: 8 });
const setup = new PostgresLedger({ pool: setupPool, currencies: [{ code: 'USD', scale: 18 }] });
await setup.init();

console.error(`funding ${ACCOUNTS} accounts...`);
const customer = (i: number) => `liabilities:customers:${i}`;
await Promise.all(
  Array.from({ length: ACCOUNTS + 1 }, (_, i) =>
    setup.postEntry({
      kind: 'adjustment',
      postings: [
        { account: 'expenses:promotions', amount: '1000000' },
        { account: customer(i), amount: '-1000000' },
      ],
    }),
  ),
);
const ids = await Promise.all(
  Array.from({ length: ACCOUNTS + 1 }, (_, i) =>
    setup.resolveAccount(customer(i)).then((a) => a.id),
  ),
);
const revenueId = (await setup.resolveAccount('revenue:usage', { create: true })).id;
const HOT = ACCOUNTS; // the account funded last is the hot one

interface Row {
  mode: string;
  case: string;
  callers: number;
  result: LoadResult;
  /** Cores used during the run (this process, which is also the load generator; PostgreSQL). */
  cores?: Record<string, number | null>;
}

/** Microseconds of CPU per pair from cores used over a run, or '-' where unknown. */
function cpuPerPair(cores: number | null | undefined, result: LoadResult): string {
  return cores == null || result.perSecond === 0 ? '-' : fmt((cores / result.perSecond) * 1e6, 0);
}
const rows: Row[] = [];

// One long-lived ledger, as in a running gateway; warmed like one that has served every account once.
const trackFunctions = process.env['BENCH_TRACK_FUNCTIONS'] === '1';
const pool = new pg.Pool({
  connectionString: url,
  max: 8,
  ...(trackFunctions ? { options: '-c track_functions=pl' } : {}),
});
const ledger = new PostgresLedger({
  pool,
  currencies: [{ code: 'USD', scale: 18 }],
  batchMaxSize: 500,
  batchConcurrency: Number(process.env['BENCH_LEDGER_LANES'] ?? 1),
});
await ledger.init();
console.error('warming the ledger on every account...');
for (let i = 0; i <= ACCOUNTS; i += 64) {
  await Promise.all(
    Array.from({ length: Math.min(64, ACCOUNTS + 1 - i) }, async (_, k) => {
      const { holdId } = await ledger.createHold({
        debitAccount: customer(i + k),
        creditAccount: 'revenue:usage',
        amount: '0.01',
      });
      await ledger.voidHold({ holdId });
    }),
  );
}

// Function timings count the measured cells only, not the funding and warming above.
if (trackFunctions) await pool.query('select pg_stat_reset()');
const only = process.env['BENCH_CELLS']?.split(',');
const withNaive = process.env['BENCH_NAIVE'] !== '0';
for (const scenario of ['spread', 'hot'] as const) {
  for (const callers of CONCURRENCY) {
    if (only && !only.includes(`${scenario}:${callers}`)) continue;
    const pick = (caller: number, i: number) =>
      scenario === 'hot' ? HOT : (caller * 7919 + i * 104_729) % ACCOUNTS;

    const { result: grouped, cores } = await measureCpu({ node: process.pid }, () =>
      closedLoop(callers, SECONDS, async (caller, i) => {
        const { holdId } = await ledger.createHold({
          debitAccount: customer(pick(caller, i)),
          creditAccount: 'revenue:usage',
          amount: '0.01',
        });
        await ledger.postHold({ holdId, amount: '0.005' });
      }),
    );
    rows.push({ mode: 'group commit', case: scenario, callers, result: grouped, cores });
    console.error(
      `group commit ${scenario} x${callers}: ${fmt(grouped.perSecond, 0)} pairs/s, ` +
        `CPU per pair: Node ${cpuPerPair(cores['node'], grouped)} µs, PostgreSQL ${cpuPerPair(cores['postgres'], grouped)} µs`,
    );

    if (!withNaive) continue;
    const naivePool = new pg.Pool({ connectionString: url, max: Math.min(callers, 64) });
    const naive = new NaiveLedger(naivePool);
    const baseline = await closedLoop(callers, SECONDS, async (caller, i) => {
      const holdId = await naive.createHold(ids[pick(caller, i)]!, revenueId, '0.01');
      await naive.postHold(holdId, '0.005');
    });
    await naivePool.end();
    rows.push({ mode: 'naive', case: scenario, callers, result: baseline });
    console.error(`naive ${scenario} x${callers}: ${fmt(baseline.perSecond, 0)} pairs/s`);
  }
}

if (trackFunctions) {
  // PostgreSQL's time inside the ledger's functions and triggers during every measured cell.
  const { rows: timings } = await pool.query(
    `select funcname as function, calls, round(self_time::numeric, 1) as self_ms,
            round((self_time / calls)::numeric * 1000, 1) as us_per_call
       from pg_stat_user_functions order by self_time desc`,
  );
  console.error(timings);
}
await ledger.close();
await pool.end();
const mismatches = await setup.checkBalances();
await setup.close();
await setupPool.end();

console.log(
  `| case | callers | group commit pairs/s | p50 ms | p99 ms | Node µs CPU / pair | PostgreSQL µs CPU / pair | naive pairs/s | p50 ms | p99 ms | speed-up |`,
);
console.log(`|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|`);
for (const scenario of ['spread', 'hot']) {
  for (const callers of CONCURRENCY) {
    const find = (mode: string) =>
      rows.find((r) => r.mode === mode && r.case === scenario && r.callers === callers)?.result;
    const grouped = rows.find(
      (r) => r.mode === 'group commit' && r.case === scenario && r.callers === callers,
    );
    const g = grouped?.result;
    const n = find('naive');
    if (!g) continue;
    const naiveCells = n
      ? `${fmt(n.perSecond, 0)} | ${fmt(n.p50Ms, 2)} | ${fmt(n.p99Ms, 2)} | ${fmt(g.perSecond / n.perSecond, 1)}x`
      : '- | - | - | -';
    console.log(
      `| ${scenario} | ${callers} | ${fmt(g.perSecond, 0)} | ${fmt(g.p50Ms, 2)} | ${fmt(g.p99Ms, 2)} | ` +
        `${cpuPerPair(grouped?.cores?.['node'], g)} | ${cpuPerPair(grouped?.cores?.['postgres'], g)} | ${naiveCells} |`,
    );
  }
}
const errors = rows.reduce((sum, r) => sum + r.result.errors, 0);
console.log(
  `\nerrors: ${errors}; balance check after the run: ${mismatches.length === 0 ? 'exact' : `${mismatches.length} mismatches`}`,
);
