import type pg from 'pg';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import { createAdapters } from '../../chain-watchers/pipeline/createWatcher.js';
import { AppError } from '../errors.js';
import type { Finding } from '../integrity/findings.js';
import { runLedgerIntegrity } from '../integrity/runLedgerIntegrity.js';
import type { Runtime } from '../runtime.js';
import {
  alertChanges,
  failureChanges,
  hasChanges,
  postAlert,
  type AlertChanges,
  type AlertState,
} from './alerts.js';
import { findingFingerprint, type ReportedFinding } from './fingerprint.js';
import { reconcileNetwork, type ChainFinding } from './reconcileNetwork.js';
import { withoutUrlSecrets } from '../log.js';

export interface ReconciliationRun {
  runId: string;
  /** `findings` when the run reports any finding (an info one is reported in one run only). */
  status: 'clean' | 'findings' | 'failed';
  startedAt: string;
  finishedAt: string;
  /** Per network, the block the chain was compared at. */
  blocks: Record<string, string>;
  /** Each with its `fingerprint`: the same problem has the same one in every run. */
  findings: Array<ReportedFinding & { fingerprint: string }>;
  stats: Record<string, unknown>;
  /**
   * Why a failed run failed (`abandoned: ...` for one whose process stopped midway, marked by
   * a later run); null for one that completed.
   */
  error: string | null;
}

export interface RunReconciliationParameters {
  trigger: string;
  /** Only these networks (default all); the ledger checks always run. */
  networks?: string[];
  /** Adapters to use instead of building them from the config (tests, the cron role). */
  adapters?: ReadonlyMap<string, ChainAdapter>;
  /** Most findings of each listed kind per network (default 100; tests use a small one). */
  findingsListed?: number;
}

const LOCK = 'lingxi:reconciliation';

