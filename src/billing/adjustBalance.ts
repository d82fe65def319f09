import { LedgerError, parseAmount } from '../../ledger/index.js';
import { auditWithin, type AuditEvent } from '../audit.js';
import { badRequest } from '../errors.js';
import { ERASED_NO_ADJUSTMENTS } from '../users/createUser.js';
import { accounts } from './accounts.js';
import { withUsersLocked, type LedgerDeps } from './withUsersLocked.js';

export interface AdjustBalanceParameters {
  userId: string;
  /** USD as a decimal string; negative debits the user (never below zero). */
  amount: unknown;
  reason: unknown;
  idempotencyKey?: string | undefined;
  /** Who asked for it (recorded on the entry). */
  actor?: string;
  /**
   * The audit record of this adjustment, written in the entry's transaction when the entry is
   * new: once per adjustment, never for a replay, never for a write that rolled back.
   */
  audit?: (written: { entryId: string }) => AuditEvent;
}

export interface AdjustBalanceResult {
  entryId: string;
  replayed: boolean;
}

/**
 * An admin adjustment: a credit is Dr expenses:promotions / Cr the customer, a debit the
 * reverse. A debit larger than the available balance is refused (insufficient funds).
 *
 * The entry is written in a transaction that holds the user's row (FOR SHARE), and an erased
 * user is refused (409 `user_erased`) under that lock: an erasure running at the same moment
 * (which takes the row FOR UPDATE) either waits and then moves this credit to unclaimed with
 * the rest of the balance, or has finished and this adjustment is refused. Without the lock a
 * credit could land in the customer account just after erasure emptied it.
 */
export async function adjustBalance(
  deps: LedgerDeps,
  params: AdjustBalanceParameters,
): Promise<AdjustBalanceResult> {
  const amount = parseAmount(params.amount, {
    scale: deps.ledger.scaleOf('USD'),
    currency: 'USD',
    allowNegative: true,
  });
  if (
    typeof params.reason !== 'string' ||
    params.reason.trim() === '' ||
    params.reason.length > 500
  ) {
    throw badRequest('reason must be a text of 1-500 characters', 'reason');
  }
  const key = params.idempotencyKey;
  if (key !== undefined && (key.length === 0 || key.length > 200)) {
    throw badRequest('the idempotency key must be 1-200 characters', 'idempotencyKey');
  }
  const entry = {
    kind: 'adjustment',
    description: params.reason.trim(),
    metadata: {
      reason: params.reason.trim(),
      userId: params.userId,
      ...(params.actor ? { actor: params.actor } : {}),
    },
    postings: [
      { account: accounts.promotions, amount },
      { account: accounts.customer(params.userId), amount: amount.neg() },
    ],
    ...(key ? { idempotencyKey: `adjustment:${key}` } : {}),
  };
  return withUsersLocked(
    deps,
    [params.userId],
    { erasedConsequence: ERASED_NO_ADJUSTMENTS, param: 'user' },
    async (within, client) => {
      const [result] = await within.postEntries([entry]);
      if (result instanceof LedgerError) throw result;
      if (params.audit && !result!.replayed)
        await auditWithin(client, params.audit({ entryId: result!.entryId }));
      return result!;
    },
  );
}
