import { URL_IN_TEXT, withoutUrlSecrets, type Logger } from '../log.js';
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
  /** What, when it changes, is alerted again (see findingState; a run failure: its cause). */
  state: string | null;
  /** A run failure: when it was first alerted (ISO 8601). */
  since?: string;
}

/**
 * The kind under which a run that could not check (an RPC down on every endpoint, a thrown
 * error) is remembered in the alert state, one per scope: a network, or none for the ledger
 * checks. It is alerted and resolved like an error finding: once while it fails with the same
 * cause, again when the cause changes, and as recovered once that scope is checked again.
 */
export const RUN_FAILED_KIND = 'reconciliation_failed';

/** Where a run failed (absent network: the ledger checks), and why (the error's first line). */
export interface RunFailure {
  network?: string;
  error: string;
}

/** What a run got through before it ended: the ledger checks, and these networks. */
export interface CheckedScopes {
  ledger: boolean;
  networks: ReadonlySet<string>;
  /**
   * The networks in the config. One that is not there (removed since) is never checked again,
   * so what the webhook knows about it is closed by any run. Absent: nothing closed for that.
   */
  configured?: ReadonlySet<string>;
}

/**
 * A failed run's failure as posted: new, failing again with another cause than the one
 * alerted (`changed`), or with the same one (`ongoing`: posted only beside other news).
 */
export interface FailureAlert extends RunFailure {
  fingerprint: string;
  alert: 'new' | 'changed' | 'ongoing';
  /** The cause alerted before (`changed`). */
  previous?: string;
  since: string;
}

/** A failure alerted before whose scope a later run checked again. */
export interface Recovery {
  fingerprint: string;
  network?: string;
  /** The cause last alerted. */
  error: string | null;
  since?: string;
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
  /** This run failed: how (worth posting unless `ongoing`). */
  failed: FailureAlert | null;
  /** Run failures it was told about whose scope this run checked. */
  recovered: Recovery[];
  /** What the webhook knows once these changes are delivered. */
  state: AlertState;
}

/** The fingerprint of a run failure in `scope` (a network, or none: the ledger checks). */
export function failureFingerprint(network: string | undefined): string {
  return findingFingerprint({
    severity: 'error',
    kind: RUN_FAILED_KIND,
    ...(network !== undefined ? { network } : {}),
    expected: null,
    actual: null,
    difference: null,
    details: {},
  });
}

/**
 * Whether this run checked what `known` is about: the ledger checks (no network), or its
 * network (or that network is no longer configured). A run limited to some networks
 * (`--network`) says nothing about the others: what the webhook knows of them stays open.
 */
function isChecked(known: AlertedFinding, checked: CheckedScopes): boolean {
  if (known.network === undefined) return checked.ledger;
  return (
    checked.networks.has(known.network) ||
    (checked.configured !== undefined && !checked.configured.has(known.network))
  );
}

/**
 * What in a failure's message tells one cause from another, not what changes from run to run
 * while the cause stays: URLs are cut to scheme and host (kept, ports included), an HTTP status
 * is kept (a 503 and a 401 are not the same trouble), and each hex string (a hash, a request
 * id) and every other run of digits (a block number, a timestamp, a count) becomes `#`.
 */
const CAUSE_TOKENS = new RegExp(
  [
    `(${URL_IN_TEXT.source})`,
    '(\\b(?:HTTP|status)[: ]\\s*[1-5]\\d\\d\\b)',
    // Hex with a digit in it, dashed parts included (a UUID, a date): one token.
    '\\b0x[0-9a-f]*|\\b(?=[0-9a-f-]*\\d)[0-9a-f]+(?:-[0-9a-f]+)*\\b',
    '(\\d+)',
  ].join('|'),
  'gi',
);

/** A failure's cause as compared between runs (see CAUSE_TOKENS); the alert has the message. */
export function failureCause(message: string): string {
  return message.replace(CAUSE_TOKENS, (token, url?: string, status?: string) => {
    if (url !== undefined) return withoutUrlSecrets(url);
    return status !== undefined ? token : '#';
  });
}

function recovery(fingerprint: string, known: AlertedFinding): Recovery {
  return {
    fingerprint,
    ...(known.network !== undefined ? { network: known.network } : {}),
    error: known.state,
    ...(known.since !== undefined ? { since: known.since } : {}),
  };
}

/** Nothing to post yet, and nothing known: what each run's changes start from. */
function noChanges(): AlertChanges {
  return { opened: [], changed: [], resolved: [], failed: null, recovered: [], state: {} };
}

