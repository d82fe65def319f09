import { auditWithin, type AuditEvent } from '../audit.js';
import { badRequest, conflict, notFound } from '../errors.js';
import type { Runtime } from '../runtime.js';
import { latestReconciliation, type ReconciliationRun } from './runReconciliation.js';

/**
 * Kinds of finding that report an event the books explain and that an operator decides on
 * once: a deposit reversed after a reorg (the receivable its reversal booked is written off,
 * or left owed on purpose), an outflow found to be legitimate. A finding about a state that can
 * be put right (a custody mismatch, a tampered book) goes away when it is, never by a word.
 */
export const ACKNOWLEDGEABLE_KINDS: ReadonlySet<string> = new Set([
  'deposit_reversed',
  'unexpected_outflow',
]);

export interface AcknowledgeFindingParameters {
  fingerprint: string;
  reason: string;
  /** Who acknowledges, and from where, for the audit log. */
  audit: Omit<AuditEvent, 'action' | 'target' | 'details'>;
}

export interface AcknowledgedFinding {
  fingerprint: string;
  runId: string;
  finding: ReconciliationRun['findings'][number];
}

/**
 * Acknowledges a finding of the latest completed reconciliation run (one that failed has none) by its fingerprint: later runs leave
 * it out (counted in `stats.acknowledged`), it no longer makes the CLI exit 1, and the alert
 * webhook is told it is resolved. Recorded with the reason, and in the audit log
 * (`reconciliation.acknowledge`) in the same transaction. Refused: a finding that run
 * does not have (404 `finding_not_found`), a kind that is not acknowledged by hand (400
 * `finding_not_acknowledgeable`), one already acknowledged (409 `already_acknowledged`).
 */
export async function acknowledgeFinding(
  runtime: Runtime,
  params: AcknowledgeFindingParameters,
): Promise<AcknowledgedFinding> {
  const reason = params.reason.trim();
  if (!reason) throw badRequest('reason must say why the finding is acknowledged', 'reason');
  if (reason.length > 1000) throw badRequest('reason is at most 1000 characters', 'reason');
  const latest = await latestReconciliation(runtime, { completed: true });
  const finding = latest?.findings.find((f) => f.fingerprint === params.fingerprint);
  if (!latest || !finding)
    throw notFound(
      `the latest reconciliation run has no finding ${params.fingerprint}`,
      'finding_not_found',
      'fingerprint',
    );
  if (!ACKNOWLEDGEABLE_KINDS.has(finding.kind))
    throw badRequest(
      `a ${finding.kind} finding is not acknowledged by hand: it goes away when the books or the chain are put right`,
      'fingerprint',
      'finding_not_acknowledgeable',
    );
  const client = await runtime.database.pool.connect();
  try {
    await client.query('begin');
    const inserted = await client.query(
      `insert into reconciliation_acknowledgements (fingerprint, kind, finding, reason, actor, run_id)
       values ($1, $2, $3, $4, $5, $6)
       on conflict (fingerprint) do nothing`,
      [
        finding.fingerprint,
        finding.kind,
        JSON.stringify(finding),
        reason,
        params.audit.actor,
        latest.runId,
      ],
    );
    if (inserted.rowCount === 0)
      throw conflict(
        `finding ${finding.fingerprint} is already acknowledged`,
        'already_acknowledged',
        'fingerprint',
      );
    await auditWithin(client, {
      ...params.audit,
      action: 'reconciliation.acknowledge',
      target: `finding:${finding.fingerprint}`,
      details: {
        runId: latest.runId,
        kind: finding.kind,
        ...(finding.network ? { network: finding.network } : {}),
        ...(finding.address ? { address: finding.address } : {}),
        details: finding.details,
        reason,
      },
    });
    await client.query('commit');
  } catch (error) {
    await client.query('rollback').catch(() => {});
    throw error;
  } finally {
    client.release();
  }
  return { fingerprint: finding.fingerprint, runId: latest.runId, finding };
}
