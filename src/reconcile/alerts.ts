import type { Logger } from '../log.js';
import { findingFingerprint, findingState, type ReportedFinding } from './fingerprint.js';

/** An error finding the alert webhook has been told about, as remembered between runs. */
export interface AlertedFinding {
  kind: string;
  network?: string;
  asset?: string;
  address?: string;
  account?: string;
  currency?: string;
  difference: string | null;
  /** What, when it changes, is alerted again (see findingState). */
  state: string | null;
}

/** What the webhook has been told is open, by fingerprint. */
export type AlertState = Record<string, AlertedFinding>;

export interface AlertChanges {
  /** Error findings the webhook has not been told about. */
  opened: Array<ReportedFinding & { fingerprint: string }>;
  /** Error findings it was told about whose difference (or value) has changed since. */
  changed: Array<ReportedFinding & { fingerprint: string; previous: string | null }>;
  /** Findings it was told about that this run no longer has as errors. */
  resolved: Array<AlertedFinding & { fingerprint: string }>;
  /** What the webhook knows once these changes are delivered. */
  state: AlertState;
}

/**
 * This run's error findings against what the webhook was last told: an alert is worth posting
 * when a finding appears, changes or goes away, not for every run that still has it.
 */
export function alertChanges(previous: AlertState, errors: ReportedFinding[]): AlertChanges {
  const changes: AlertChanges = { opened: [], changed: [], resolved: [], state: {} };
  for (const finding of errors) {
    const fingerprint = findingFingerprint(finding);
    if (changes.state[fingerprint]) continue;
    const state = findingState(finding);
    changes.state[fingerprint] = {
      kind: finding.kind,
      ...(finding.network ? { network: finding.network } : {}),
      ...(finding.asset ? { asset: finding.asset } : {}),
      ...(finding.address ? { address: finding.address } : {}),
      ...(finding.account ? { account: finding.account } : {}),
      ...(finding.currency ? { currency: finding.currency } : {}),
      difference: finding.difference,
      state,
    };
    const known = previous[fingerprint];
    if (!known) changes.opened.push({ ...finding, fingerprint });
    else if (known.state !== state)
      changes.changed.push({ ...finding, fingerprint, previous: known.state });
  }
  for (const [fingerprint, known] of Object.entries(previous))
    if (!changes.state[fingerprint]) changes.resolved.push({ ...known, fingerprint });
  return changes;
}

export function hasChanges(changes: AlertChanges): boolean {
  return changes.opened.length + changes.changed.length + changes.resolved.length > 0;
}

export interface PostAlertParameters {
  url: string;
  runId: string;
  changes: AlertChanges;
  /** Tries, each with its deadline, a second apart. */
  attempts: number;
  timeoutMs: number;
  logger: Logger;
}

/**
 * Posts a run's alert changes to the webhook as JSON: `findings` are the error findings that
 * are new (`alert: "new"`) or changed (`alert: "changed"`, `previous`), `resolved` those gone,
 * `open` how many error findings the run has. Returns null once a try is answered 2xx, else why
 * the last try failed: the caller keeps what the webhook knew, so the next run posts again.
 */
export async function postAlert(params: PostAlertParameters): Promise<string | null> {
  const { changes, logger } = params;
  const body = JSON.stringify({
    source: 'lingxi-ledger',
    event: 'reconciliation.findings',
    runId: params.runId,
    findings: [
      ...changes.opened.map((f) => ({ ...f, alert: 'new' })),
      ...changes.changed.map((f) => ({ ...f, alert: 'changed' })),
    ],
    resolved: changes.resolved,
    open: Object.keys(changes.state).length,
  });
  let failure = 'not tried';
  for (let attempt = 1; attempt <= params.attempts; attempt += 1) {
    if (attempt > 1) await new Promise((resolve) => setTimeout(resolve, 1000));
    try {
      const response = await fetch(params.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(params.timeoutMs),
      });
      await response.body?.cancel();
      if (response.ok) return null;
      failure = `the webhook answered ${response.status}`;
    } catch (error) {
      failure = `the webhook is unreachable: ${error instanceof Error ? error.message : String(error)}`;
    }
    logger.warn({ runId: params.runId, attempt, err: failure }, 'alert not delivered');
  }
  return failure;
}
