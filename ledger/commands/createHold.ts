import { v7 as uuidv7 } from 'uuid';
import { hashRequest, type PrepareContext, type PreparedCommand } from '../command.js';
import { CurrencyMismatchError, InvalidEntryError } from '../errors.js';
import { isUuid } from '../ids.js';
import { checkCommandInput } from '../input.js';
import { parseAmount, type AmountInput } from '../money.js';

export interface CreateHoldParameters {
  /** The account whose available balance the hold reduces at once (`liabilities:customers:42`). */
  debitAccount: string;
  /** Where the money goes when the hold is posted (`revenue:usage`). */
  creditAccount: string;
  amount: AmountInput;
  /** After this the hold may be expired, releasing what it held. */
  expiresAt?: Date;
  metadata?: Record<string, unknown>;
  idempotencyKey?: string;
  /**
   * The id the hold is created with: a new UUID the caller chose (a UUIDv7 keeps the index
   * ordered), so that it can name the hold even when the answer never comes (see
   * `PostgresLedger.settleLostWrite`), and void it. Default: a new UUIDv7. An id already in
   * use fails the write (never reuse one).
   */
  holdId?: string;
}

export interface CreateHoldResult {
  holdId: string;
  replayed: boolean;
}

/**
 * Reserves an amount: the debit account's available balance drops at once, and
 * nothing is posted until `postHold`. Refused with InsufficientFundsError when a
 * no-overdraft account cannot cover it.
 *
 * @example await ledger.createHold({ debitAccount: 'liabilities:customers:42', creditAccount: 'revenue:usage', amount: '0.02' })
 */
export async function prepareCreateHold(
  context: PrepareContext,
  params: CreateHoldParameters,
): Promise<PreparedCommand<CreateHoldResult>> {
  checkCommandInput({
    metadata: params.metadata,
    idempotencyKey: params.idempotencyKey,
    dates: { expiresAt: params.expiresAt },
  });
  if (params.holdId !== undefined && !isUuid(params.holdId))
    throw new InvalidEntryError('holdId must be a UUID', { param: 'holdId' });
  const debit = await context.resolveAccount(params.debitAccount, { create: true });
  const credit = await context.resolveAccount(params.creditAccount, {
    currency: debit.currency,
    create: true,
  });
  if (credit.currency !== debit.currency)
    throw new CurrencyMismatchError(credit.code, credit.currency, debit.currency);
  if (debit.id === credit.id)
    throw new InvalidEntryError('a hold needs two different accounts', { param: 'creditAccount' });
  const amount = parseAmount(params.amount, {
    scale: context.scaleOf(debit.currency),
    currency: debit.currency,
  });
  const key = params.idempotencyKey ?? null;
  const requestHash = key
    ? hashRequest('createHold', {
        debitAccount: debit.code,
        creditAccount: credit.code,
        amount,
        expiresAt: params.expiresAt,
        metadata: params.metadata ?? {},
        holdId: params.holdId,
      })
    : null;
  return {
    type: 'createHold',
    ...(debit.noNegative ? { partitionKey: debit.id } : {}),
    idempotencyKey: key,
    requestHash,
    accountIds: [debit.id, credit.id],
    holdIds: [],
    reverseEntryIds: [],
    plan({ state }) {
      const id = params.holdId ?? uuidv7();
      if (state.newHolds.has(id))
        throw new InvalidEntryError(`hold ${id} is already created in this batch`, {
          param: 'holdId',
        });
      state.apply({
        pending: [
          { accountId: debit.id, debits: amount, credits: amount.mul(0) },
          { accountId: credit.id, debits: amount.mul(0), credits: amount },
        ],
        newHold: {
          id,
          debitAccountId: debit.id,
          creditAccountId: credit.id,
          currency: debit.currency,
          amount,
          expiresAt: params.expiresAt ?? null,
          metadata: params.metadata ?? {},
        },
      });
      return { holdId: id, replayed: false };
    },
    encode: (result) => ({ holdId: result.holdId }),
    replay: (stored) => ({ holdId: (stored as { holdId: string }).holdId, replayed: true }),
  };
}