/**
 * One reconciliation run: ledger integrity (trial balance, cached and running balances,
 * overdue holds expired, usage against revenue per day, the seal chain), then chain against
 * ledger for each network. The run and its findings are stored, less those an operator has
 * acknowledged; what changed in the error-level findings since the webhook was last told
 * (new, changed, resolved: only of the ledger checks and the networks this run checked) goes
 * to the alert webhook. A run that fails (an RPC down on every endpoint, any error) is stored
 * as failed, rethrows, and is alerted too: once while it keeps failing with the same cause
 * (its message with numbers and hex ids left out: see failureCause), and as recovered when a
 * later run checks that network (or the ledger) again. Two runs started at once take turns
 * (advisory lock): one that waits longer than `reconcile.lockWaitMs` for its turn fails
 * with `reconciliation_running` (409) and stores nothing. A run still marked `running` when a
 * run takes its turn was left by a process that stopped mid-run: it is marked failed. A run
 * whose turn ended under it (its lock's database session lost midway, so another run may have
 * taken the turn and marked it abandoned) stores no outcome and fails with
 * `reconciliation_turn_lost`.
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
  const lock = await database.unbounded.pool.connect();
  let lockBroken = false;
  let ownAdapters: Map<string, ChainAdapter> | null = null;
  try {
    try {
      await takeTurn(lock, config.reconcile.lockWaitMs);
    } catch (error) {
      lockBroken = !(error instanceof AppError);
      throw error;
    }
    ownAdapters = params.adapters
      ? null
      : createAdapters(networks, logger.child({ role: 'reconcile' }));
    const adapters = params.adapters ?? ownAdapters!;
    // Runs take turns, so a run still `running` now belongs to a process that stopped mid-run.
    const abandoned = await database.db
      .updateTable('reconciliation_runs')
      .set({ status: 'failed', finished_at: new Date(), error: ABANDONED })
      .where('status', '=', 'running')
      .returning('id')
      .execute();
    if (abandoned.length > 0)
      logger.warn(
        { runIds: abandoned.map((r) => r.id) },
        'reconciliation runs left running by a process that stopped: marked failed',
      );
    const run = await database.db
      .insertInto('reconciliation_runs')
      .values({ trigger: params.trigger, status: 'running', blocks: '{}', stats: '{}' })
      .returning(['id', 'started_at'])
      .executeTakeFirstOrThrow();
    const findings: ReportedFinding[] = [];
    const blocks: Record<string, string> = {};
    const stats: Record<string, unknown> = {};
    // A run limited to some networks (`--network`) resolves nothing of the others.
    const checked = {
      ledger: false,
      networks: new Set<string>(),
      configured: new Set(config.networks.map((n) => n.name)),
    };
    // Where the run is: a failure is alerted for that network (none: the ledger checks).
    let current: string | undefined;
    try {
      const integrity = await runLedgerIntegrity({ pool: database.unbounded.pool, ledger });
      findings.push(...integrity.findings);
      stats['ledger'] = integrity.stats;
      checked.ledger = true;
      // What happened since the previous completed run is reported once (a reorg's reversal).
      const previous = await database.db
        .selectFrom('reconciliation_runs')
        .select('started_at')
        .where('id', '<', run.id)
        .where('status', 'in', ['clean', 'findings'])
        .orderBy('id', 'desc')
        .limit(1)
        .executeTakeFirst();
      for (const network of networks) {
        current = network.name;
        const adapter = adapters.get(network.name);
        if (!adapter) throw new Error(`no adapter for ${network.name}`);
        const result = await reconcileNetwork({
          db: database.db,
          network,
          adapter,
          ...(previous ? { reportSince: previous.started_at } : {}),
          ...(params.findingsListed !== undefined ? { findingsListed: params.findingsListed } : {}),
        });
        findings.push(...result.findings);
        blocks[network.name] = result.block.toString();
        stats[network.name] = result.stats;
        checked.networks.add(network.name);
      }
    } catch (error) {
      // Stored and posted to the webhook: its URLs as scheme and host (an RPC URL's path or
      // query often holds a key).
      const message = withoutUrlSecrets(
        error instanceof Error ? error.message.split('\n')[0]! : String(error),
      );
      // The alert must not hide why the run failed: an error of its own is logged and stored.
      const failure = { ...(current !== undefined ? { network: current } : {}), error: message };
      const alert = await alertRun(runtime, run.id, 'failed', (previous) =>
        failureChanges(previous, failure, checked, new Date()),
      ).catch((alertError: unknown) => {
        logger.error({ runId: run.id, err: alertError }, 'reconciliation failure not alerted');
        return null;
      });
      // What the caller gets is why the run failed, even if it cannot be stored (the database
      // gone with the run): the row then stays `running` until the next run marks it.
      await database.db
        .updateTable('reconciliation_runs')
        .set({
          status: 'failed',
          finished_at: new Date(),
          error: message,
          blocks: JSON.stringify(blocks),
          stats: JSON.stringify(stats),
          ...(alert
            ? {
                alert_state: JSON.stringify(alert.state),
                alert_status: alert.status,
                alert_error: alert.error,
              }
            : {}),
        })
        .where('id', '=', run.id)
        // Marked abandoned meanwhile by a run that took the turn: left as it says.
        .where('status', '=', 'running')
        .execute()
        .catch((storeError: unknown) => {
          logger.error(
            { runId: run.id, err: storeError, runError: message },
            'reconciliation failure not stored',
          );
        });
      throw error;
    }
    // Nothing is stored, and nothing alerted, by a run that is no longer the one running.
    if (!(await holdsTurn(lock, config.database.connectTimeoutMs))) {
      lockBroken = true;
      await turnLost(runtime, run.id);
    }
    const reported = await withoutAcknowledged(runtime, findings);
    stats['acknowledged'] = findings.length - reported.length;
    if (reported.length > 0) {
      await database.db
        .insertInto('reconciliation_findings')
        .values(
          reported.map((f) => ({
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
    const status = reported.length > 0 ? 'findings' : 'clean';
    const errors = reported.filter((f) => f.severity === 'error');
    const alert = await alertRun(runtime, run.id, 'completed', (previous) =>
      alertChanges(previous, errors, checked),
    );
    const finished = await database.db
      .updateTable('reconciliation_runs')
      .set({
        status,
        finished_at: new Date(),
        blocks: JSON.stringify(blocks),
        stats: JSON.stringify(stats),
        alert_state: JSON.stringify(alert.state),
        alert_status: alert.status,
        alert_error: alert.error,
      })
      .where('id', '=', run.id)
      .where('status', '=', 'running')
      .returning('finished_at')
      .executeTakeFirst();
    // Its turn ended as it stored (the window after holdsTurn): another run marked it abandoned.
    if (!finished) await turnLost(runtime, run.id);
    const result: ReconciliationRun = {
      runId: run.id,
      status,
      startedAt: run.started_at.toISOString(),
      finishedAt: new Date(finished!.finished_at!).toISOString(),
      blocks,
      findings: reported,
      stats,
      error: null,
    };
    const bySeverity = { error: 0, warning: 0, info: 0 };
    for (const finding of reported) bySeverity[finding.severity] += 1;
    for (const [severity, count] of Object.entries(bySeverity))
      metrics.reconcileFindings.set({ severity }, count);
    if (errors.length > 0)
      logger.error({ runId: run.id, errors: errors.length }, 'reconciliation found errors');
    return result;
  } finally {
    // A lock connection whose unlock failed may still hold the lock: never back to the pool.
    if (!lockBroken)
      await lock.query('select pg_advisory_unlock_all()').catch(() => {
        lockBroken = true;
      });
    lock.release(lockBroken);
    if (ownAdapters) await Promise.all([...ownAdapters.values()].map((a) => a.close()));
  }
}

const ABANDONED = 'abandoned: the process running it stopped before it finished';

/**
 * Whether `lock`'s session still holds the turn. A session's advisory lock lasts as long as
 * the session: one that ended (the database restarted, the link cut) let another run take the
 * turn while this one went on. Bounded by `waitMs` (a silent link; 0: no bound); any error is
 * "no".
 */
