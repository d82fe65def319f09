import { parseAmount, type PostgresLedger } from '../../ledger/index.js';
import { badRequest } from '../errors.js';
import { accounts } from './accounts.js';

export interface AdjustBalanceParameters {
  userId: string;
  /** USD as a decimal string; negative debits the user (never below zero). */
  amount: unknown;
  reason: unknown;
  idempotencyKey?: string | undefined;
  /** Who asked for it (recorded on the entry). */
  actor?: string;
}

export interface AdjustBalanceResult {
  entryId: string;
  replayed: boolean;
}

/**
 * An admin adjustment: a credit is Dr expenses:promotions / Cr the customer, a debit the
 * reverse. A debit larger than the available balance is refused (insufficient funds).
 */
export async function adjustBalance(
  ledger: PostgresLedger,
  params: AdjustBalanceParameters,
): Promise<AdjustBalanceResult> {
  const amount = parseAmount(params.amount, {
    scale: ledger.scaleOf('USD'),
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
  const result = await ledger.postEntry({
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
  });
  return result;
}