/**
 * This completed run's error findings against what the webhook was last told: an alert is
 * worth posting when a finding appears, changes or goes away, not for every run that still
 * has it. A finding or run failure alerted before is resolved (recovered) only when this run
 * checked its scope (`checked`: the networks it compared; the ledger checks, which every run
 * makes), else it stays open: a run limited to one network resolves nothing of the others.
 */
export function alertChanges(
  previous: AlertState,
  errors: ReportedFinding[],
  checked: CheckedScopes,
): AlertChanges {
  const changes = noChanges();
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
  for (const [fingerprint, known] of Object.entries(previous)) {
    if (changes.state[fingerprint]) continue;
    // Not checked (a run limited to other networks): still open, as far as anyone knows.
    if (!isChecked(known, checked)) changes.state[fingerprint] = known;
    else if (known.kind !== RUN_FAILED_KIND) changes.resolved.push({ ...known, fingerprint });
    else changes.recovered.push(recovery(fingerprint, known));
  }
  return changes;
}

/**
 * A run that failed, against what the webhook was last told: the failure is worth posting when
 * it is new or its cause changed, not for every run that keeps failing the same way. The error
 * findings the webhook knows stay as they are (this run could not check them); failures of
 * scopes it did check before it failed are recovered.
 */
export function failureChanges(
  previous: AlertState,
  failure: RunFailure,
  checked: CheckedScopes,
  now: Date,
): AlertChanges {
  const changes = noChanges();
  const fingerprint = failureFingerprint(failure.network);
  for (const [key, known] of Object.entries(previous)) {
    if (key !== fingerprint && known.kind === RUN_FAILED_KIND && isChecked(known, checked))
      changes.recovered.push(recovery(key, known));
    else changes.state[key] = known;
  }
  const known = previous[fingerprint];
  const since = known?.since ?? now.toISOString();
  const alert = !known
    ? 'new'
    : known.state !== null && failureCause(known.state) === failureCause(failure.error)
      ? 'ongoing'
      : 'changed';
  changes.state[fingerprint] = {
    kind: RUN_FAILED_KIND,
    ...(failure.network !== undefined ? { network: failure.network } : {}),
    difference: null,
    // The message alerted: an ongoing failure's own (another block number, say) was not.
    state: alert === 'ongoing' ? known!.state : failure.error,
    since,
  };
  changes.failed = {
    fingerprint,
    ...failure,
    alert,
    ...(alert === 'changed' && known?.state != null ? { previous: known.state } : {}),
    since,
  };
  return changes;
}

export function hasChanges(changes: AlertChanges): boolean {
  return (
    changes.opened.length +
      changes.changed.length +
      changes.resolved.length +
      changes.recovered.length >
      0 ||
    (changes.failed !== null && changes.failed.alert !== 'ongoing')
  );
}

/** How many error findings the webhook knows are open (run failures not counted). */
function openFindings(state: AlertState): number {
  return Object.values(state).filter((known) => known.kind !== RUN_FAILED_KIND).length;
}

export interface PostAlertParameters {
  url: string;
  runId: string;
  /** Whether the run completed (its findings are this run's) or failed (it could not check). */
  outcome: 'completed' | 'failed';
  changes: AlertChanges;
  /** Tries, each with its deadline, a second apart. */
  attempts: number;
  timeoutMs: number;
  logger: Logger;
}

/**
 * Posts a run's alert changes to the webhook as JSON: `findings` are the error findings that
 * are new (`alert: "new"`) or changed (`alert: "changed"`, `previous`), `resolved` those gone,
 * `open` how many error findings are open (a failed run: those known before it). A run that
 * failed posts `event: "reconciliation.failed"` with its `failure` (network, error, `alert`
 * new or changed, `since`); one that checked again what had failed posts
 * `"reconciliation.recovered"` with `recovered`; else `"reconciliation.findings"`. Returns null
 * once a try is answered 2xx, else why the last try failed: the caller keeps what the webhook
 * knew, so the next run posts again.
 */
export async function postAlert(params: PostAlertParameters): Promise<string | null> {
  const { changes, logger } = params;
  const body = JSON.stringify({
    source: 'lingxi-ledger',
    event:
      params.outcome === 'failed'
        ? 'reconciliation.failed'
        : changes.recovered.length > 0
          ? 'reconciliation.recovered'
          : 'reconciliation.findings',
    runId: params.runId,
    ...(changes.failed ? { failure: changes.failed } : {}),
    recovered: changes.recovered,
    findings: [
      ...changes.opened.map((f) => ({ ...f, alert: 'new' })),
      ...changes.changed.map((f) => ({ ...f, alert: 'changed' })),
    ],
    resolved: changes.resolved,
    open: openFindings(changes.state),
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
