import type { PrepareContext, PreparedCommand } from '../command.js';
import {
  CurrencyMismatchError,
  HoldExceededError,
  HoldNotFoundError,
  HoldNotPendingError,
  InvalidAmountError,
} from '../errors.js';
import { Decimal, parseAmount, ZERO, type AmountInput } from '../money.js';
import { checkCommandInput } from '../input.js';
import { available } from '../state.js';
import { checkKind } from './postEntry.js';
import type { Attachment } from '../attachments.js';

export interface PostHoldParameters {
  holdId: string;
  /** The actual amount, zero up to the hold (or above it with `allowOverHold`). */
  amount: AmountInput;
  /**
   * Allow posting more than was held. The excess is taken from the debit account's
   * available balance; whatever it cannot cover is debited to `shortfallAccount`.
   */
  allowOverHold?: boolean;
  /**
   * Where an uncovered excess is booked (`assets:receivables:customers:42`). Required with
   * allowOverHold. Created in the hold's currency when it does not exist yet (not at all when
   * the chart would give it another currency: a shortfall to it is then refused).
   */
  shortfallAccount?: string;
  kind?: string;
  description?: string;
  metadata?: Record<string, unknown>;
  /** Rows to commit with the posting (see Attachment); not written on a replay. */
  attach?: (outcome: Omit<PostHoldResult, 'replayed'>) => Attachment[];
}

export interface PostHoldResult {
  holdId: string;
  /** The entry that moved the money; null when the posted amount was zero. */
  entryId: string | null;
  postedAmount: Decimal;
  /** The part of the amount the debit account could not cover (booked to shortfallAccount). */
  shortfall: Decimal;
  /** True when the hold had already been posted for this amount. */
  replayed: boolean;
}

/**
 * Settles a hold for the actual amount: posts it from the debit to the credit account and
 * releases the rest of the hold. Posting the same hold again for the same amount returns the
 * first result; any other second resolution is a HoldNotPendingError.
 */
export async function preparePostHold(
  context: PrepareContext,
  params: PostHoldParameters,
): Promise<PreparedCommand<PostHoldResult>> {
  const amount = parseAmount(params.amount, { scale: 36, allowZero: true });
  const kind = params.kind ?? 'hold.post';
  checkKind(kind);
  checkCommandInput({ metadata: params.metadata, description: params.description });
  if (params.allowOverHold && !params.shortfallAccount) {
    throw new InvalidAmountError('shortfallAccount', 'is required with allowOverHold');
  }
  const shortfallAccount =
    params.allowOverHold && params.shortfallAccount
      ? await resolveShortfallAccount(context, params.shortfallAccount, params.holdId)
      : null;
  return {
    type: 'postHold',
    idempotencyKey: null,
    // Posting a hold is idempotent by the hold itself (a repeat replays), so it needs no key.
    requestHash: null,
    accountIds: shortfallAccount?.id ? [shortfallAccount.id] : [],
    holdIds: [params.holdId],
    reverseEntryIds: [],
    plan({ state }) {
      const hold = state.holds.get(params.holdId);
      if (!hold) throw new HoldNotFoundError(params.holdId);
      if (hold.status === 'posted' && hold.postedAmount?.eq(amount)) {
        return {
          holdId: hold.id,
          entryId: hold.entryId,
          postedAmount: hold.postedAmount,
          shortfall: hold.shortfall ?? ZERO,
          replayed: true,
        };
      }
      if (hold.status !== 'pending') throw new HoldNotPendingError(hold.id, hold.status);
      if (hold.overdue) throw new HoldNotPendingError(hold.id, 'expired');
      const scale = context.scaleOf(hold.currency);
      if (amount.decimalPlaces() > scale) {
        throw new InvalidAmountError(
          'amount',
          `has ${amount.decimalPlaces()} fractional digits; ${hold.currency} allows at most ${scale}`,
        );
      }
      if (amount.gt(hold.amount) && !params.allowOverHold) {
        throw new HoldExceededError(hold.id, hold.amount.toString(), amount.toString());
      }
      const debit = state.account(hold.debitAccountId);
      let covered = amount;
      if (amount.gt(hold.amount) && debit.noNegative) {
        const canCover = Decimal.max(available(debit).add(hold.amount), ZERO);
        covered = Decimal.min(amount, canCover);
      }
      const shortfall = amount.sub(covered);
      if (!shortfall.isZero()) state.decidedOnTotals = true;
      const postings: Array<{ accountId: string; amount: Decimal }> = [];
      if (!covered.isZero()) postings.push({ accountId: hold.debitAccountId, amount: covered });
      if (!shortfall.isZero()) {
        if (!shortfallAccount)
          throw new InvalidAmountError('shortfallAccount', 'is required with allowOverHold');
        if (shortfallAccount.id === null || shortfallAccount.currency !== hold.currency) {
          throw new CurrencyMismatchError(
            params.shortfallAccount!,
            shortfallAccount.currency,
            hold.currency,
          );
        }
        postings.push({ accountId: shortfallAccount.id, amount: shortfall });
      }
      if (!amount.isZero())
        postings.push({ accountId: hold.creditAccountId, amount: amount.neg() });
      const { entryId } = state.apply({
        pending: [
          { accountId: hold.debitAccountId, debits: hold.amount.neg(), credits: ZERO },
          { accountId: hold.creditAccountId, debits: ZERO, credits: hold.amount.neg() },
        ],
        ...(amount.isZero()
          ? {}
          : {
              entry: {
                kind,
                description: params.description ?? '',
                metadata: { ...hold.metadata, ...params.metadata },
                reversesEntryId: null,
                holdId: hold.id,
                effectiveAt: null,
                postings,
              },
            }),
        resolveHold: { id: hold.id, status: 'posted', postedAmount: amount, shortfall },
      });
      const outcome = { holdId: hold.id, entryId, postedAmount: amount, shortfall };
      if (params.attach) state.attachments.push(...params.attach(outcome));
      return { ...outcome, replayed: false };
    },
    encode: (result) => result,
    replay: (stored) => stored as PostHoldResult,
  };
}

/**
 * The account a shortfall of the hold is booked to: as this process knows it (no round trip:
 * the gateway's every call), else as the database has it, else created in the hold's currency.
 * One the chart would create in another currency is not created (id null, the currency it would
 * have): a shortfall to it is refused, a posting without one goes through, and nothing is left
 * in the chart. Null when neither the account nor the hold exists (the plan refuses the hold).
 */
async function resolveShortfallAccount(
  context: PrepareContext,
  code: string,
  holdId: string,
): Promise<{ id: string | null; currency: string } | null> {
  const known = context.knownAccount(code);
  if (known) return known;
  const currency = await context.holdCurrency(holdId);
  if (currency === null) return null;
  try {
    return await context.resolveAccount(code, { create: true, currency, strictCurrency: true });
  } catch (error) {
    if (!(error instanceof CurrencyMismatchError)) throw error;
    return { id: null, currency: String(error.details['accountCurrency']) };
  }
}
