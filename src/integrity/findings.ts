/**
 * What an integrity check reports. Numbers are exact decimal strings; `difference` is
 * actual minus expected where both are amounts, else null (a hash, say).
 */
export interface Finding {
  severity: 'error' | 'warning' | 'info';
  /** Stable name of the problem, e.g. `balance_mismatch`, `seal_mismatch`. */
  kind: string;
  account?: string;
  currency?: string;
  expected: string | null;
  actual: string | null;
  difference: string | null;
  /** Everything an operator needs to find the cause: ids, days, counts. */
  details: Record<string, unknown>;
}

/** At most this many findings of one kind per run; the rest are counted in the last one's details. */
export const MAX_FINDINGS_PER_KIND = 100;
