import { hashRequest, type PrepareContext, type PreparedCommand } from '../command.js';
import { CurrencyMismatchError, InvalidEntryError } from '../errors.js';
import { Decimal, parseAmount, ZERO, type AmountInput } from '../money.js';
import { checkCommandInput } from '../input.js';
import { available } from '../state.js';
import { normalSide, type PostingInput } from '../types.js';

export interface PostEntryParameters {
  /** Two or more postings; per currency, debits (positive) equal credits (negative). */
  postings: PostingInput[];
  /** What kind of event this records: `deposit`, `usage`, `adjustment`, ... */
  kind: string;
  description?: string;
  metadata?: Record<string, unknown>;
  /** Business time of the event (a block's time, say); defaults to the commit time. */
  effectiveAt?: Date;
  /** A repeated key with the same request returns the first result and writes nothing. */
  idempotencyKey?: string;
  /** Create accounts the chart allows when they do not exist yet (default true). */
  createAccounts?: boolean;
  /**
   * Repays a receivable out of the credit this entry posts to `from` (a deposit re-credited
   * after its reversal booked the part the customer had spent to their receivable): up to
   * `amountMax` of that credit goes to `receivable` instead, never more than the receivable's
   * debit balance when the entry is planned nor more than the credit. Decided on the database's
   * totals (in a caller's transaction, under its locks). The entry's metadata records it as
   * `receivableRepaid: {account, amount, amountMax}`; `from`'s posting keeps the rest (none
   * when all of it repaid the receivable).
   */
  repayReceivable?: { from: string; receivable: string; amountMax: AmountInput };
}

export interface PostEntryResult {
  entryId: string;
  /** With `repayReceivable`: what the entry credited to the receivable ("0" when nothing). */
  receivableRepaid?: string;
  /** True when the idempotency key had already recorded this entry. */
  replayed: boolean;
}

export const MAX_POSTINGS = 100;

/**
 * Records a balanced journal entry.
 *
 * @example
 * await ledger.postEntry({ kind: 'adjustment', postings: [
 *   { account: 'expenses:promotions', amount: '5' },
 *   { account: 'liabilities:customers:42', amount: '-5' },
 * ] })
 */
