import type { PreparedCommand } from '../command.js';
import { HoldNotFoundError, HoldNotPendingError } from '../errors.js';
import { ZERO } from '../money.js';
import type { Attachment } from '../attachments.js';

export interface VoidHoldParameters {
  holdId: string;
  /** Rows to commit with the release (see Attachment); not written on a replay. */
  attach?: (outcome: { holdId: string }) => Attachment[];
}

export interface VoidHoldResult {
  holdId: string;
  /** True when the hold had already been voided. */
  replayed: boolean;
}

/** Cancels a pending hold: what it held is available again and nothing is posted. */
export function prepareVoidHold(params: VoidHoldParameters): PreparedCommand<VoidHoldResult> {
  return {
    type: 'voidHold',
    idempotencyKey: null,
    // Voiding is idempotent by the hold itself (a repeat replays), so it needs no key.
    requestHash: null,
    accountIds: [],
    holdIds: [params.holdId],
    reverseEntryIds: [],
    plan({ state }) {
      const hold = state.holds.get(params.holdId);
      if (!hold) throw new HoldNotFoundError(params.holdId);
      if (hold.status === 'voided') return { holdId: hold.id, replayed: true };
      if (hold.status !== 'pending') throw new HoldNotPendingError(hold.id, hold.status);
      state.apply({
        pending: [
          { accountId: hold.debitAccountId, debits: hold.amount.neg(), credits: ZERO },
          { accountId: hold.creditAccountId, debits: ZERO, credits: hold.amount.neg() },
        ],
        resolveHold: { id: hold.id, status: 'voided', postedAmount: null, shortfall: null },
      });
      if (params.attach) state.attachments.push(...params.attach({ holdId: hold.id }));
      return { holdId: hold.id, replayed: false };
    },
    encode: (result) => result,
    replay: (stored) => stored as VoidHoldResult,
  };
}
