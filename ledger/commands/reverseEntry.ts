import { hashRequest, type PrepareContext, type PreparedCommand } from '../command.js';
import { AlreadyReversedError, CurrencyMismatchError, EntryNotFoundError } from '../errors.js';
import { Decimal, ZERO } from '../money.js';
import { checkCommandInput } from '../input.js';
import { available } from '../state.js';
import { normalSide } from '../types.js';
import { checkKind } from './postEntry.js';

export interface ReverseEntryParameters {
  entryId: string;
  kind?: string;
  description?: string;
  metadata?: Record<string, unknown>;
  /**
   * Per no-overdraft account of the original entry, where the part of the reversal that
   * account cannot cover (net of what the reversal's other lines give back to it) is booked
   * instead (a customer who spent a deposit that was then reorged away:
   * `{"liabilities:customers:42": "assets:receivables:customers:42"}`).
   * Without it such a reversal is refused with InsufficientFundsError.
   */
  shortfallAccounts?: Record<string, string>;
  idempotencyKey?: string;
}

export interface ReverseEntryResult {
  entryId: string;
  reversedEntryId: string;
  /** Amounts booked to shortfall accounts, by account code. */
  shortfalls: Record<string, string>;
  replayed: boolean;
}

/**
 * Records a new entry that mirrors an earlier one, linked to it. Nothing is edited; an
 * entry is reversed at most once (the database refuses a second reversal).
 */
export async function prepareReverseEntry(
  context: PrepareContext,
  params: ReverseEntryParameters,
): Promise<PreparedCommand<ReverseEntryResult>> {
  const kind = params.kind ?? 'reversal';
  checkKind(kind);
  checkCommandInput({
    metadata: params.metadata,
    description: params.description,
    idempotencyKey: params.idempotencyKey,
  });
  const shortfallAccounts = new Map<string, { id: string; code: string; currency: string }>();
  for (const [from, to] of Object.entries(params.shortfallAccounts ?? {})) {
    const source = await context.resolveAccount(from, { create: false });
    const target = await context.resolveAccount(to, { create: true, currency: source.currency });
    if (target.currency !== source.currency)
      throw new CurrencyMismatchError(target.code, target.currency, source.currency);
    shortfallAccounts.set(source.id, target);
  }
  const key = params.idempotencyKey ?? null;
  return {
    type: 'reverseEntry',
    idempotencyKey: key,
    requestHash: key ? hashRequest('reverseEntry', { ...params, idempotencyKey: undefined }) : null,
    accountIds: [...shortfallAccounts.values()].map((a) => a.id),
    holdIds: [],
    reverseEntryIds: [params.entryId],
    plan({ state, reversals }) {
      const target = reversals.get(params.entryId);
      if (!target) throw new EntryNotFoundError(params.entryId);
      if (target.reversedBy) throw new AlreadyReversedError(target.entryId, target.reversedBy);
      const postings: Array<{ accountId: string; amount: Decimal }> = [];
      const shortfalls = new Map<string, Decimal>();
      const reduces = (accountId: string, mirrored: Decimal) =>
        normalSide(state.account(accountId).type) === 'credit'
          ? mirrored.isPositive()
          : mirrored.isNegative();
      /**
       * What each account with a shortfall account can give to this reversal's lines that
       * lower it: its available balance, plus what the reversal's other lines add to it (an
       * entry that both debited and credited the account). Only the net is short.
       */
      const budget = new Map<string, Decimal>();
      for (const accountId of shortfallAccounts.keys())
        budget.set(accountId, Decimal.max(available(state.account(accountId)), ZERO));
      for (const original of target.postings) {
        const mirrored = original.amount.neg();
        const before = budget.get(original.accountId);
        if (before && !reduces(original.accountId, mirrored))
          budget.set(original.accountId, before.add(mirrored.abs()));
      }
      for (const original of target.postings) {
        const mirrored = original.amount.neg();
        const account = state.account(original.accountId);
        const reducesBalance = reduces(account.id, mirrored);
        const shortfallAccount = shortfallAccounts.get(account.id);
        if (account.noNegative && reducesBalance && shortfallAccount) {
          const canCover = budget.get(account.id)!;
          const wanted = mirrored.abs();
          budget.set(account.id, canCover.sub(Decimal.min(wanted, canCover)));
          if (wanted.gt(canCover)) {
            state.decidedOnTotals = true;
            const sign = mirrored.isNegative() ? -1 : 1;
            const short = wanted.sub(canCover);
            if (!canCover.isZero())
              postings.push({ accountId: account.id, amount: canCover.mul(sign) });
            postings.push({ accountId: shortfallAccount.id, amount: short.mul(sign) });
            shortfalls.set(
              shortfallAccount.code,
              (shortfalls.get(shortfallAccount.code) ?? ZERO).add(short),
            );
            continue;
          }
        }
        postings.push({ accountId: original.accountId, amount: mirrored });
      }
      const { entryId } = state.apply({
        entry: {
          kind,
          description: params.description ?? `reversal of ${target.entryId}`,
          metadata: params.metadata ?? {},
          reversesEntryId: target.entryId,
          holdId: null,
          effectiveAt: null,
          postings,
        },
      });
      target.reversedBy = entryId;
      return {
        entryId: entryId!,
        reversedEntryId: target.entryId,
        shortfalls: Object.fromEntries(
          [...shortfalls].map(([code, short]) => [code, short.toString()]),
        ),
        replayed: false,
      };
    },
    encode: ({ replayed: _replayed, ...result }) => result,
    replay: (stored) => ({ ...(stored as Omit<ReverseEntryResult, 'replayed'>), replayed: true }),
  };
}