async function holdsTurn(lock: pg.PoolClient, waitMs: number): Promise<boolean> {
  try {
    const { rows } = await lock.query<{ held: boolean }>({
      text: `select exists (
               select 1 from pg_locks
                where locktype = 'advisory' and granted and pid = pg_backend_pid()
                  and database = (select oid from pg_database where datname = current_database())
                  and objid = hashtext($1)::oid
             ) as held`,
      values: [LOCK],
      ...(waitMs > 0 ? { query_timeout: waitMs } : {}),
    } as pg.QueryConfig);
    return rows[0]?.held === true;
  } catch {
    return false;
  }
}

/**
 * A run whose turn ended under it: its row is marked failed, unless the run that took the turn
 * already marked it abandoned, and it fails with `reconciliation_turn_lost` (its result unstored).
 */
async function turnLost(runtime: Runtime, runId: string): Promise<never> {
  const message =
    'the run lost its turn midway (its database session ended, so another run could start): its result was not stored; run it again';
  await runtime.database.db
    .updateTable('reconciliation_runs')
    .set({ status: 'failed', finished_at: new Date(), error: message })
    .where('id', '=', runId)
    .where('status', '=', 'running')
    .execute()
    .catch((storeError: unknown) => {
      runtime.logger.error(
        { runId, err: storeError, runError: message },
        'reconciliation failure not stored',
      );
    });
  // A fault (the database link), not a refusal: 503, worth retrying.
  throw new AppError('reconciliation_turn_lost', `reconciliation run ${runId}: ${message}`, {
    status: 503,
  });
}

/**
 * Waits up to `waitMs` for the reconciliation lock on `lock`'s session; past it, fails with
 * `reconciliation_running` (409). The session's lock_timeout is restored before it returns.
 */
