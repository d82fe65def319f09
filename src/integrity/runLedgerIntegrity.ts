import type pg from 'pg';
import type { PostgresLedger } from '../../ledger/index.js';
import { checkCachedBalances } from './checks/cachedBalances.js';
import { checkOverdueHolds } from './checks/overdueHolds.js';
import { checkRunningBalances } from './checks/runningBalances.js';
import { checkTrialBalance, type CurrencyTotals } from './checks/trialBalance.js';
import { checkUsageRevenue } from './checks/usageRevenue.js';
import type { Finding } from './findings.js';
import { verifySealChain, type VerifySealsStats } from './verifySeals.js';

export const INTEGRITY_CHECKS = [
  'trial-balance',
  'cached-balances',
  'running-balances',
  'overdue-holds',
  'usage-revenue',
  'seals',
] as const;
export type IntegrityCheck = (typeof INTEGRITY_CHECKS)[number];

export interface RunLedgerIntegrityOptions {
  /** Expire the overdue holds found (default true); false only counts them. */
  expireHolds?: boolean;
  /** Which checks to run (default all). */
  checks?: readonly IntegrityCheck[];
  /** Rows per cursor page while re-hashing sealed entries. */
  pageRows?: number;
}

export interface LedgerIntegrityStats {
  durationMs: number;
  entries: number;
  postings: number;
  /** Per currency, from the postings. */
  totals: CurrencyTotals[];
  holdsOverdue: number;
  holdsExpired: number;
  usageDays: number;
  usageUsd: string;
  revenueUsd: string;
  seals: VerifySealsStats | null;
  /** Time and findings per check. */
  checks: Partial<Record<IntegrityCheck, { durationMs: number; findings: number }>>;
}

export interface LedgerIntegrityResult {
  /** In check order; empty for a clean book. */
  findings: Finding[];
  stats: LedgerIntegrityStats;
}

/**
 * Every ledger-integrity check, concurrently (each on its own connection of `pool`):
 * trial balance zero per currency and per entry, cached balances against postings and
 * holds, running balances, overdue holds (expired and counted), usage against revenue
 * per day, and the seal chain re-verified. Reads only, except the hold expiry, which goes
 * through the ledger. Findings are data for the caller (a reconciliation run stores them).
 *
 * @example const { findings } = await runLedgerIntegrity({ pool: runtime.database.pool, ledger: runtime.ledger })
 */
export async function runLedgerIntegrity(
  target: { pool: pg.Pool; ledger: PostgresLedger },
  options: RunLedgerIntegrityOptions = {},
): Promise<LedgerIntegrityResult> {
  const started = performance.now();
  const enabled = new Set<IntegrityCheck>(options.checks ?? INTEGRITY_CHECKS);
  const { pool, ledger } = target;
  const stats: LedgerIntegrityStats = {
    durationMs: 0,
    entries: 0,
    postings: 0,
    totals: [],
    holdsOverdue: 0,
    holdsExpired: 0,
    usageDays: 0,
    usageUsd: '0',
    revenueUsd: '0',
    seals: null,
    checks: {},
  };
  const timed = async (
    check: IntegrityCheck,
    run: () => Promise<Finding[]>,
  ): Promise<Finding[]> => {
    if (!enabled.has(check)) return [];
    const t0 = performance.now();
    const findings = await run();
    stats.checks[check] = {
      durationMs: Math.round(performance.now() - t0),
      findings: findings.length,
    };
    return findings;
  };
  const results = await Promise.all([
    timed('trial-balance', async () => {
      const result = await checkTrialBalance(pool);
      stats.totals = result.totals;
      stats.entries = result.entries;
      stats.postings = result.postings;
      return result.findings;
    }),
    timed('cached-balances', () => checkCachedBalances(ledger, pool)),
    timed('running-balances', () => checkRunningBalances(pool)),
    timed('overdue-holds', async () => {
      const result = await checkOverdueHolds(pool, ledger, { expire: options.expireHolds ?? true });
      stats.holdsOverdue = result.overdue;
      stats.holdsExpired = result.expired;
      return result.findings;
    }),
    timed('usage-revenue', async () => {
      const result = await checkUsageRevenue(pool);
      stats.usageDays = result.days;
      stats.usageUsd = result.usageUsd;
      stats.revenueUsd = result.revenueUsd;
      return result.findings;
    }),
    timed('seals', async () => {
      const result = await verifySealChain(
        pool,
        options.pageRows ? { pageRows: options.pageRows } : {},
      );
      stats.seals = result.stats;
      return result.findings;
    }),
  ]);
  stats.durationMs = Math.round(performance.now() - started);
  return { findings: results.flat(), stats };
}
