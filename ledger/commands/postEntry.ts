import { hashRequest, type PrepareContext, type PreparedCommand } from '../command.js';
import { CurrencyMismatchError, InvalidEntryError } from '../errors.js';
import { parseAmount, type Decimal } from '../money.js';
import type { PostingInput } from '../types.js';

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
}

export interface PostEntryResult {
  entryId: string;
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
  const key = params.idempotencyKey ?? null;
  const guarded = postings.find((p) => p.noNegative);
  const requestHash = key
    ? hashRequest('postEntry', {
        postings: postings.map((p) => ({ account: p.account, amount: p.amount })),
        kind: params.kind,
        description: params.description ?? '',
        metadata: params.metadata ?? {},
        effectiveAt: params.effectiveAt,
      })
    : null;
  return {
    type: 'postEntry',
    ...(guarded ? { partitionKey: guarded.accountId } : {}),
    idempotencyKey: key,
    requestHash,
    accountIds: postings.map((p) => p.accountId),
    holdIds: [],
    reverseEntryIds: [],
    plan({ state }) {
      const { entryId } = state.apply({
        entry: {
          kind: params.kind,
          description: params.description ?? '',
          metadata: params.metadata ?? {},
          reversesEntryId: null,
          holdId: null,
          effectiveAt: params.effectiveAt ?? null,
          postings: postings.map((p) => ({ accountId: p.accountId, amount: p.amount })),
        },
      });
      return { entryId: entryId!, replayed: false };
    },
    encode: (result) => ({ entryId: result.entryId }),
    replay: (stored) => ({ entryId: (stored as { entryId: string }).entryId, replayed: true }),
  };
}

export function checkKind(kind: unknown): void {
  if (typeof kind !== 'string' || !/^[a-z][a-z0-9_.-]{0,63}$/.test(kind)) {
    throw new InvalidEntryError('kind must be a short lower-case word such as "deposit"', {
      param: 'kind',
    });
  }
}