export async function preparePostEntry(
  context: PrepareContext,
  params: PostEntryParameters,
): Promise<PreparedCommand<PostEntryResult>> {
  if (!Array.isArray(params.postings) || params.postings.length < 2) {
    throw new InvalidEntryError('an entry needs at least two postings', { param: 'postings' });
  }
  if (params.postings.length > MAX_POSTINGS) {
    throw new InvalidEntryError(`an entry has at most ${MAX_POSTINGS} postings`, {
      param: 'postings',
    });
  }
  checkKind(params.kind);
  checkCommandInput({
    metadata: params.metadata,
    description: params.description,
    idempotencyKey: params.idempotencyKey,
    dates: { effectiveAt: params.effectiveAt },
  });
  const postings: Array<{
    accountId: string;
    account: string;
    currency: string;
    amount: Decimal;
    noNegative: boolean;
  }> = [];
  for (const [i, posting] of params.postings.entries()) {
    const account = await context.resolveAccount(posting.account, {
      ...(posting.currency ? { currency: posting.currency } : {}),
      create: params.createAccounts ?? true,
    });
    if (posting.currency && posting.currency !== account.currency) {
      throw new CurrencyMismatchError(account.code, account.currency, posting.currency);
    }
    const amount = parseAmount(posting.amount, {
      scale: context.scaleOf(account.currency),
      currency: account.currency,
      field: `postings[${i}].amount`,
      allowNegative: true,
    });
    postings.push({
      accountId: account.id,
      account: account.code,
      currency: account.currency,
      amount,
      noNegative: account.noNegative,
    });
  }
  const repay = params.repayReceivable
    ? await prepareRepayment(context, params.repayReceivable, postings)
    : null;
  const key = params.idempotencyKey ?? null;
  const guarded = postings.find((p) => p.noNegative);
  const requestHash = key
    ? hashRequest('postEntry', {
        postings: postings.map((p) => ({ account: p.account, amount: p.amount })),
        kind: params.kind,
        description: params.description ?? '',
        metadata: params.metadata ?? {},
        effectiveAt: params.effectiveAt,
        ...(repay
          ? {
              repayReceivable: {
                from: params.repayReceivable!.from,
                receivable: repay.receivable.code,
                amountMax: repay.amountMax,
              },
            }
          : {}),
      })
    : null;
  return {
    type: 'postEntry',
    ...(guarded ? { partitionKey: guarded.accountId } : {}),
    idempotencyKey: key,
    requestHash,
    accountIds: [...postings.map((p) => p.accountId), ...(repay ? [repay.receivable.id] : [])],
    holdIds: [],
    reverseEntryIds: [],
    plan({ state }) {
      let lines = postings.map((p) => ({ accountId: p.accountId, amount: p.amount }));
      let metadata = params.metadata ?? {};
      let repaid: Decimal | null = null;
      if (repay) {
        // How much is repaid depends on the receivable's balance now: never on remembered totals.
        state.decidedOnTotals = true;
        const owed = Decimal.max(available(state.account(repay.receivable.id)), ZERO);
        const credit = postings[repay.fromIndex]!.amount.neg();
        repaid = Decimal.min(repay.amountMax, owed, credit);
        lines = lines.flatMap((line, i) => {
          if (i !== repay.fromIndex || repaid!.isZero()) return [line];
          const rest = line.amount.add(repaid!);
          return [
            ...(rest.isZero() ? [] : [{ accountId: line.accountId, amount: rest }]),
            { accountId: repay.receivable.id, amount: repaid!.neg() },
          ];
        });
        metadata = {
          ...metadata,
          receivableRepaid: {
            account: repay.receivable.code,
            amount: repaid.toString(),
            amountMax: repay.amountMax.toString(),
          },
        };
      }
      const { entryId } = state.apply({
        entry: {
          kind: params.kind,
          description: params.description ?? '',
          metadata,
          reversesEntryId: null,
          holdId: null,
          effectiveAt: params.effectiveAt ?? null,
          postings: lines,
        },
      });
      return {
        entryId: entryId!,
        ...(repaid ? { receivableRepaid: repaid.toString() } : {}),
        replayed: false,
      };
    },
    encode: ({ replayed: _replayed, ...result }) => result,
    replay: (stored) => ({
      ...(stored as Omit<PostEntryResult, 'replayed'>),
      replayed: true,
    }),
  };
}

/** Checks `repayReceivable` against the entry's postings: one credit to `from`, a debit-side receivable. */
async function prepareRepayment(
  context: PrepareContext,
  params: NonNullable<PostEntryParameters['repayReceivable']>,
  postings: ReadonlyArray<{ account: string; currency: string; amount: Decimal }>,
): Promise<{ receivable: { id: string; code: string }; amountMax: Decimal; fromIndex: number }> {
  const fromIndex = postings.findIndex((p) => p.account === params.from);
  const from = postings[fromIndex];
  if (
    !from ||
    !from.amount.isNegative() ||
    postings.filter((p) => p.account === params.from).length > 1
  )
    throw new InvalidEntryError(
      'repayReceivable.from must name the one account the entry credits',
      {
        param: 'repayReceivable.from',
      },
    );
  const receivable = await context.resolveAccount(params.receivable, {
    create: true,
    currency: from.currency,
  });
  if (receivable.currency !== from.currency)
    throw new CurrencyMismatchError(receivable.code, receivable.currency, from.currency);
  if (
    normalSide(receivable.type) !== 'debit' ||
    postings.some((p) => p.account === receivable.code)
  )
    throw new InvalidEntryError(
      'repayReceivable.receivable must be an asset account the entry does not post to',
      { param: 'repayReceivable.receivable' },
    );
  const amountMax = parseAmount(params.amountMax, {
    scale: context.scaleOf(from.currency),
    currency: from.currency,
    field: 'repayReceivable.amountMax',
    allowZero: true,
  });
  return { receivable, amountMax, fromIndex };
}

export function checkKind(kind: unknown): void {
  if (typeof kind !== 'string' || !/^[a-z][a-z0-9_.-]{0,63}$/.test(kind)) {
    throw new InvalidEntryError('kind must be a short lower-case word such as "deposit"', {
      param: 'kind',
    });
  }
}
