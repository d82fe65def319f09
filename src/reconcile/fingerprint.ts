import { createHash } from 'node:crypto';
import type { Finding } from '../integrity/findings.js';

/** A finding as a run reports it: integrity findings, and chain findings with their place. */
export type ReportedFinding = Finding & { network?: string; asset?: string; address?: string };

/**
 * Details that tell one finding of a kind from another (a transaction, an entry, a day, a
 * seal...). Amounts, blocks and counts are not among them: they change from run to run while
 * the finding stays the same one.
 */
const IDENTIFYING_DETAILS = [
  'txHash',
  'logIndex',
  'entryId',
  'requestId',
  'usageRecordId',
  'day',
  'seal',
  'field',
  'source',
] as const;

/**
 * The identity of a finding across runs: its kind and where it is (network, asset, address,
 * account, currency, and the identifying details), hashed to 16 hex digits. The same unresolved
 * problem has the same fingerprint in every run; acknowledgements and alerts are keyed by it.
 */
export function findingFingerprint(finding: ReportedFinding): string {
  const identity = [
    finding.kind,
    finding.network ?? null,
    finding.asset ?? null,
    finding.address ?? null,
    finding.account ?? null,
    finding.currency ?? null,
    ...IDENTIFYING_DETAILS.map((key) => finding.details[key] ?? null),
  ];
  return createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 16);
}

/**
 * What of a finding, once alerted, makes it worth alerting again when it changes: the
 * difference where there is one (a custody mismatch's expected and actual move with every
 * deposit, its difference does not), else what was found.
 */
export function findingState(finding: ReportedFinding): string | null {
  return finding.difference ?? finding.actual ?? finding.expected;
}
