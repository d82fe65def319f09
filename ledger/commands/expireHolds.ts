import type { PreparedCommand } from '../command.js';
import { checkLimit } from '../input.js';
import { ZERO } from '../money.js';

export interface ExpireHoldsParameters {
  /** Most holds expired by one call (default 1000). */
  limit?: number;
}

export interface ExpireHoldsResult {
  expiredHoldIds: string[];
}

/**
 * Expires pending holds whose deadline has passed (by the database clock), releasing what
 * they held. Holds another transaction has locked are left for the next run.
 */
export function prepareExpireHolds(
  params: ExpireHoldsParameters = {},
): PreparedCommand<ExpireHoldsResult> {
  const expireLimit = checkLimit(params.limit, 1000, 10_000);
  return {
    type: 'expireHolds',
    idempotencyKey: null,
    requestHash: null,
    accountIds: [],
    holdIds: [],
    reverseEntryIds: [],
    expireLimit,
    plan({ state, overdueHolds }) {
      const expiredHoldIds: string[] = [];
      for (const candidate of overdueHolds) {
        const hold = state.holds.get(candidate.id) ?? candidate;
        if (hold.status !== 'pending') continue;
        state.apply({
          pending: [
            { accountId: hold.debitAccountId, debits: hold.amount.neg(), credits: ZERO },
            { accountId: hold.creditAccountId, debits: ZERO, credits: hold.amount.neg() },
          ],
          resolveHold: { id: hold.id, status: 'expired', postedAmount: null, shortfall: null },
        });
        expiredHoldIds.push(hold.id);
      }
      return { expiredHoldIds };
    },
    encode: (result) => result,
    replay: (stored) => stored as ExpireHoldsResult,
  };
}
