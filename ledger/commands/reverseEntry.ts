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
   * account cannot cover is booked instead (a customer who spent a deposit that was then
   * reorged away: `{"liabilities:customers:42": "assets:receivables:customers:42"}`).
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
      /** What earlier lines of this reversal already take from each account. */
      const taken = new Map<string, Decimal>();
      for (const original of target.postings) {
        const mirrored = original.amount.neg();
        const account = state.account(original.accountId);
        const reducesBalance =
          normalSide(account.type) === 'credit' ? mirrored.isPositive() : mirrored.isNegative();
        const shortfallAccount = shortfallAccounts.get(account.id);
        if (account.noNegative && reducesBalance && shortfallAccount) {
          const already = taken.get(account.id) ?? ZERO;
          const canCover = Decimal.max(available(account).sub(already), ZERO);
          const wanted = mirrored.abs();
          taken.set(account.id, already.add(Decimal.min(wanted, canCover)));
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
