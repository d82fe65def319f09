import type pg from 'pg';
import { Decimal, type PostgresLedger } from '../../../ledger/index.js';
import type { Finding } from '../findings.js';

/**
 * Law 3: every account's cached totals (posted, pending, version) recomputed from its
 * postings and live holds. A difference means something changed the account row behind
 * the ledger's back.
 */
export async function checkCachedBalances(
  ledger: PostgresLedger,
  pool?: pg.Pool,
): Promise<Finding[]> {
  // It reads the whole book: on `pool` when given (the run's connections, no time bound).
  const mismatches = await ledger.checkBalances(pool ? { pool } : {});
  return mismatches.map((m) => ({
    severity: 'error',
    kind: 'balance_mismatch',
    account: m.account,
    currency: m.currency,
    expected: m.recomputed,
    actual: new Decimal(m.cached).toString(),
    difference: new Decimal(m.cached).sub(m.recomputed).toString(),
    details: {
      field: m.field,
      meaning:
        m.field === 'version'
          ? 'the cached posting count differs from the postings'
          : `the cached ${m.field.replace('_', ' ')} differs from the ${m.field.endsWith('pending') ? 'pending holds' : 'postings'}`,
    },
  }));
}