async function takeTurn(lock: pg.PoolClient, waitMs: number): Promise<void> {
  let taken: boolean;
  if (waitMs === 0) {
    const { rows } = await lock.query<{ ok: boolean }>(
      'select pg_try_advisory_lock(hashtext($1)) as ok',
      [LOCK],
    );
    taken = rows[0]?.ok === true;
  } else {
    await lock.query(`select set_config('lock_timeout', $1, false)`, [`${waitMs}ms`]);
    try {
      await lock.query('select pg_advisory_lock(hashtext($1))', [LOCK]);
      taken = true;
    } catch (error) {
      if ((error as { code?: unknown }).code !== '55P03') throw error;
      taken = false;
    }
    await lock.query('reset lock_timeout');
  }
  if (!taken)
    throw new AppError(
      'reconciliation_running',
      `another reconciliation run is in progress and did not finish within ${waitMs} ms: try again when it has`,
      { status: 409 },
    );
}

/**
 * The findings no operator has acknowledged, each with its fingerprint. An acknowledged one
 * (see acknowledgeFinding) is left out and counted in the run's `stats.acknowledged`.
 */
async function withoutAcknowledged(
  runtime: Runtime,
  findings: ReportedFinding[],
): Promise<ReconciliationRun['findings']> {
  const fingerprinted = findings.map((f) => ({ ...f, fingerprint: findingFingerprint(f) }));
  if (fingerprinted.length === 0) return [];
  const acknowledged = await runtime.database.db
    .selectFrom('reconciliation_acknowledgements')
    .select('fingerprint')
    .where('fingerprint', 'in', [...new Set(fingerprinted.map((f) => f.fingerprint))])
    .execute();
  const skip = new Set(acknowledged.map((a) => a.fingerprint));
  return fingerprinted.filter((f) => !skip.has(f.fingerprint));
}

/**
 * Posts to the alert webhook what changed since what it was last told (the `alert_state` of
 * the latest run that has one, failed runs included): new, changed and resolved error
 * findings, a failure new or with another cause, failures recovered; not the same open ones
 * again each run. Returns what the webhook knows after this run: the new state once
 * delivered, the previous one when the post failed (so the next run posts again).
 */
async function alertRun(
  runtime: Runtime,
  runId: string,
  outcome: 'completed' | 'failed',
  compare: (previous: AlertState) => AlertChanges,
): Promise<{
  state: AlertState;
  status: 'sent' | 'unchanged' | 'failed' | 'off';
  error: string | null;
}> {
  const { config, database, logger } = runtime;
  const url = config.alerts.webhookUrl;
  // Nothing delivered: a webhook configured later is told about every open finding.
  if (!url) return { state: {}, status: 'off', error: null };
  const last = await database.db
    .selectFrom('reconciliation_runs')
    .select('alert_state')
    .where('id', '<', runId)
    .where('alert_state', 'is not', null)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  const previous = (last?.alert_state ?? {}) as AlertState;
  const changes = compare(previous);
  // Nothing new: what the webhook knows is this run's state (a failure's `since` kept).
  if (!hasChanges(changes)) return { state: changes.state, status: 'unchanged', error: null };
  const error = await postAlert({
    url,
    runId,
    outcome,
    changes,
    attempts: config.alerts.attempts,
    timeoutMs: config.alerts.timeoutMs,
    logger,
  });
  return error === null
    ? { state: changes.state, status: 'sent', error: null }
    : { state: previous, status: 'failed', error };
}

/**
 * The newest finished run with its findings, or null. `completed`: the newest that did not fail
 * (a run that failed, the RPC down say, has no findings to act on).
 */
export async function latestReconciliation(
  runtime: Runtime,
  options: { completed?: boolean } = {},
): Promise<ReconciliationRun | null> {
  const { db } = runtime.database;
  const run = await db
    .selectFrom('reconciliation_runs')
    .selectAll()
    .where(
      'status',
      'in',
      options.completed ? ['clean', 'findings'] : ['clean', 'findings', 'failed'],
    )
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
    error: run.error,
    findings: rows.map((r) =>
      withFingerprint({
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
      }),
    ),
  };
}

function withFingerprint(finding: ReportedFinding): ReportedFinding & { fingerprint: string } {
  return { ...finding, fingerprint: findingFingerprint(finding) };
}
