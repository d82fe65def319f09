import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import { createAdapters } from '../../chain-watchers/pipeline/createWatcher.js';
import { AppError } from '../errors.js';
import type { Finding } from '../integrity/findings.js';
import { runLedgerIntegrity } from '../integrity/runLedgerIntegrity.js';
import type { Runtime } from '../runtime.js';
import { sendAlert } from './alerts.js';
import { reconcileNetwork, type ChainFinding } from './reconcileNetwork.js';

export interface ReconciliationRun {
  runId: string;
  status: 'clean' | 'findings' | 'failed';
  startedAt: string;
  finishedAt: string;
  /** Per network, the block the chain was compared at. */
  blocks: Record<string, string>;
  findings: Array<Finding & { network?: string; asset?: string; address?: string }>;
  stats: Record<string, unknown>;
}

export interface RunReconciliationParameters {
  trigger: string;
  /** Only these networks (default all); the ledger checks always run. */
  networks?: string[];
  /** Adapters to use instead of building them from the config (tests, the cron role). */
  adapters?: ReadonlyMap<string, ChainAdapter>;
}

const LOCK = 'lingxi:reconciliation';

/**
 * One reconciliation run: ledger integrity (trial balance, cached and running balances,
 * overdue holds expired, usage against revenue per day, the seal chain), then chain against
 * ledger for each network. The run and its findings are stored; error-level findings go to
 * the alert webhook. Two runs started at once take turns (advisory lock).
 */
export async function runReconciliation(
  runtime: Runtime,
  params: RunReconciliationParameters,
): Promise<ReconciliationRun> {
  const { config, database, ledger, logger, metrics } = runtime;
  const networks = params.networks?.length
    ? params.networks.map((name) => {
        const network = config.networks.find((n) => n.name === name);
        if (!network)
          throw new AppError('unknown_network', `no network named "${name}" in the config`);
        return network;
      })
    : config.networks;
  const lock = await database.pool.connect();
  const ownAdapters = params.adapters
    ? null
    : createAdapters(networks, logger.child({ role: 'reconcile' }));
  const adapters = params.adapters ?? ownAdapters!;
  try {
    await lock.query('select pg_advisory_lock(hashtext($1))', [LOCK]);
    const run = await database.db
      .insertInto('reconciliation_runs')
      .values({ trigger: params.trigger, status: 'running', blocks: '{}', stats: '{}' })
      .returning(['id', 'started_at'])
      .executeTakeFirstOrThrow();
    const findings: ReconciliationRun['findings'] = [];
    const blocks: Record<string, string> = {};
    const stats: Record<string, unknown> = {};
    try {
      const integrity = await runLedgerIntegrity({ pool: database.pool, ledger });
      findings.push(...integrity.findings);
      stats['ledger'] = integrity.stats;
      for (const network of networks) {
        const adapter = adapters.get(network.name);
        if (!adapter) throw new Error(`no adapter for ${network.name}`);
        const result = await reconcileNetwork({ db: database.db, network, adapter });
        findings.push(...result.findings);
        blocks[network.name] = result.block.toString();
        stats[network.name] = result.stats;
      }
    } catch (error) {
      const message = error instanceof Error ? error.message.split('\n')[0]! : String(error);
      await database.db
        .updateTable('reconciliation_runs')
        .set({
          status: 'failed',
          finished_at: new Date(),
          error: message,
          blocks: JSON.stringify(blocks),
          stats: JSON.stringify(stats),
        })
        .where('id', '=', run.id)
        .execute();
      throw error;
    }
    if (findings.length > 0) {
      await database.db
        .insertInto('reconciliation_findings')
        .values(
          findings.map((f) => ({
            run_id: run.id,
            severity: f.severity,
            kind: f.kind,
            network: (f as ChainFinding).network ?? null,
            asset: (f as ChainFinding).asset ?? null,
            address: (f as ChainFinding).address ?? null,
            account: f.account ?? null,
            currency: f.currency ?? null,
            expected: f.expected,
            actual: f.actual,
            difference: f.difference,
            details: JSON.stringify(f.details),
          })),
        )
        .execute();
    }
    const status = findings.length > 0 ? 'findings' : 'clean';
    const finished = await database.db
      .updateTable('reconciliation_runs')
      .set({
        status,
        finished_at: new Date(),
        blocks: JSON.stringify(blocks),
        stats: JSON.stringify(stats),
      })
      .where('id', '=', run.id)
      .returning('finished_at')
      .executeTakeFirstOrThrow();
    const result: ReconciliationRun = {
      runId: run.id,
      status,
      startedAt: run.started_at.toISOString(),
      finishedAt: new Date(finished.finished_at!).toISOString(),
      blocks,
      findings,
      stats,
    };
    const bySeverity = { error: 0, warning: 0, info: 0 };
    for (const finding of findings) bySeverity[finding.severity] += 1;
    for (const [severity, count] of Object.entries(bySeverity))
      metrics.reconcileFindings.set({ severity }, count);
    const errors = findings.filter((f) => f.severity === 'error');
    if (errors.length > 0) {
      logger.error({ runId: run.id, errors: errors.length }, 'reconciliation found errors');
      if (config.alerts.webhookUrl)
        await sendAlert(config.alerts.webhookUrl, { runId: run.id, findings: errors }, logger);
    }
    return result;
  } finally {
    await lock.query('select pg_advisory_unlock(hashtext($1))', [LOCK]).catch(() => {});
    lock.release();
    if (ownAdapters) await Promise.all([...ownAdapters.values()].map((a) => a.close()));
  }
}

/** The newest finished run with its findings, or null. */
export async function latestReconciliation(runtime: Runtime): Promise<ReconciliationRun | null> {
  const { db } = runtime.database;
  const run = await db
    .selectFrom('reconciliation_runs')
    .selectAll()
    .where('status', '<>', 'running')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  if (!run) return null;
  const rows = await db
    .selectFrom('reconciliation_findings')
    .selectAll()
    .where('run_id', '=', run.id)
    .orderBy('id')
    .execute();
  return {
    runId: run.id,
    status: run.status as ReconciliationRun['status'],
    startedAt: run.started_at.toISOString(),
    finishedAt: run.finished_at ? new Date(run.finished_at).toISOString() : '',
    blocks: run.blocks,
    stats: run.stats,
    findings: rows.map((r) => ({
      severity: r.severity as Finding['severity'],
      kind: r.kind,
      ...(r.network ? { network: r.network } : {}),
      ...(r.asset ? { asset: r.asset } : {}),
      ...(r.address ? { address: r.address } : {}),
      ...(r.account ? { account: r.account } : {}),
      ...(r.currency ? { currency: r.currency } : {}),
      expected: r.expected,
      actual: r.actual,
      difference: r.difference,
      details: r.details,
    })),
  };
}
